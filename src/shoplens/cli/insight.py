"""``shoplens insight products|aspects|alerts|segments|demand`` (read from the published
serving file) and ``shoplens evaluate insight`` (planted complaint spikes over several
seeds, demand backtests on the demo and CDNOW)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from shoplens.cli._common import (
    DEFAULT_CONFIG,
    ConfigOpt,
    _load,
    app,
    console,
    err_console,
    evaluate_app,
    print_wide,
)

insight_app = typer.Typer(help="Product and service insight from reviews and orders (docs/insight.md).",
                          no_args_is_help=True)
app.add_typer(insight_app, name="insight")
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _db(config: Any) -> Any:
    from shoplens.serving.reader import ProfileReader

    return ProfileReader(_load(config).store_path).db()


def _pct(v: Any) -> str:
    return "-" if v is None else f"{v:.0%}"


@insight_app.command("products")
def insight_products(
    config: ConfigOpt = DEFAULT_CONFIG,
    category: Annotated[str | None, typer.Option(help="Only this category (and those under it).")] = None,
    aspect: Annotated[str | None, typer.Option(help="Only this aspect (quality, logistics, ...).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    as_json: JsonOpt = False,
) -> None:
    """What to fix first: products x aspects ranked by revenue at risk, with the
    complaint groups behind each."""
    from shoplens.serving import insight

    rows = insight.fix_first(_db(config), category, aspect, limit)
    if as_json:
        print(json.dumps({"products": rows}, ensure_ascii=False, indent=2))
        return
    t = Table(title="先改什么 fix first (revenue at risk, last period)")
    for col in ("#", "product", "aspect", "negative (95% CI)", "category", "returns (cat.)", "revenue at risk",
                "complaints"):
        t.add_column(col)
    for r in rows:
        groups = "\n".join(f"{g['customers']}x " + (f"{g['label']}: " if g["label"] else "") + str(g["quote"])
                           for g in r["complaints"])
        t.add_row(str(r["fix_rank"]), escape(f"{r['name']} ({r['key']})"), r["aspect"],
                  f"{_pct(r['negative_share'])} ({_pct(r['ci_low'])}-{_pct(r['ci_high'])}), {r['customers']} cust.",
                  _pct(r["category_negative_share"]), f"{_pct(r['return_rate'])} ({_pct(r['category_return_rate'])})",
                  f"{r['revenue_at_risk']:,.0f}", escape(groups))
    print_wide(t)
    if not rows:
        console.print("nothing stands out: no product's complaints or returns exceed its category's with enough evidence")


@insight_app.command("aspects")
def insight_aspects(
    config: ConfigOpt = DEFAULT_CONFIG,
    level: Annotated[str, typer.Option(help="product, category or brand.")] = "category",
    key: Annotated[str | None, typer.Option(help="One product id, category or brand.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 200,
    as_json: JsonOpt = False,
) -> None:
    """Mentions, customers and the negative share (with its interval and change) per
    aspect; figures under the evidence threshold are not shown."""
    from shoplens.serving import insight

    rows = insight.aspect_figures(_db(config), level, key, limit)
    if as_json:
        print(json.dumps({"aspects": rows}, ensure_ascii=False, indent=2))
        return
    t = Table(title=f"aspects by {level}")
    for col in (level, "aspect", "mentions", "customers", "negative (95% CI)", "change vs previous"):
        t.add_column(col)
    for r in rows:
        shown = r["shown"]
        neg = f"{_pct(r['negative_share'])} ({_pct(r['ci_low'])}-{_pct(r['ci_high'])})" if shown else "(too few customers)"
        change = "-" if r["change"] is None else f"{r['change']:+.0%}"
        t.add_row(escape(str(r["name"] or r["key"])), r["aspect"], str(r["mentions"]), str(r["customers"]), neg, change)
    print_wide(t)


@insight_app.command("alerts")
def insight_alerts(config: ConfigOpt = DEFAULT_CONFIG, limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
                   as_json: JsonOpt = False) -> None:
    """Weekly complaint spikes per product x aspect, false discovery rate controlled."""
    from shoplens.serving import insight

    rows = insight.alerts(_db(config), limit)
    if as_json:
        print(json.dumps({"alerts": rows}, ensure_ascii=False, indent=2))
        return
    t = Table(title="投诉激增 complaint spikes")
    for col in ("week", "product", "aspect", "complaints / reviews", "baseline", "q"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["week"], escape(f"{r['name']} ({r['product_id']})"), r["aspect"],
                  f"{r['complaints']} / {r['texts']} ({_pct(r['share'])})", _pct(r["baseline_share"]), f"{r['q_value']:.2g}")
    print_wide(t)


@insight_app.command("segments")
def insight_segments(config: ConfigOpt = DEFAULT_CONFIG, as_json: JsonOpt = False) -> None:
    """Which segments complain about what, and the CLV of those who do."""
    from shoplens.serving import insight

    rows = insight.segments(_db(config))
    if as_json:
        print(json.dumps({"segments": rows}, ensure_ascii=False, indent=2))
        return
    t = Table(title="segments x aspects (last period)")
    for col in ("segment", "aspect", "complainers", "share", "mean polarity", "CLV at stake"):
        t.add_column(col)
    for r in rows:
        if r["shown"]:
            t.add_row(escape(r["segment"]), r["aspect"], str(r["complainers"]), _pct(r["complainer_share"]),
                      f"{r['mean_polarity']:+.2f}", f"{r['clv_at_stake']:,.0f}")
    print_wide(t)


@insight_app.command("demand")
def insight_demand(
    config: ConfigOpt = DEFAULT_CONFIG,
    segment: Annotated[str | None, typer.Option(help="One segment (id or name).")] = None,
    category: Annotated[str | None, typer.Option(help="One top-level category.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Weekly units and revenue ahead per segment x category: time series (with 80%
    interval) beside bottom-up from the customers, and how far they disagree."""
    from shoplens.serving import insight

    rows = insight.demand(_db(config), segment, category)
    if as_json:
        print(json.dumps({"demand": rows}, ensure_ascii=False, indent=2))
        return
    t = Table(title="需求预测 demand by segment x category (units per week)")
    for col in ("segment", "category", "week", "time series (80%)", "bottom-up", "disagreement", "revenue", "model"):
        t.add_column(col)
    for r in rows:
        t.add_row(escape(str(r["segment"])), r["category"], r["week"],
                  f"{r['units']:,.1f} ({r['units_lo_80']:,.1f}-{r['units_hi_80']:,.1f})",
                  "-" if r["units_bottom_up"] is None else f"{r['units_bottom_up']:,.1f}",
                  "-" if r["disagreement"] is None else f"{r['disagreement']:+.0%}", f"{r['revenue']:,.0f}", r["model"])
    print_wide(t)


@evaluate_app.command("insight")
def evaluate_insight(
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds of the generated shops.")] = "1,2,3,4,5",
    customers: Annotated[int, typer.Option(min=200, help="Ordinary customers per shop.")] = 1500,
    as_json: JsonOpt = False,
) -> None:
    """Complaint alerts against spikes planted in generated shops."""
    from shoplens.errors import ShopLensError
    from shoplens.insight.evaluate import evaluate

    try:
        chosen = tuple(int(s) for s in seeds.split(",") if s.strip())
    except ValueError:
        raise ShopLensError(f"--seeds: expected comma-separated integers, found {seeds[:40]!r}") from None
    out = evaluate(chosen, customers, on_seed=lambda s: err_console.print(f"seed {s}: generating and building"))
    if as_json:
        print(json.dumps(out, ensure_ascii=False, indent=2, default=float))
        return
    t = Table(title=f"complaint spike alerts at FDR {out['fdr']:.2f}, seeds {', '.join(map(str, chosen))}")
    for col in ("seed", "planted", "alerts", "found", "precision", "precision (product-week)", "recall"):
        t.add_column(col, justify="right")
    for r in [*out["per_seed"], {"seed": "all", **out["total"]}]:
        t.add_row(str(r["seed"]), str(r["planted"]), str(r["alerts"]), str(r["found"]), _pct(r["precision"]),
                  _pct(r["precision_product_week"]), _pct(r["recall"]))
    print_wide(t)
    d = Table(title="total weekly demand, 8 weeks ahead, 4 rolling origins: MASE / WAPE (lower is better)")
    d.add_column("data")
    methods = ("time_series", "bottom_up", "naive", "seasonal_naive")
    for m in methods:
        d.add_column(m, justify="right")
    for name, res in (("demo (mean over seeds)", out["demand"]["demo"]), ("CDNOW (23,570 customers)", out["demand"]["cdnow"])):
        d.add_row(name, *(f"{res[m]['mase']:.3f} / {res[m]['wape']:.3f}" if m in res else "-" for m in methods))
    print_wide(d)
