"""What every command module of the CLI shares: the typer apps, the consoles, the
config option, progress bars, the summary printers and ``main`` (errors to one line)."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from shoplens.errors import ShopLensError

app = typer.Typer(help="ShopLens: e-commerce customer profiles (用户画像), offline.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
datasets_app = typer.Typer(help="Real public data sets shipped in registry packages.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
evaluate_app = typer.Typer(help="Validation on real public data.", no_args_is_help=True)
app.add_typer(evaluate_app, name="evaluate")
keys_app = typer.Typer(help="API keys for the REST API.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
consent_app = typer.Typer(help="Customers' consent per purpose and channel (docs/consent.md).", no_args_is_help=True)
app.add_typer(consent_app, name="consent")
segments_app = typer.Typer(help="Customer segments of the current snapshot.", invoke_without_command=True)
app.add_typer(segments_app, name="segments")
console = Console()
err_console = Console(stderr=True)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Path to shoplens.toml.")]


def print_wide(table: Table, width: int = 120) -> None:
    """Print a table at least ``width`` columns wide, also when stdout is a file or a
    pipe (rich assumes 80 there and would cut names short)."""
    before = console.width
    console.width = max(before, width)
    try:
        console.print(table)
    finally:
        console.width = before
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

    on_step.note = lambda message: prog.console.print(message, soft_wrap=True)  # type: ignore[attr-defined]
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
        note = "skipped: same file, same settings as before (--force re-reads)" if r.skipped else ""
        t.add_row(r.table, r.source, f"{r.rows_in:,}", f"{r.accepted:,}", f"{r.unchanged:,}",
                  f"[yellow]{r.quarantined:,}[/]" if r.quarantined else "0", note)
    console.print(t)
    if any(r.quarantined for r in results):
        console.print("quarantined rows: [bold]shoplens quarantine[/] lists them with line, field, expected and found", soft_wrap=True)


def _print_text(text: dict[str, Any]) -> None:
    if not text.get("n_texts"):
        return
    embedded = ("in the executors" if text.get("embedded") is None
                else f"{text['embedded']:,} computed, {text['cache_hits']:,} from the cache")
    console.print(f"texts: {text['n_texts']:,} ({text['analysed']:,} analysed, {text['reused']:,} from the result cache; "
                  f"embeddings: {embedded}), {text['topics']} topics, {text['outlier_share']:.1%} outliers")


def _print_summary(summary: Any) -> None:
    _print_ingest(summary.ingest)
    b = summary.build
    console.print(f"snapshot [bold]{b.snapshot_id}[/] built in {b.seconds:.1f}s: {b.n_customers:,} customers{b.profiled_note}, as of {b.as_of}")
    _print_text(b.text)
    _print_skipped(b.skipped)
    t = Table(title="RFM segments")
    for col in ("segment", "细分", "customers", "mean spend"):
        t.add_column(col)
    for seg, zh, n, spend in summary.segments:
        t.add_row(seg, zh, f"{n:,}", f"{spend:,.2f}")
    console.print(t)
    if summary.clusters:
        console.print("segments: " + ", ".join(f"{i} {n} ({c:,})" for i, n, c in summary.clusters)
                      + "  (shoplens segments show ID)", soft_wrap=True)
    if summary.top_categories:
        console.print("top categories by spend: " + ", ".join(f"{c} {v:,.0f}" for c, v in summary.top_categories))
    if summary.example_customer:
        cfg_path = summary.folder / "shoplens.toml"
        console.print(f"try: [bold]shoplens profile {summary.example_customer} --json --config {cfg_path}[/]", soft_wrap=True)
        console.print(f"     [bold]shoplens recommend {summary.example_customer} --config {cfg_path}[/]", soft_wrap=True)


def _print_skipped(skipped: dict[str, str]) -> None:
    for model, why in skipped.items():
        console.print(f"[yellow]{model} skipped[/]: {escape(why)}", soft_wrap=True)


def main() -> None:
    """Console entry point: typer handles usage errors and --help; ShopLens errors and
    file-system refusals (disk full, read-only folder, permission denied) become one red
    ``error:`` line and exit code 2, never a stack trace. Every file the command creates
    is private to the user (umask 077)."""
    from shoplens.fsutil import private_umask

    private_umask()
    try:
        app()
    except ShopLensError as err:
        _fail(str(err))
    except OSError as err:
        from shoplens.fsutil import describe_os_error

        _fail(describe_os_error(err))
    except sqlite3.OperationalError as err:  # a serving file, the audit log or a cache: full, read-only, locked
        _fail(f"a SQLite file could not be used: {err} (disk full, read-only folder, or another process holds it)")
    except Exception as err:  # DuckDB reports a full or read-only disk as its own exceptions
        reason = _storage_failure(err)
        if reason is None:
            raise
        _fail(f"the store could not be written: {reason} (the last complete snapshot is still current)")


_IO_WORDS = ("could not write", "no space left", "file too large", "read-only file system", "permission denied",
             "could not open", "could not truncate", "could not fsync", "disk quota")


def _storage_failure(err: BaseException) -> str | None:
    """The one-line reason when ``err`` (or its cause) is the store failing on the file system."""
    import duckdb

    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, duckdb.Error):
            first = str(seen).splitlines()[0] if str(seen) else type(seen).__name__
            if isinstance(seen, duckdb.IOException | duckdb.PermissionException) or \
                    any(w in first.lower() for w in _IO_WORDS):
                return first
        seen = seen.__cause__ or seen.__context__
    return None


def _fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    sys.exit(2)
