"""More ``shoplens`` commands: evaluation, segments, API keys, serving, audiences,
erasure and the report. They register on the app defined in ``shoplens.cli._common``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from shoplens.cli._common import (
    DEFAULT_CONFIG,
    ConfigOpt,
    _load,
    app,
    consent_app,
    console,
    err_console,
    evaluate_app,
    keys_app,
    segments_app,
)


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
    from shoplens.store import segments_dir

    maps = segments_dir(cfg.store_path)
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
    from shoplens.models.personas import _words

    words = _words()

    def named(k: str) -> str:
        entry = words.get(k, {})
        return f"{entry['label_zh']} {entry['label_en']}" if "label_zh" in entry else k

    console.print("区分特征 distinguishing (z vs all customers): " + ", ".join(f"{named(k)} {z[k]:+.2f}" for k in top),
                  soft_wrap=True)
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
    expires_days: Annotated[float | None, typer.Option(help="Days until the key stops working (default: never).")] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
) -> None:
    """Create an API key; it is printed once and only its hash is stored."""
    from shoplens.serving.access import Access

    cfg = _load(config)
    access = Access(cfg.store_path)
    try:
        key = access.create_key(name, role, expires_days)
    finally:
        access.close()
    until = f", expires in {expires_days:g} days" if expires_days is not None else ""
    console.print(f"API key for {escape(name)} ({role}{until}), shown once: [bold]{key}[/]", soft_wrap=True)


@keys_app.command("list")
def keys_list(config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """List keys: name, role, created, expires, revoked, last used (never the key or its hash)."""
    from shoplens.serving.access import Access

    cfg = _load(config)
    access = Access(cfg.store_path)
    try:
        keys = access.list_keys()
    finally:
        access.close()
    if not keys:
        console.print("no API keys: 'shoplens keys create NAME --role ROLE' makes one")
        return
    t = Table(title="API keys (times in UTC)")
    for col in ("name", "role", "created", "expires", "revoked", "last used"):
        t.add_column(col)
    for k in keys:
        t.add_row(escape(k.name), k.role, _when(k.created_at), _when(k.expires_at, "never"), _when(k.revoked_at, ""),
                  _when(k.last_used, "never"))
    console.print(t)


@keys_app.command("revoke")
def keys_revoke(name: Annotated[str, typer.Argument(help="The key's name, as in 'shoplens keys list'.")],
                config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Stop a key from working at once (it stays listed as revoked)."""
    from shoplens.serving.access import Access

    cfg = _load(config)
    access = Access(cfg.store_path)
    try:
        access.revoke(name)
    finally:
        access.close()
    console.print(f"revoked the API key {escape(name)}", soft_wrap=True)


@keys_app.command("rotate")
def keys_rotate(
    name: Annotated[str, typer.Argument(help="The key's name, as in 'shoplens keys list'.")],
    expires_days: Annotated[float | None, typer.Option(help="Days until the new key stops working "
                                                            "(default: the old key's lifetime, if it had one).")] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
) -> None:
    """Give a key a new secret (same name and role); the old secret stops working at once."""
    from shoplens.serving.access import Access

    cfg = _load(config)
    access = Access(cfg.store_path)
    try:
        key = access.rotate(name, expires_days)
    finally:
        access.close()
    console.print(f"new API key for {escape(name)}, shown once: [bold]{key}[/]", soft_wrap=True)


def _when(ts: float | None, empty: str = "") -> str:
    from datetime import UTC, datetime

    return empty if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


@app.command()
def serve(
    config: ConfigOpt = DEFAULT_CONFIG,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
) -> None:
    """Serve profiles, segments and audiences over HTTP (OpenAPI docs at /docs).

    Each request logs one line: method, route template, status and milliseconds; URLs
    (which hold customer ids) are never logged.
    """
    import uvicorn

    from shoplens.serving.api import create_app

    cfg = _load(config)
    _reconcile(cfg)
    uvicorn.run(create_app(cfg), host=host, port=port, log_level="info", access_log=False,
                log_config=_serve_log_config())


def _reconcile(cfg: Any) -> None:
    """A build killed after its snapshot completed but before ``CURRENT`` switched:
    serve what the store calls current (the build would do the same on its next run)."""
    from shoplens.errors import StoreError
    from shoplens.pipeline.runner import reconcile_serving
    from shoplens.store import Store

    if not cfg.store_path.exists():
        return
    try:
        with Store.open(cfg.store_path, read_only=True, timezone=cfg.defaults.timezone) as store:
            reconcile_serving(store)
    except StoreError:  # a build holds the store: it switches CURRENT itself when it completes
        return


def _serve_log_config() -> dict[str, Any]:
    """uvicorn's logging set-up, its access log left off, plus our ``shoplens.access`` lines."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    conf = copy.deepcopy(LOGGING_CONFIG)
    # a plain formatter: the access line is written once per request, uvicorn's coloured one costs more
    conf["formatters"]["access_plain"] = {"format": "%(message)s"}  # each line carries its time
    conf["handlers"]["access_plain"] = {"class": "logging.StreamHandler", "formatter": "access_plain",
                                        "stream": "ext://sys.stderr"}
    conf["loggers"]["shoplens.access"] = {"handlers": ["access_plain"], "level": "INFO", "propagate": False}
    return conf


@app.command()
def forget(
    customer_id: Annotated[str, typer.Argument(help="Pseudonym (c_...) or, with the secret key, the shop's own id.")],
    config: ConfigOpt = DEFAULT_CONFIG,
) -> None:
    """Erase a customer from every table, snapshot, serving file, vault and log."""
    from shoplens.erasure import forget as erase
    from shoplens.privacy import optional_keys
    from shoplens.store import Store

    cfg = _load(config)
    with Store.for_config(cfg) as store:
        report = erase(store, customer_id, optional_keys(cfg), cfg)
    console.print(f"erased {report.customer_id}: " + ", ".join(f"{k} {v}" for k, v in report.removed.items()), soft_wrap=True)
    console.print("rewritten so no freed byte keeps the data: " + ", ".join(report.rewritten), soft_wrap=True)


@app.command()
def audience(
    expression: Annotated[str, typer.Argument(help="Filter, e.g. \"age 25-34 AND churn_risk > 0.6\" (or a question with --question).")],
    config: ConfigOpt = DEFAULT_CONFIG,
    question: Annotated[bool, typer.Option("--question", "-q", help="EXPRESSION is a plain-language question in Chinese or "
                                           "English, e.g. 最近三个月没买过东西、抱怨物流的高价值客户 (docs/questions.md).")] = False,
    channel: Annotated[str | None, typer.Option(
        help="The channel it is for (sms, email, push, phone, ads, export): only customers whose consent allows "
             "it are kept. Required with --out.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the audience to .csv or .parquet.")] = None,
    match_keys: Annotated[bool, typer.Option("--match-keys", help="With --channel ads --out: add the SHA-256 of "
                                             "each customer's normalised e-mail and phone (needs the secret key).")] = False,
) -> None:
    """Select customers with the filter language; print the count or export them."""
    from shoplens.consent import EXCLUDED_REASONS, ConsentError, Ledger, select
    from shoplens.serving.audience import compile_filter, parse_text, to_text
    from shoplens.serving.profile_store import AUDIENCE_FIELDS, EXPORT_COLUMNS, ProfileReader

    cfg = _load(config)
    if question:
        from shoplens.llm import provider_from_config
        from shoplens.serving.nl import question_to_filter

        tree, explanation = question_to_filter(provider_from_config(cfg), expression)
        console.print(explanation, soft_wrap=True)
    else:
        tree = parse_text(expression)
    where, params = compile_filter(tree, AUDIENCE_FIELDS)
    if out is not None and channel is None:
        raise ConsentError("an export names its --channel (sms, email, push, phone, ads or export): only customers "
                           "who consented to it are exported")
    if match_keys and (out is None or channel != "ads"):
        raise ConsentError("--match-keys goes only into an export for ad platforms: --channel ads --out FILE")
    reader = ProfileReader(cfg.store_path)
    db = reader.db()
    chosen = select(db, where, params, channel, Ledger(cfg.store_path), reader.snapshot_id())
    console.print(f"filter: {to_text(tree)}", soft_wrap=True)
    console.print(f"{chosen.kept:,} customers" + (f" for {channel}" if channel else ""))
    for reason, n in chosen.excluded.items():
        if n:
            en, zh = EXCLUDED_REASONS[reason]
            console.print(f"  left out {n:,}: {en} / 排除 {n:,} 人：{zh}", soft_wrap=True)
    if out is not None:
        import pandas as pd

        frame = pd.read_sql_query(f"SELECT {EXPORT_COLUMNS} FROM flat WHERE {chosen.where} ORDER BY customer_id", db,
                                  params=chosen.params)
        if match_keys:
            from shoplens.privacy import optional_keys
            from shoplens.serving.match_keys import MATCH_COLUMNS
            from shoplens.serving.match_keys import match_keys as hashed_keys

            hashed = hashed_keys(cfg.store_path, optional_keys(cfg), list(frame.customer_id))
            for col in MATCH_COLUMNS:
                frame[col] = [hashed[c][col] for c in frame.customer_id]
        from shoplens.erasure import register_export

        if out.suffix == ".parquet":
            frame.to_parquet(out, index=False)
        else:
            frame.to_csv(out, index=False)
        register_export(cfg.store_path, out, "parquet" if out.suffix == ".parquet" else "csv")
        console.print(f"wrote {out} (registered: 'shoplens forget' rewrites it without an erased customer)", soft_wrap=True)


def _consent_ref(cfg: Any, ref: str) -> tuple[Any, str]:
    """The reader and the pseudonym for a customer reference (c_..., or the shop's id with the key)."""
    from shoplens.errors import NotFoundError
    from shoplens.privacy import candidate_pseudonyms, optional_keys
    from shoplens.serving.reader import ProfileReader

    reader = ProfileReader(cfg.store_path)
    for cid in candidate_pseudonyms(ref, optional_keys(cfg)):
        if reader.query("SELECT 1 FROM consent_state WHERE customer_id = ?", (cid,)):
            return reader, cid
    raise NotFoundError(f"customer '{ref}' not found in the published snapshot")


@consent_app.command("show")
def consent_show(
    customer_id: Annotated[str, typer.Argument(help="Pseudonymised id (c_...) or, with the secret key, the shop's own id.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """A customer's consent now, per purpose and channel, and its history."""
    from shoplens.consent import Ledger, consent_view

    cfg = _load(config)
    reader, cid = _consent_ref(cfg, customer_id)
    view = consent_view(reader, Ledger(cfg.store_path), cid)
    if as_json:
        print(json.dumps(view, ensure_ascii=False, indent=2))
        return
    t = Table(title=f"授权 consent {cid}")
    for col in ("purpose / 用途", "now / 当前", "at the build / 构建时"):
        t.add_column(col)
    for key, now in view["consent"].items():
        t.add_row(key, "granted 已授权" if now else "denied 未授权", "granted" if view["at_build"][key] else "denied")
    console.print(t)
    h = Table(title="history / 记录")
    for col in ("at", "purpose", "channel", "status", "source", "recorded"):
        h.add_column(col)
    for r in view["history"]:
        h.add_row(r["at"], r["purpose"], r["channel"], r["status"], escape(str(r["source"] or "")), r["recorded"])
    console.print(h)


@consent_app.command("set")
def consent_set(
    customer_id: Annotated[str, typer.Argument(help="Pseudonymised id (c_...) or, with the secret key, the shop's own id.")],
    purpose: Annotated[str, typer.Option(help="profiling, personalisation, marketing or sharing.")],
    status: Annotated[str, typer.Option(help="granted or withdrawn.")],
    channel: Annotated[str, typer.Option(help="any, or for marketing sms/email/push/phone, for sharing ads/export.")] = "any",
    source: Annotated[str, typer.Option(help="Where it was given or withdrawn.")] = "cli",
    config: ConfigOpt = DEFAULT_CONFIG,
) -> None:
    """Record a grant or withdrawal now: serving honours it at once, the next build folds it in."""
    from shoplens.consent import record_change

    cfg = _load(config)
    _reader, cid = _consent_ref(cfg, customer_id)
    change = record_change(cfg.store_path, cid, purpose, channel, status, source, cfg.defaults.timezone)
    console.print(f"recorded: {cid} {change.purpose}/{change.channel} {change.status} at {change.consent_ts} "
                  "(in effect now for the API and audiences; in the store at the next build)", soft_wrap=True)


@app.command()
def report(
    config: ConfigOpt = DEFAULT_CONFIG,
    out: Annotated[Path, typer.Option(help="HTML file to write.")] = Path("shoplens-report.html"),
    data_use: Annotated[bool, typer.Option("--data-use", help="Print the data-use disclosure instead: per purpose, "
                                           "the data and models that serve it, consents and exclusions.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --data-use: print it as JSON.")] = False,
) -> None:
    """Write a self-contained HTML report (opens offline in any browser)."""
    from shoplens.report import build_report
    from shoplens.store import Store

    cfg = _load(config)
    if data_use:
        from shoplens.consent import data_use_report

        with Store.for_config(cfg, read_only=True) as store:
            rows = data_use_report(store, cfg)
        if as_json:
            print(json.dumps(rows, ensure_ascii=False, indent=2))
            return
        t = Table(title="数据使用说明 data use (per purpose)", show_lines=True)
        for col in ("purpose / 用途", "serves / 用于", "data & models / 数据与模型", "consented / 已授权",
                    "not consented / 未授权"):
            t.add_column(col)
        for r in rows:
            t.add_row(r["purpose"], f"{r['en']}\n{r['zh']}", "; ".join(r["data"] + r["models"]),
                      "\n".join(f"{k}: {v:,}" for k, v in r["consented"].items()),
                      "\n".join(f"{k}: {v:,}" for k, v in r["not_consented"].items()))
        console.print(t)
        console.print(f"default without a record / 无记录时默认: {json.dumps(cfg.consent.defaults)}; customers "
                      f"without profiling consent: {cfg.consent.without_profiling} (not profiled)", soft_wrap=True)
        return
    with Store.for_config(cfg, read_only=True) as store, err_console.status("writing report"):
        path = build_report(store, out)
    from shoplens.erasure import register_export

    register_export(cfg.store_path, path, "report")
    console.print(f"wrote {path}")


