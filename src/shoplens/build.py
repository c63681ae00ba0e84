"""``shoplens build``: compute features into a new snapshot and make it current at the end.

Each step writes one table of schema ``snap_<id>`` (autocommitted, so a long build
holds no giant transaction); the snapshot becomes current in one final transaction.
A build that dies midway leaves the previous snapshot current and readable; the next
build marks the leftover as failed and drops it.

``SHOPLENS_FAULT_PAUSE=<step>:<seconds>`` pauses after a step (the kill test uses it
to stop a real build process at a known point).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import ibis

from shoplens import __version__
from shoplens.config import Config
from shoplens.errors import StoreError
from shoplens.features.behaviour import Tables, behaviour_features
from shoplens.features.rfm import load_rules
from shoplens.store import Store

Step = Callable[[str, int, int], None]  # (step name, index, total)


@dataclass
class BuildResult:
    snapshot_id: int
    as_of: date
    n_customers: int
    seconds: float
    skipped: dict[str, str] = field(default_factory=dict)  # model -> why it could not be fitted
    text: dict[str, object] = field(default_factory=dict)  # the text step's summary


def resolve_as_of(cfg: Config, store: Store, as_of: date | None = None) -> date:
    """The build's reference day: given, configured, or the day after the last activity."""
    if as_of is not None:
        return as_of
    if cfg.features.as_of != "auto":
        return cfg.features.as_of  # type: ignore[return-value]
    last = store.scalar(
        "SELECT max(ts) FROM (SELECT max(order_ts) AS ts FROM orders UNION ALL SELECT max(event_ts) FROM events)"
    )
    if last is None:
        raise StoreError("nothing to build: the store has no orders and no events (run 'shoplens ingest' first)")
    return (last + timedelta(days=1)).date()


def _fault_pause(step: str) -> None:
    spec = os.environ.get("SHOPLENS_FAULT_PAUSE", "")
    if spec.partition(":")[0] == step:
        print(f"fault-injection: paused after {step}", file=sys.stderr, flush=True)
        time.sleep(float(spec.partition(":")[2] or 60))


def _predictions(cfg: Config, store: Store, schema: str, day: date, snap: int, rules: Any) -> dict[str, str]:
    """CLV / propensity / churn into ``customer_predictions`` (NULLs when disabled or skipped)."""
    from shoplens.models.artifacts import fingerprint, save_models
    from shoplens.models.predict import PREDICTION_COLUMNS, PredictionResult, predict

    result = predict(store, schema, day, cfg.predictions, rules) if cfg.predictions.enabled else None
    if result is None:
        import pandas as pd

        result = PredictionResult(pd.DataFrame(columns=list(PREDICTION_COLUMNS[1:])), skipped={"all": "disabled in [predictions]"})
    frame = result.frame.reset_index(names="customer_id")
    for col in PREDICTION_COLUMNS[1:-2]:
        frame[col] = frame[col].astype("float64")
    frame["churn_reasons"] = frame["churn_reasons"].astype("string")
    frame["churn_reasons_zh"] = frame["churn_reasons_zh"].astype("string")
    store.con.register("_predictions", frame)
    cols = ", ".join(f"p.{c}" for c in PREDICTION_COLUMNS[1:])
    store.con.execute(
        f"CREATE TABLE {schema}.customer_predictions AS SELECT c.customer_id, {cols} "
        f"FROM {schema}.customers c LEFT JOIN _predictions p USING (customer_id)"
    )
    store.con.unregister("_predictions")
    last_ingest = store.scalar("SELECT last_ingest_id FROM snapshots WHERE snapshot_id = ?", [snap])
    save_models(store, schema, result.models, result.skipped, fingerprint(cfg.fingerprint(), last_ingest, __version__))
    return result.skipped


def _check_folders(cfg: Config, store: Store) -> None:
    """Fail in a second, not after the whole build, when an output folder is not writable."""
    from shoplens.fsutil import check_writable
    from shoplens.serving.profile_store import profiles_dir

    path = Path(store.path)
    folders = [path.parent, profiles_dir(path), path.parent / (path.stem + ".segments")]
    if cfg.text.enabled and cfg.text.cache:
        folders.append(cfg.resolve(cfg.text.cache).parent)
    check_writable(*folders)


def build(cfg: Config, store: Store, as_of: date | None = None, on_step: Step | None = None) -> BuildResult:
    """Build a complete snapshot of per-customer features; return its id and size."""
    t0 = time.perf_counter()
    if not store.scalar("SELECT count(*) FROM customers"):
        raise StoreError("nothing to build: the store has no customers (run 'shoplens ingest' first)")
    rules_src = cfg.features.rfm_rules
    rules = load_rules(rules_src if rules_src == "default" else str(cfg.resolve(rules_src)))
    day = resolve_as_of(cfg, store, as_of)
    _check_folders(cfg, store)
    cutoff = datetime(day.year, day.month, day.day)
    snap = store.begin_snapshot(day, cfg.fingerprint(), __version__)
    schema = f"snap_{snap}"
    backend = store.ibis()
    tables = Tables(*(backend.table(n) for n in ("customers", "orders", "order_items", "products", "events")))
    features, categories = behaviour_features(tables, cutoff, rules)
    dims = "customer_id, signup_at, gender, birth_year, city, region, country, channel"
    steps: list[tuple[str, str]] = [
        ("customers", f"SELECT {dims} FROM customers"),
        ("customer_features", ibis.to_sql(features, dialect="duckdb")),
        ("customer_category_shares", ibis.to_sql(categories, dialect="duckdb")),
    ]
    total = len(steps) + 3
    for i, (name, sql) in enumerate(steps):
        if on_step:
            on_step(name, i, total)
        store.con.execute(f"CREATE TABLE {schema}.{name} AS {sql}")
        _fault_pause(name)
    from shoplens.text.stage import text_step

    step_i = len(steps)
    text_summary = text_step(cfg, store, schema, (lambda info: on_step(info, step_i, total)) if on_step else None)
    _fault_pause("text")
    if on_step:
        on_step("customer_predictions", len(steps) + 1, total)
    skipped = _predictions(cfg, store, schema, day, snap, rules)
    _fault_pause("customer_predictions")
    if on_step:
        on_step("segments", len(steps) + 2, total)
    from shoplens.models.segment_step import segment_snapshot

    skipped |= segment_snapshot(cfg, store, schema)
    n = int(store.scalar(f"SELECT count(*) FROM {schema}.customer_features"))
    store.con.execute(f"CREATE INDEX idx_{schema}_cf ON {schema}.customer_features (customer_id)")
    if on_step:
        on_step("publish profiles", total, total + 1)
    from shoplens.serving.profile_store import profiles_dir, prune_serving, publish

    store.con.execute("UPDATE snapshots SET finished_at = now() WHERE snapshot_id = ?", [snap])
    publish(store, snap, Path(store.path))
    store.complete_snapshot(snap, n)
    store.prune_snapshots(cfg.store.keep_snapshots)
    prune_serving(profiles_dir(Path(store.path)), cfg.store.keep_snapshots)
    if on_step:
        on_step("done", total, total)
    return BuildResult(snap, day, n, time.perf_counter() - t0, skipped, text_summary)
