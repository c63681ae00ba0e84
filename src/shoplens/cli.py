"""The ``shoplens`` command line: a thin door over the library.

Each command calls one library function; any ``ShopLensError`` becomes a one-line red
message and exit code 2, never a stack trace.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from shoplens.errors import ShopLensError

app = typer.Typer(help="ShopLens: e-commerce customer profiles (用户画像), offline.", no_args_is_help=True, add_completion=False)
datasets_app = typer.Typer(help="Real public data sets shipped in registry packages.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
evaluate_app = typer.Typer(help="Validation on real public data.", no_args_is_help=True)
app.add_typer(evaluate_app, name="evaluate")
keys_app = typer.Typer(help="API keys for the REST API.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
segments_app = typer.Typer(help="Customer segments of the current snapshot.", invoke_without_command=True)
app.add_typer(segments_app, name="segments")
console = Console()
err_console = Console(stderr=True)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Path to shoplens.toml.")]
DEFAULT_CONFIG = Path("shoplens.toml")


@contextmanager
def _progress() -> Iterator[tuple[Callable[[str, int], None], Callable[[str, int, int], None]]]:
    """Rich progress: a counter per ingested source and a bar over build steps."""
    prog = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                    TimeElapsedColumn(), console=err_console, transient=False)
    tasks: dict[str, Any] = {}

    def on_rows(label: str, rows: int) -> None:
        if label not in tasks:
            tasks[label] = prog.add_task(f"ingest {label}", total=None, info="")
        prog.update(tasks[label], info=f"{rows:,} rows")

    def on_step(name: str, i: int, total: int) -> None:
        if "build" not in tasks:
            tasks["build"] = prog.add_task("build snapshot", total=total, info="")
        prog.update(tasks["build"], completed=i, info=name)

    with prog:
        yield on_rows, on_step
        for label, task in tasks.items():
            if label != "build":
                prog.update(task, total=1, completed=1)


def _load(config: Path) -> Any:
    from shoplens.config import load_config

    return load_config(config)


def _print_ingest(results: list[Any]) -> None:
    t = Table(title="ingest")
    for col in ("table", "source", "rows in", "accepted", "unchanged", "quarantined", ""):
        t.add_column(col, justify="right" if col in ("rows in", "accepted", "unchanged", "quarantined") else "left")
    for r in results:
        note = "skipped: identical file already ingested" if r.skipped else ""
        t.add_row(r.table, r.source, f"{r.rows_in:,}", f"{r.accepted:,}", f"{r.unchanged:,}",
                  f"[yellow]{r.quarantined:,}[/]" if r.quarantined else "0", note)
    console.print(t)
    if any(r.quarantined for r in results):
        console.print("quarantined rows: [bold]shoplens quarantine[/] lists them with line, field, expected and found", soft_wrap=True)


def _print_summary(summary: Any) -> None:
    _print_ingest(summary.ingest)
    b = summary.build
    console.print(f"snapshot [bold]{b.snapshot_id}[/] built in {b.seconds:.1f}s: {b.n_customers:,} customers, as of {b.as_of}")
    _print_skipped(b.skipped)
    t = Table(title="RFM segments")
    for col in ("segment", "细分", "customers", "mean spend"):
        t.add_column(col)
    for seg, zh, n, spend in summary.segments:
        t.add_row(seg, zh, f"{n:,}", f"{spend:,.2f}")
    console.print(t)
    if summary.top_categories:
        console.print("top categories by spend: " + ", ".join(f"{c} {v:,.0f}" for c, v in summary.top_categories))
    if summary.example_customer:
        cfg_path = summary.folder / "shoplens.toml"
        console.print(f"try: [bold]shoplens profile {summary.example_customer} --json --config {cfg_path}[/]", soft_wrap=True)


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
    key = cfg.resolve(cfg.privacy.key_file)
    if os.environ.get(cfg.privacy.key_env):
        console.print(f"wrote {target}; the secret key comes from ${cfg.privacy.key_env}")
        return
    load_keys(cfg.privacy.key_env, key, create=True)
    console.print(f"wrote {target} and secret key {key} (mode 600; back it up, never commit it)")


@app.command("ingest")
def ingest_cmd(config: ConfigOpt = DEFAULT_CONFIG, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Validate, de-identify and store every configured source; quarantine bad rows."""
    from shoplens.ingest import ingest
    from shoplens.ingest.pipeline import dumps
    from shoplens.store import Store

    cfg = _load(config)
    with Store.for_config(cfg) as store, _progress() as (on_rows, _s):
        results = ingest(cfg, store, on_rows, create_key=True)
    if as_json:
        print(dumps(results))
    else:
        _print_ingest(results)


@app.command()
def quarantine(
    config: ConfigOpt = DEFAULT_CONFIG,
    table: Annotated[str | None, typer.Option(help="Only this table.")] = None,
    limit: Annotated[int, typer.Option(help="How many rows to show.")] = 20,
) -> None:
    """List quarantined input rows: source, line, field, expected and found."""
    from shoplens.ingest import quarantine_report
    from shoplens.store import Store

    cfg = _load(config)
    with Store.for_config(cfg, read_only=True) as store:
        rows = quarantine_report(store, limit, table)
    t = Table(title=f"quarantine (latest {limit})")
    for col in ("table", "source", "line", "field", "expected", "found", "reason"):
        t.add_column(col)
    for r in rows:
        t.add_row(str(r["table"]), str(r["source"]), str(r["line"]), str(r["field"]), str(r["expected"]), str(r["found"]), str(r["reason"]))
    console.print(t)


@app.command("build")
def build_cmd(
    config: ConfigOpt = DEFAULT_CONFIG,
    as_of: Annotated[str | None, typer.Option("--as-of", help="Reference day YYYY-MM-DD (default: from config / data).")] = None,
) -> None:
    """Compute per-customer features into a new snapshot; switch to it when complete."""
    from shoplens.build import build
    from shoplens.store import Store

    cfg = _load(config)
    day = _parse_day(as_of)
    with Store.for_config(cfg) as store, _progress() as (_r, on_step):
        result = build(cfg, store, day, on_step)
    console.print(f"snapshot {result.snapshot_id} complete: {result.n_customers:,} customers as of {result.as_of} ({result.seconds:.1f}s)")
    _print_skipped(result.skipped)


def _print_skipped(skipped: dict[str, str]) -> None:
    for model, why in skipped.items():
        console.print(f"[yellow]predictions: {model} skipped[/]: {escape(why)}", soft_wrap=True)


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
    """Print what is known about one customer."""
    from shoplens.errors import ConfigError
    from shoplens.ingest.pipeline import keys_for
    from shoplens.profiles import get_profile
    from shoplens.store import Store

    cfg = _load(config)
    try:
        keys = keys_for(cfg)
    except ConfigError:
        keys = None
    with Store.for_config(cfg, read_only=True) as store:
        doc = get_profile(store, customer_id, keys)
    if as_json:
        print(json.dumps(doc, ensure_ascii=False, indent=2))
        return
    console.print_json(json.dumps(doc, ensure_ascii=False))


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


@evaluate_app.command("predictions")
def evaluate_predictions_cmd(
    dataset: Annotated[str, typer.Option(help="cdnow (the 2,357-customer BTYD sample) or demo (text-feature lift).")] = "cdnow",
    as_json: Annotated[bool, typer.Option("--json", help="Print the tables as JSON.")] = False,
) -> None:
    """CLV parameters vs published, holdout by frequency, propensity metrics vs baselines."""
    from shoplens.models.evaluate import evaluate_predictions, evaluate_text_lift

    if dataset == "demo":
        with err_console.status("evaluating the text-feature lift on the demo shop"):
            lift = evaluate_text_lift()
        if as_json:
            print(lift.reset_index().to_json(orient="records", indent=2))
        else:
            _print_frame("purchase propensity on the demo shop (cross-validated means)", lift, 4)
        return

    with err_console.status(f"evaluating predictions on {dataset}"):
        ev = evaluate_predictions(dataset)
    if as_json:
        print(json.dumps(ev.as_dict(), default=str, indent=2))
        return
    _print_frame("BG/NBD and Gamma-Gamma parameters", ev.params, 4)
    _print_frame("holdout purchases per customer by calibration repeat purchases", ev.holdout, 3)
    t = ev.totals
    for name in ("bg_nbd", "corrected_mean", "corrected_point"):
        console.print(f"{name:>16}: total {t[name]:8.1f} ({100 * (t[name] / t['actual'] - 1):+.1f}% vs actual {t['actual']:.0f}), "
                      f"per-customer MAE {t['mae_' + name]:.4f}", soft_wrap=True)
    _print_frame("purchase propensity (cross-validated means)", ev.classifier, 4)
    for note in ev.notes:
        console.print(f"[dim]{escape(note)}[/]", soft_wrap=True)


def _print_frame(title: str, frame: Any, digits: int) -> None:
    t = Table(title=title)
    t.add_column(str(frame.index.name or ""))
    for col in frame.columns:
        t.add_column(str(col), justify="right")
    ints = {c for c in frame.columns if frame[c].dtype.kind in "iu"}
    for idx, row in frame.iterrows():
        cells = ("" if v != v else f"{int(v):,}" if c in ints else f"{v:,.{digits}f}" for c, v in row.items())
        t.add_row(str(idx), *cells)
    console.print(t)


@segments_app.callback()
def segments_list(ctx: typer.Context, config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """List segments with size, name, how the persona was written and quality metrics."""
    if ctx.invoked_subcommand is not None:
        return
    from shoplens.store import Store

    cfg = _load(config)
    with Store.for_config(cfg, read_only=True) as store:
        snap = store.require_snapshot()
        rows = store.con.execute(f"SELECT segment_id, name, size, share, source, metrics FROM snap_{snap}.segments ORDER BY segment_id").fetchall()
    if not rows:
        console.print("no segments in this snapshot (see [segments] in shoplens.toml)")
        return
    t = Table(title=f"segments (snapshot {snap})")
    for col in ("id", "name", "customers", "share", "persona by"):
        t.add_column(col)
    for sid, name, size, share, source, _m in rows:
        t.add_row(str(sid), name, f"{size:,}", f"{share:.1%}", source)
    console.print(t)
    m = json.loads(rows[0][5])
    console.print(f"{m['method']}, k = {m['k']}: silhouette {m['silhouette']:.3f}, Davies-Bouldin {m['davies_bouldin']:.3f}, "
                  f"Calinski-Harabasz {m['calinski_harabasz']:,.0f}, bootstrap ARI {m['stability_ari']:.3f}", soft_wrap=True)
    maps = cfg.store_path.parent / (cfg.store_path.stem + ".segments")
    console.print(f"map: {maps / f'snap_{snap}-map.png'} and .html", soft_wrap=True)


@segments_app.command("show")
def segments_show(segment_id: Annotated[int, typer.Argument(help="Segment id from 'shoplens segments'.")],
                  config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Print one segment: persona, suggested actions, distinguishing figures, categories."""
    from shoplens.errors import NotFoundError
    from shoplens.store import Store

    cfg = _load(config)
    with Store.for_config(cfg, read_only=True) as store:
        snap = store.require_snapshot()
        row = store.record(f"SELECT * FROM snap_{snap}.segments WHERE segment_id = ?", [segment_id])
    if not row:
        raise NotFoundError(f"segment {segment_id} not found in snapshot {snap}: 'shoplens segments' lists them")
    console.print(f"[bold]{row['segment_id']}: {escape(row['name'])}[/] ({row['size']:,} customers, {row['share']:.1%}; persona: {row['source']})")
    console.print(escape(row["persona"]), soft_wrap=True)
    for action in json.loads(row["actions"]):
        console.print(f"  - {escape(action)}", soft_wrap=True)
    z = json.loads(row["zscores"])
    top = sorted(z, key=lambda k: -abs(z[k]))[:6]
    console.print("distinguishing (z vs all customers): " + ", ".join(f"{k} {z[k]:+.2f}" for k in top), soft_wrap=True)
    console.print("categories: " + ", ".join(json.loads(row["categories"])), soft_wrap=True)
    for label, key in (("praise", "praise"), ("complaints", "complaints")):
        for quote in json.loads(row[key] or "[]")[:2]:
            console.print(f"  {label}: “{escape(quote)}”", soft_wrap=True)
    problems = json.loads(row["problems"])
    if problems:
        console.print("[yellow]LLM draft rejected:[/] " + escape("; ".join(problems)), soft_wrap=True)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Who the key is for.")],
    role: Annotated[str, typer.Option(help="admin, analyst or service.")] = "analyst",
    config: ConfigOpt = DEFAULT_CONFIG,
) -> None:
    """Create an API key; it is printed once and only its hash is stored."""
    from shoplens.serving.access import Access

    cfg = _load(config)
    access = Access(cfg.store_path)
    key = access.create_key(name, role)
    access.close()
    console.print(f"API key for {name} ({role}), shown once: [bold]{key}[/]", soft_wrap=True)


@app.command()
def serve(
    config: ConfigOpt = DEFAULT_CONFIG,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
) -> None:
    """Serve profiles, segments and audiences over HTTP (OpenAPI docs at /docs)."""
    import uvicorn

    from shoplens.serving.api import create_app

    uvicorn.run(create_app(_load(config)), host=host, port=port, log_level="info")


@app.command()
def forget(
    customer_id: Annotated[str, typer.Argument(help="Pseudonym (c_...) or, with the secret key, the shop's own id.")],
    config: ConfigOpt = DEFAULT_CONFIG,
) -> None:
    """Erase a customer from every table, snapshot, serving file, vault and log."""
    from shoplens.erasure import forget as erase
    from shoplens.errors import ConfigError
    from shoplens.ingest.pipeline import keys_for
    from shoplens.store import Store

    cfg = _load(config)
    try:
        keys = keys_for(cfg)
    except ConfigError:
        keys = None
    with Store.for_config(cfg) as store:
        report = erase(store, customer_id, keys)
    console.print(f"erased {report.customer_id}: " + ", ".join(f"{k} {v}" for k, v in report.removed.items()), soft_wrap=True)


@app.command()
def audience(
    expression: Annotated[str, typer.Argument(help="Filter, e.g. \"age 25-34 AND churn_risk > 0.6\".")],
    config: ConfigOpt = DEFAULT_CONFIG,
    out: Annotated[Path | None, typer.Option(help="Write the audience to .csv or .parquet.")] = None,
) -> None:
    """Select customers with the filter language; print the count or export them."""
    from shoplens.serving.audience import compile_filter, parse_text, to_text
    from shoplens.serving.profile_store import FLAT_FIELDS, ProfileReader

    cfg = _load(config)
    tree = parse_text(expression)
    where, params = compile_filter(tree, FLAT_FIELDS)
    db = ProfileReader(cfg.store_path).db()
    total = db.execute(f"SELECT count(*) FROM flat WHERE {where}", params).fetchone()[0]
    console.print(f"filter: {to_text(tree)}", soft_wrap=True)
    console.print(f"{total:,} customers")
    if out is not None:
        import pandas as pd

        frame = pd.read_sql_query(f"SELECT * FROM flat WHERE {where} ORDER BY customer_id", db, params=params)
        if out.suffix == ".parquet":
            frame.to_parquet(out, index=False)
        else:
            frame.to_csv(out, index=False)
        console.print(f"wrote {out}")


@app.command()
def report(
    config: ConfigOpt = DEFAULT_CONFIG,
    out: Annotated[Path, typer.Option(help="HTML file to write.")] = Path("shoplens-report.html"),
) -> None:
    """Write a self-contained HTML report (opens offline in any browser)."""
    from shoplens.report import build_report
    from shoplens.store import Store

    cfg = _load(config)
    with Store.for_config(cfg, read_only=True) as store, err_console.status("writing report"):
        path = build_report(store, out)
    console.print(f"wrote {path}")


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
key_file = ".shoplens/secret.key"
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


def main() -> None:
    """Console entry point: run the app, turning ShopLens errors into clean messages."""
    try:
        app(standalone_mode=False)
    except ShopLensError as err:
        err_console.print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True)
        sys.exit(2)
    except typer.Abort:
        sys.exit(130)
    except Exception as err:  # click usage errors
        import click

        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(err.exit_code)
        raise


if __name__ == "__main__":
    main()
