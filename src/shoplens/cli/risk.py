"""``shoplens risk`` (the review queue, decisions, threshold suggestions) and
``shoplens evaluate risk`` (planted patterns over several seeds, a real anomaly set)."""

from __future__ import annotations

import getpass
import json
from typing import Annotated

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

risk_app = typer.Typer(help="Risk flags for a person to review (docs/risk.md); never a credit or eligibility decision.",
                       invoke_without_command=True)
app.add_typer(risk_app, name="risk")

TypeOpt = Annotated[str | None, typer.Option("--type", help="Only this flag type (return_abuse, coupon_abuse, "
                                             "linked_accounts, review_manipulation, unusual_behaviour).")]


@risk_app.callback()
def risk_queue(
    ctx: typer.Context,
    config: ConfigOpt = DEFAULT_CONFIG,
    flag_type: TypeOpt = None,
    level: Annotated[str | None, typer.Option(help="Only HIGH, MEDIUM or LOW (default: HIGH and MEDIUM).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many flags.")] = 30,
    include_decided: Annotated[bool, typer.Option("--include-decided", help="Also flags already decided.")] = False,
    zh: Annotated[bool, typer.Option("--zh", help="Facts in Chinese.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the queue as JSON.")] = False,
) -> None:
    """The review queue: MEDIUM and HIGH flags, most severe first, with their facts."""
    if ctx.invoked_subcommand is not None:
        return
    from shoplens.consent import Ledger, withdrew_profiling
    from shoplens.serving import risk
    from shoplens.serving.reader import ProfileReader

    cfg = _load(config)
    decided = None if include_decided else risk.latest(cfg.store_path)
    reader, ledger = ProfileReader(cfg.store_path), Ledger(cfg.store_path)
    flags = risk.queue(reader.db(), flag_type, level, limit, decided, lambda cid: withdrew_profiling(ledger, reader, cid))
    if as_json:
        print(json.dumps({"notice": risk.NOTICE, "flags": flags}, ensure_ascii=False, indent=2))
        return
    err_console.print(risk.NOTICE, soft_wrap=True)
    t = Table(title=f"risk queue ({len(flags)} flags)")
    for col in ("customer", "type", "level", "action", "score", "facts"):
        t.add_column(col)
    key = "description_zh" if zh else "description"
    for f in flags:
        facts = "\n".join(("+ " if x["sentiment"] == "positive" else "- ") + x[key] for x in f["facts"])
        t.add_row(f["customer_id"], f["type"], f["level"], f["recommendation"], f"{f['score']:.3f}", escape(facts))
    console.print(t)
    if not flags:
        console.print("no flags to review" + ("" if include_decided else " (decided ones hidden: --include-decided)"))


@risk_app.command("decide")
def risk_decide(
    customer_id: Annotated[str, typer.Argument(help="Pseudonymised id (c_...).")],
    flag_type: Annotated[str, typer.Option("--type", help="The flag's type.")],
    decision: Annotated[str, typer.Option(help="confirmed or dismissed.")],
    note: Annotated[str, typer.Option(help="Why (kept with the decision).")] = "",
    config: ConfigOpt = DEFAULT_CONFIG,
) -> None:
    """Record an analyst's decision on a flag (a label for tuning the thresholds)."""
    from shoplens.serving import risk
    from shoplens.serving.reader import ProfileReader

    cfg = _load(config)
    reader = ProfileReader(cfg.store_path)
    out = risk.decide(cfg.store_path, reader.db(), customer_id, flag_type, decision, note, f"cli:{getpass.getuser()}",
                      reader.snapshot_id())
    console.print(f"recorded: {out['customer_id']} {out['type']} ({out['level']}, score {out['score']:.3f}) -> "
                  f"{out['decision']}")


@risk_app.command("tune")
def risk_tune(
    config: ConfigOpt = DEFAULT_CONFIG,
    target: Annotated[float, typer.Option(min=0.0, max=1.0, help="Precision the queue should keep.")] = 0.8,
) -> None:
    """From the recorded decisions: per flag type the confirmed share and a suggested
    ``min_score`` for rules/risk.toml."""
    from shoplens.serving import risk

    cfg = _load(config)
    t = Table(title=f"decisions as labels (target precision {target:.0%})")
    for col in ("type", "decisions", "confirmed", "precision", "suggested min_score"):
        t.add_column(col, justify="right")
    for row in risk.tune(cfg.store_path, target):
        prec, sug = row["precision"], row["suggested_min_score"]
        t.add_row(row["type"], str(row["decisions"]), str(row["confirmed"]), "-" if prec is None else f"{prec:.2f}",
                  "-" if sug is None else f"{sug:.3f}")
    console.print(t)


@evaluate_app.command("risk")
def evaluate_risk(
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds of the generated shops.")] = "1,2,3",
    customers: Annotated[int, typer.Option(min=200, help="Ordinary customers per shop.")] = 1500,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Flags against planted abuse patterns (several seeds) beside IsolationForest, and the
    behaviour score on ODDS Shuttle."""
    from shoplens.errors import ShopLensError
    from shoplens.risk.evaluate import evaluate, shuttle, summary

    try:
        chosen = tuple(int(s) for s in seeds.split(",") if s.strip())
    except ValueError:
        raise ShopLensError(f"--seeds: expected comma-separated integers, found {seeds[:40]!r}") from None
    per_seed = evaluate(chosen, customers, on_seed=lambda s: err_console.print(f"seed {s}: generating and building"))
    table = summary(per_seed)
    real = shuttle()
    if as_json:
        out = {"seeds": list(chosen), "summary": table.reset_index().to_dict("records"),
               "per_seed": per_seed.to_dict("records"), "shuttle": real}
        print(json.dumps(out, ensure_ascii=False, indent=2, default=float))
        return
    t = Table(title=f"planted patterns, mean over seeds {', '.join(map(str, chosen))} ({customers:,} customers each)")
    for col in ("type", "method", "truth", "flagged", "precision", "recall", "flagged share", "ROC-AUC"):
        t.add_column(col, justify="right")
    for r in table.reset_index().itertuples(index=False):
        t.add_row(str(r.type), str(r.method), f"{r.truth:.1f}", f"{r.flagged:.1f}", _num(r.precision), _num(r.recall),
                  f"{r.flagged_share:.1%}", _num(r.roc_auc))
    print_wide(t, 110)
    if real is None:
        console.print("ODDS Shuttle: install 'river>=0.26' (it ships the set) to score the behaviour model on real data")
        return
    s = Table(title=f"ODDS Shuttle ({real['rows']:,} rows, {real['outliers']:,} outliers)")
    for col in ("method", "ROC-AUC", "flagged", "precision", "recall"):
        s.add_column(col, justify="right")
    for method in ("shoplens", "isolation_forest"):
        m = real[method]
        s.add_row(method, _num(m["roc_auc"]), f"{m['flagged']:,}", _num(m["precision"]), _num(m["recall"]))
    console.print(s)


def _num(v: object) -> str:
    return "-" if not isinstance(v, int | float) or v != v else f"{v:.3f}"
