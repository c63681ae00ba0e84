"""``shoplens build``: run the pipeline's stages into a new snapshot, publish it, and
make it current at the end (see ``shoplens.pipeline.runner`` for reuse, schema checks
and the two-phase publish).

Each stage writes its tables into schema ``snap_<id>``; the snapshot becomes current
only when every table is complete and its serving file verified, so a build that dies
midway leaves the previous snapshot current and readable; the next build marks the
leftover as failed and drops it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from shoplens import __version__
from shoplens.config import Config
from shoplens.consent import ConsentedEngine, import_changes
from shoplens.engine import engine_for
from shoplens.engine.base import Snapshot
from shoplens.engine.duckdb import DuckDBEngine
from shoplens.errors import StoreError
from shoplens.features.rfm import load_rules
from shoplens.pipeline.registry import default_stages
from shoplens.pipeline.runner import (
    BuildResult,
    Planned,
    Step,
    plan,
    publish_snapshot,
    reconcile_serving,
    resolve_as_of,
    run_stages,
)
from shoplens.pipeline.stage import BuildContext, Stage
from shoplens.store import Store, segments_dir

__all__ = ["BuildResult", "Step", "build", "build_plan", "resolve_as_of"]


def _check_folders(cfg: Config, store: Store) -> None:
    """Fail in a second, not after the whole build, when an output folder is not writable."""
    from shoplens.fsutil import check_writable
    from shoplens.serving.profile_store import profiles_dir

    path = Path(store.path)
    folders = [path.parent, profiles_dir(path), segments_dir(path)]
    if cfg.text.enabled and cfg.text.cache:
        folders.append(cfg.resolve(cfg.text.cache).parent)
    check_writable(*folders)


def _require_data(store: Store) -> None:
    if not store.scalar("SELECT count(*) FROM customers"):
        raise StoreError("nothing to build: the store has no customers (run 'shoplens ingest' first)")


def build_plan(cfg: Config, store: Store, as_of: date | None = None, force: bool = False,
               stages: Sequence[Stage] | None = None) -> tuple[date, list[Planned]]:
    """What ``build`` would do now: per stage, run / reuse / skip and why."""
    _require_data(store)
    day = resolve_as_of(cfg, store, as_of)
    # fingerprints: the catalog's, of what the stages read (customers who consent to profiling)
    return day, plan(cfg, ConsentedEngine(DuckDBEngine(store), cfg), store, stages or default_stages(), day, force)


def build(cfg: Config, store: Store, as_of: date | None = None, on_step: Step | None = None,
          force: bool = False, stages: Sequence[Stage] | None = None) -> BuildResult:
    """Build a complete snapshot of per-customer profiles; return its id and size."""
    t0 = time.perf_counter()
    _require_data(store)
    rules_src = cfg.features.rfm_rules
    rules = load_rules(rules_src if rules_src == "default" else str(cfg.resolve(rules_src)))
    _check_folders(cfg, store)
    reconcile_serving(store)
    # consent changes recorded since the last build (CLI/API) join the store first; the
    # snapshots begun from now on hold them (ids above every existing one)
    newest = store.scalar("SELECT max(snapshot_id) FROM snapshots") or 0
    import_changes(store, Path(store.path), int(newest) + 1)
    # the report and the data-use disclosure count the unprofiled as the shop configured
    store.con.execute("INSERT OR REPLACE INTO store_meta VALUES ('consent_without_profiling', ?)",
                      [cfg.consent.without_profiling])
    stages = list(stages or default_stages())
    day, steps = build_plan(cfg, store, as_of, force, stages)
    engine = ConsentedEngine(engine_for(cfg, store), cfg)  # stages see only customers who consent to profiling
    snap = Snapshot(store.begin_snapshot(day, cfg.fingerprint(), __version__), day)
    records = run_stages(BuildContext(cfg, engine, snap, rules), stages, steps, store, on_step)
    n = engine.rows(snap, "customer_features")
    if on_step:
        on_step("publish profiles", len(steps), len(steps) + 1)
    publish_snapshot(cfg, engine, snap.snapshot_id, n)
    if on_step:
        on_step("done", len(steps) + 1, len(steps) + 1)
    skipped = {k: v for r in records for k, v in r.skipped.items()}
    text = next((r.summary for r in records if r.stage == "text"), {})
    everyone = int(store.scalar("SELECT count(*) FROM customers"))
    return BuildResult(snap.snapshot_id, day, n, time.perf_counter() - t0, skipped, text, records,
                       not_profiled=everyone - engine.rows(snap, "customers"))
