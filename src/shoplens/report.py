"""``shoplens report``: one self-contained HTML file (charts as inline SVG, no scripts,
no network) about the current snapshot: segments, the RFM grid, predicted value and
churn, ratings by category, what customers praise and complain about per aspect (from
the text step), with PII-masked evidence quotes, and the topics they write about.
"""

from __future__ import annotations

import html
import io
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

from shoplens.store import Store

CSS = """
body{font-family:system-ui,'Noto Sans CJK SC','WenQuanYi Micro Hei',sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:1.5rem}.chart svg{width:100%;height:auto}
table{border-collapse:collapse;font-size:.9rem}td,th{border-bottom:1px solid #eee;padding:.3rem .6rem;text-align:left}
blockquote{margin:.4rem 0;padding:.3rem .8rem;border-left:3px solid #c33;background:#fafafa;font-size:.9rem}
.note{color:#666;font-size:.85rem}
"""


def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    with warnings.catch_warnings():  # CJK glyphs: text stays text, the browser draws it
        warnings.filterwarnings("ignore", message="Glyph .* missing from font", category=UserWarning)
        fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _figure(width: float = 6, height: float = 3.4) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"  # text stays text: the browser renders Chinese with its own fonts
    plt.rcParams["font.family"] = ["sans-serif"]
    plt.rcParams["font.sans-serif"] = ["Noto Sans CJK SC", "WenQuanYi Micro Hei", "DejaVu Sans"]
    return plt.subplots(figsize=(width, height))


def _charts(store: Store, s: str) -> dict[str, str]:
    import numpy as np

    charts: dict[str, str] = {}
    seg = store.con.execute(
        f"SELECT rfm_segment_zh || ' ' || rfm_segment, count(*) FROM {s}.customer_features GROUP BY 1 ORDER BY 2").fetchall()
    fig, ax = _figure(6, 4)
    ax.barh([r[0] for r in seg], [r[1] for r in seg], color="#3a7bd5")
    ax.set_xlabel("customers")
    ax.set_title("RFM segments")
    charts["segments"] = _svg(fig)

    grid = np.zeros((5, 5))
    for r, f, n in store.con.execute(
            f"SELECT r_score, f_score, count(*) FROM {s}.customer_features WHERE r_score IS NOT NULL GROUP BY 1, 2").fetchall():
        grid[5 - int(r), int(f) - 1] = n
    fig, ax = _figure(4.5, 4)
    im = ax.imshow(grid, cmap="Blues")
    ax.set_xticks(range(5), [str(i) for i in range(1, 6)])
    ax.set_yticks(range(5), [str(i) for i in range(5, 0, -1)])
    ax.set_xlabel("F score")
    ax.set_ylabel("R score")
    for i in range(5):
        for j in range(5):
            ax.text(j, i, f"{int(grid[i, j])}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title("RFM grid (customers)")
    charts["rfm_grid"] = _svg(fig)

    clv = [r[0] for r in store.con.execute(f"SELECT clv FROM {s}.customer_predictions WHERE clv > 0").fetchall()]
    churn = [r[0] for r in store.con.execute(f"SELECT churn_risk FROM {s}.customer_predictions WHERE churn_risk IS NOT NULL").fetchall()]
    fig, ax = _figure()
    if clv:
        ax.hist(np.log10(clv), bins=30, color="#2a9d8f")
        ax.set_xlabel("log10 CLV (12 months, base currency)")
    ax.set_ylabel("customers")
    ax.set_title("Predicted customer lifetime value")
    charts["clv"] = _svg(fig)
    fig, ax = _figure()
    if churn:
        ax.hist(churn, bins=20, range=(0, 1), color="#e76f51")
    ax.set_xlabel("churn risk (no purchase in the horizon)")
    ax.set_title("Churn risk")
    charts["churn"] = _svg(fig)

    # ratings are an aggregate: with [consent] without_profiling = "aggregate" they count
    # customers who are not profiled too; by default only profiled customers count
    everyone = store.scalar("SELECT value FROM store_meta WHERE key = 'consent_without_profiling'") == "aggregate"
    cats = store.con.execute(
        "SELECT regexp_extract(p.category, '^([^/>]+)', 1) AS cat, avg(t.rating), count(*) FROM texts t "
        f"JOIN products p USING (product_id) WHERE t.rating IS NOT NULL {'' if everyone else _PROFILED.format(s=s)} "
        "GROUP BY 1 ORDER BY 2").fetchall()
    fig, ax = _figure()
    if cats:
        ax.barh([f"{c} ({n})" for c, _r, n in cats], [r for _c, r, _n in cats], color="#8d6cab")
        ax.set_xlim(1, 5)
    ax.set_xlabel("mean star rating (number of reviews)")
    ax.set_title("Ratings by category")
    charts["ratings"] = _svg(fig)

    asp = store.con.execute(
        f"SELECT aspect, count(*) FILTER (WHERE polarity = 'positive'), count(*) FILTER (WHERE polarity = 'negative') "
        f"FROM {s}.text_aspects GROUP BY 1 ORDER BY count(*)").fetchall()
    fig, ax = _figure()
    if asp:
        names = [a for a, _p, _n in asp]
        ax.barh(names, [p for _a, p, _n in asp], color="#2a9d8f", label="positive")
        ax.barh(names, [-n for _a, _p, n in asp], color="#e76f51", label="negative")
        ax.axvline(0, color="#444", linewidth=0.8)
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("mentions: negative <- | -> positive")
    ax.set_title("Aspect sentiment in customers' texts")
    charts["aspects"] = _svg(fig)
    return charts


# the customers of a snapshot (those with profiling consent): quotes are never anyone else's
_PROFILED = "AND t.customer_id IN (SELECT customer_id FROM {s}.customers)"


def _totals(store: Store, s: str) -> str:
    """Shop totals: customers, buyers, paid orders and revenue. Customers without profiling
    consent count here only with ``without_profiling = "aggregate"``, never by name."""
    everyone = store.scalar("SELECT value FROM store_meta WHERE key = 'consent_without_profiling'") == "aggregate"
    who = "" if everyone else f"WHERE customer_id IN (SELECT customer_id FROM {s}.customers)"
    n, = store.one(f"SELECT count(*) FROM customers {who}") or (0,)
    buyers, orders, revenue = store.one(
        f"SELECT count(DISTINCT customer_id), count(*), coalesce(sum(amount), 0) FROM orders {who or 'WHERE true'} "
        "AND status = 'paid'") or (0, 0, 0)
    out = (f"Shop totals 店铺汇总: {n:,} customers, {buyers:,} buyers, {orders:,} paid orders, revenue {float(revenue):,.0f}")
    missing = int(store.scalar("SELECT count(*) FROM customers")) - int(store.scalar(f"SELECT count(*) FROM {s}.customers"))
    if missing:
        out += (f"; {missing:,} customers without profiling consent are "
                + ("counted in these totals only, never profiled" if everyone else "not counted or profiled")
                + f" / {missing:,} 位未授权画像的客户" + ("仅计入汇总" if everyone else "不计入也不画像"))
    return out + "."


def _insight_section(store: Store, s: str) -> str:
    """Fix first and complaint spikes (docs/insight.md); empty before the insight stage."""
    snap = int(s.removeprefix("snap_"))
    if not store.has_snapshot_table(snap, "aspect_insight"):
        return ""
    e = html.escape
    fix = store.con.execute(
        f"SELECT fix_rank, name, key, aspect, negative_share, ci_low, ci_high, category_negative_share, return_rate, "
        f"category_return_rate, revenue_at_risk FROM {s}.aspect_insight WHERE fix_rank IS NOT NULL ORDER BY fix_rank LIMIT 10"
    ).fetchall()

    def pct(v: float | None) -> str:
        return "" if v is None else f"{v:.0%}"

    fix_rows = "".join(
        f"<tr><td>{rank}</td><td>{e(str(name))} ({e(key)})</td><td>{e(aspect)}</td><td>{pct(neg)} ({pct(lo)}-{pct(hi)})</td>"
        f"<td>{pct(cat)}</td><td>{pct(ret)} ({pct(cret)})</td><td>¥{risk:,.0f}</td></tr>"
        for rank, name, key, aspect, neg, lo, hi, cat, ret, cret, risk in fix)
    spikes = store.con.execute(
        f"SELECT strftime(week, '%Y-%m-%d'), name, product_id, aspect, complaints, texts, baseline_share, q_value "
        f"FROM {s}.aspect_alerts ORDER BY week DESC, q_value LIMIT 10").fetchall()
    spike_rows = "".join(
        f"<tr><td>{week}</td><td>{e(str(name))} ({e(pid)})</td><td>{e(aspect)}</td><td>{k} / {n}</td><td>{pct(base)}</td>"
        f"<td>{q:.2g}</td></tr>" for week, name, pid, aspect, k, n, base, q in spikes)
    return f"""<h2>What to fix first 优先改进</h2>
<p class="note">Products x aspects ranked by revenue at risk in the last period: revenue times the excess of the
negative share over the category's other products (when its 95% interval's lower bound is above it) plus the excess
return rate. Rows with fewer than the configured number of customers are never shown.</p>
<table><tr><th>#</th><th>product</th><th>aspect</th><th>negative (95% CI)</th><th>category</th><th>returns (category)</th>
<th>revenue at risk</th></tr>{fix_rows}</table>
<h3>Complaint spikes 投诉激增</h3>
<table><tr><th>week</th><th>product</th><th>aspect</th><th>complaints / reviews</th><th>baseline</th><th>q</th></tr>{spike_rows}</table>"""


def build_report(store: Store, out: Path) -> Path:
    """Write the report for the current snapshot to ``out`` and return the path."""
    snap = store.require_snapshot()
    s = f"snap_{snap}"
    meta = store.record("SELECT as_of, finished_at, n_customers FROM snapshots WHERE snapshot_id = ?", [snap])
    totals = _totals(store, s)
    charts = _charts(store, s)
    segs = store.con.execute(
        f"SELECT f.rfm_segment, any_value(f.rfm_segment_zh), count(*), avg(f.total_spend), avg(p.clv), avg(p.churn_risk) "
        f"FROM {s}.customer_features f LEFT JOIN {s}.customer_predictions p USING (customer_id) GROUP BY 1 ORDER BY 3 DESC"
    ).fetchall()
    complaints = store.con.execute(
        "SELECT cat, text, rating FROM (SELECT regexp_extract(p.category, '^([^/>]+)', 1) AS cat, t.text, t.rating, "
        "row_number() OVER (PARTITION BY regexp_extract(p.category, '^([^/>]+)', 1) ORDER BY t.rating, length(t.text) DESC, t.text_id) AS k "
        f"FROM texts t JOIN products p USING (product_id) WHERE t.rating <= 2 {_PROFILED.format(s=s)}) "
        "WHERE k <= 2 ORDER BY cat, k"
    ).fetchall()
    aspect_quotes = store.con.execute(
        f"SELECT aspect, evidence FROM (SELECT aspect, evidence, row_number() OVER (PARTITION BY aspect "
        f"ORDER BY score, length(evidence) DESC, evidence) AS k FROM (SELECT aspect, evidence, min(score) AS score "
        f"FROM {s}.text_aspects WHERE polarity = 'negative' GROUP BY ALL)) WHERE k <= 2 ORDER BY aspect, k").fetchall()
    topics = store.con.execute(f"SELECT topic_id, size, label FROM {s}.text_topics ORDER BY size DESC LIMIT 8").fetchall()
    personas = store.con.execute(
        f"SELECT segment_id, name, size, share, persona, source FROM {s}.segments ORDER BY size DESC").fetchall()
    e = html.escape
    persona_rows = "".join(
        f"<tr><td>{sid}</td><td>{e(name)}</td><td>{size:,} ({share:.0%})</td><td>{e(text)}</td><td>{e(src)}</td></tr>"
        for sid, name, size, share, text, src in personas
    )
    rows = "".join(
        f"<tr><td>{e(str(zh))} {e(str(en))}</td><td>{n:,}</td><td>{spend:,.0f}</td>"
        f"<td>{'' if clv is None else f'{clv:,.0f}'}</td><td>{'' if churn is None else f'{churn:.0%}'}</td></tr>"
        for en, zh, n, spend, clv, churn in segs
    )
    quotes = ""
    last = None
    for cat, text, rating in complaints:
        if cat != last:
            quotes += f"<h3>{e(str(cat))}</h3>"
            last = cat
        quotes += f"<blockquote>{'★' * int(rating)} {e(text[:300])}</blockquote>"
    evidence = ""
    last = None
    for aspect, text in aspect_quotes:
        if aspect != last:
            evidence += f"<h3>{e(str(aspect))}</h3>"
            last = aspect
        evidence += f"<blockquote>{e(text[:200])}</blockquote>"
    topic_rows = "".join(f"<tr><td>{t}</td><td>{n:,}</td><td>{e(label)}</td></tr>" for t, n, label in topics)
    insight = _insight_section(store, s)
    page = f"""<!doctype html>
<html lang="zh"><head><meta charset="utf-8"><title>ShopLens report</title><style>{CSS}</style></head>
<body>
<h1>ShopLens · 客户洞察报告</h1>
<p>Snapshot {snap}, data as of {meta.get('as_of')}, {meta.get('n_customers', 0):,} customers. Generated {datetime.now():%Y-%m-%d %H:%M}.</p>
<p>{e(totals)}</p>
<h2>Segments 客户细分</h2>
<div class="grid"><div class="chart">{charts['segments']}</div><div class="chart">{charts['rfm_grid']}</div></div>
<table><tr><th>segment</th><th>customers</th><th>mean spend</th><th>mean CLV (12 m)</th><th>mean churn risk</th></tr>{rows}</table>
<h2>Segments and personas 群体画像</h2>
<table><tr><th>id</th><th>name</th><th>customers</th><th>persona</th><th>written by</th></tr>{persona_rows}</table>
<h2>Value and churn 价值与流失</h2>
<div class="grid"><div class="chart">{charts['clv']}</div><div class="chart">{charts['churn']}</div></div>
<h2>What customers say 客户评价</h2>
<p class="note">Quotes are PII-masked. Aspects and their polarity come from the text step (lexicon per clause,
sentiment of the clause); the evidence is the clause that was scored.</p>
<div class="grid"><div class="chart">{charts['aspects']}</div><div><b>Complaints by aspect</b>{evidence}</div></div>
<div class="grid"><div class="chart">{charts['ratings']}</div><div><b>Lowest-rated reviews by category</b>{quotes}</div></div>
<h3>Topics 话题</h3>
<table><tr><th>topic</th><th>texts</th><th>top terms (c-TF-IDF)</th></tr>{topic_rows}</table>
{insight}
</body></html>"""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
