"""One runner for every build: orders the stages by what they read and make, decides
for each whether to run it, reuse an earlier snapshot's output or skip it, checks
every written table against its declared schema, records what happened in
``build_stages``, and publishes in two phases.

Reuse: a stage's fingerprint hashes its name, code version, settings and the
fingerprints of its inputs (a canonical table's is a hash of its content; an earlier
stage's output's is that stage's fingerprint). An earlier complete snapshot whose
record for the stage carries the same fingerprint has the same output: its tables are
copied instead of recomputed.

Publishing, in this order, so a kill at any point leaves a consistent state: the
serving file is written and verified; the snapshot is marked complete; ``CURRENT`` is
switched to the new file; old snapshots, serving files and maps are pruned. A build
killed after "complete" but before the switch is finished by the next build
(``reconcile_serving``).

``SHOPLENS_FAULT_PAUSE=<point>:<seconds>`` pauses after a stage (its name) or a
publishing point (``published``, ``completed``); the kill tests use it to stop a real
build process at a known point.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from shoplens import __version__
from shoplens.config import Config
from shoplens.engine.base import Engine, Snapshot
from shoplens.errors import ConfigError, IntegrityError, StoreError
from shoplens.pipeline.stage import BuildContext, Stage, StageReport, empty, settings_hash
from shoplens.store import Store, segments_dir

Step = Callable[[str, int, int], None]  # (what is happening, index, total)
RUN, REUSE, SKIP = "run", "reuse", "skip"


@dataclass
class Planned:
    stage: str
    action: str  # run | reuse | skip
    reason: str
    fingerprint: str
    needs: tuple[str, ...]
    makes: tuple[str, ...]
    settings_hash: str
    inputs: dict[str, str]
    source: int | None = None  # the snapshot whose output is reused
    prior: dict[str, Any] = field(default_factory=dict)  # that snapshot's record (summary, skipped)


@dataclass
class StageRecord:
    stage: str
    action: str  # ran | reused | skipped
    reason: str
    fingerprint: str
    seconds: float
    rows: dict[str, int]
    peak_rss_mb: float
    summary: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass
class BuildResult:
    snapshot_id: int
    as_of: date
    n_customers: int
    seconds: float
    skipped: dict[str, str] = field(default_factory=dict)  # model -> why it could not be fitted
    text: dict[str, object] = field(default_factory=dict)  # the text stage's summary
    stages: list[StageRecord] = field(default_factory=list)
    not_profiled: int = 0  # customers left out for want of profiling consent

    @property
    def profiled_note(self) -> str:
        """``", 28 not profiled (no consent)"`` or nothing."""
        return f" ({self.not_profiled:,} without profiling consent are not profiled)" if self.not_profiled else ""


def order(stages: Sequence[Stage]) -> list[Stage]:
    """Stages in an order where each comes after the stages whose tables it needs
    (registration order among equals). A stage's need for a table it makes itself is
    the canonical table of that name."""
    made = {t.name: s.name for s in stages for t in s.makes}
    deps = {s.name: {made[n] for n in s.needs if n in made and made[n] != s.name} for s in stages}
    by_name = {s.name: s for s in stages}
    out: list[Stage] = []
    done: set[str] = set()
    while len(out) < len(stages):
        ready = [s for s in stages if s.name not in done and deps[s.name] <= done]
        if not ready:
            raise ConfigError(f"build stages depend on each other in a cycle: {sorted(set(by_name) - done)}")
        out.append(ready[0])
        done.add(ready[0].name)
    return out


def _fault_pause(point: str) -> None:
    spec = os.environ.get("SHOPLENS_FAULT_PAUSE", "")
    if spec.partition(":")[0] == point:
        print(f"fault-injection: paused after {point}", file=sys.stderr, flush=True)
        time.sleep(float(spec.partition(":")[2] or 60))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _previous_records(store: Store) -> dict[str, list[dict[str, Any]]]:
    """Records of complete, unpruned snapshots per stage, newest first."""
    if not store.scalar("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main' AND table_name = 'build_stages'"):
        return {}  # a store from before build records, opened read-only (build --plan)
    rows = store.con.execute(
        "SELECT b.stage, b.snapshot_id, b.fingerprint, b.settings_hash, b.inputs, b.summary, b.skipped "
        "FROM build_stages b JOIN snapshots s USING (snapshot_id) "
        "WHERE s.status = 'complete' AND b.action IN ('ran', 'reused') ORDER BY b.snapshot_id DESC").fetchall()
    out: dict[str, list[dict[str, Any]]] = {}
    for stage, snap, fp, sh, inputs, summary, skipped in rows:
        out.setdefault(stage, []).append({"snapshot": snap, "fingerprint": fp, "settings_hash": sh,
                                          "inputs": json.loads(inputs), "summary": json.loads(summary),
                                          "skipped": json.loads(skipped)})
    return out


def _why_run(inputs: dict[str, str], sh: str, last: dict[str, Any] | None) -> str:
    if last is None:
        return "no earlier output"
    if last["settings_hash"] != sh:
        return "its settings or code changed"
    changed = [n for n, fp in inputs.items() if last["inputs"].get(n) != fp]
    return f"input changed: {', '.join(changed)}" if changed else "its settings or code changed"


def plan(cfg: Config, engine: Engine, store: Store, stages: Sequence[Stage], as_of: date,
         force: bool = False) -> list[Planned]:
    """What a build at ``as_of`` would do, stage by stage, and why."""
    snapshot = Snapshot(0, as_of)
    previous = _previous_records(store)
    produced: dict[str, str] = {}  # table -> fingerprint of the stage run that makes it
    canonical: dict[str, str] = {}
    out = []
    for stage in order(stages):
        inputs = {}
        for n in stage.needs:
            if n in produced:
                inputs[n] = produced[n]
            else:
                if n not in canonical:
                    canonical[n] = engine.fingerprint(n)
                inputs[n] = canonical[n]
        sh = settings_hash({"version": stage.version, "shoplens": __version__, "settings": stage.settings(cfg, snapshot)})
        skip = stage.skip_reason(cfg)
        # a skipped stage's (empty) output differs from its output when it runs: what reads it must re-run
        fp = hashlib.sha256(json.dumps([stage.name, sh, inputs, skip], sort_keys=True).encode()).hexdigest()[:16]
        for t in stage.makes:
            produced[t.name] = fp
        names = tuple(t.name for t in stage.makes)
        step = Planned(stage.name, RUN, "", fp, stage.needs, names, sh, inputs)
        history = previous.get(stage.name, [])
        same = next((r for r in history if r["fingerprint"] == fp), None)
        if skip:
            step.action, step.reason = SKIP, skip
        elif force:
            step.reason = "--force"
        elif same is not None and all(engine.exists(Snapshot(same["snapshot"], as_of), t) for t in names):
            step.action, step.source, step.prior = REUSE, same["snapshot"], same
            step.reason = f"unchanged since snapshot {same['snapshot']}"
        else:
            step.reason = _why_run(inputs, sh, history[0] if history else None)
        out.append(step)
    return out


def _record(store: Store, snap: int, rec: StageRecord, step: Planned) -> None:
    store.con.execute(
        "INSERT INTO build_stages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [snap, rec.stage, rec.action, rec.reason, rec.fingerprint, step.settings_hash, json.dumps(step.inputs),
         rec.seconds, json.dumps(rec.rows), rec.peak_rss_mb, json.dumps(rec.summary, default=str),
         json.dumps(rec.skipped)])


def check_schema(engine: Engine, ctx: BuildContext, stage: Stage) -> dict[str, int]:
    """Every table the stage declares exists with exactly its declared schema."""
    rows = {}
    for spec in stage.makes:
        if not engine.exists(ctx.snapshot, spec.name):
            raise StoreError(f"stage '{stage.name}' did not write its table '{spec.name}'")
        want, got = spec.schema_for(ctx.cfg), engine.schema_of(ctx.snapshot, spec.name)
        if not got.equals(want):
            diff = [f"{f.name}: {f.type}" for f in got if want.get_field_index(f.name) < 0 or want.field(f.name).type != f.type]
            missing = [n for n in want.names if n not in got.names]
            raise StoreError(f"stage '{stage.name}' wrote '{spec.name}' with a schema other than declared "
                             f"(unexpected: {diff}; missing: {missing})")
        rows[spec.name] = engine.rows(ctx.snapshot, spec.name)
    return rows


def _reporter(on_step: Step | None, i: int, total: int) -> Callable[[str], None]:
    def report(message: str) -> None:
        if on_step:
            on_step(message, i, total)
    return report


def run_stages(ctx: BuildContext, stages: Sequence[Stage], steps: list[Planned], store: Store,
               on_step: Step | None = None) -> list[StageRecord]:
    by_name = {s.name: s for s in stages}
    total = len(steps) + 1
    records = []
    for i, step in enumerate(steps):
        stage = by_name[step.stage]
        if on_step:
            on_step(f"{stage.name} ({step.action})", i, total)
        ctx.on_info = _reporter(on_step, i, total)
        ctx.on_note = getattr(on_step, "note", ctx.on_info)  # the CLI prints notes above its progress bar
        t0 = time.perf_counter()
        report = StageReport()
        if step.action == SKIP:
            for spec in stage.makes:
                ctx.write(spec, empty(spec.schema_for(ctx.cfg)))
            action = "skipped"
        elif step.action == REUSE:
            assert step.source is not None
            source = Snapshot(step.source, ctx.snapshot.as_of)
            for spec in stage.makes:
                ctx.engine.copy(source, ctx.snapshot, spec.name)
            stage.on_reuse(ctx, source)
            report = StageReport(step.prior["summary"], step.prior["skipped"])
            action = "reused"
        else:
            report = stage.run(ctx)
            action = "ran"
        rows = check_schema(ctx.engine, ctx, stage)
        for spec in stage.makes:
            if spec.index:
                ctx.engine.index(ctx.snapshot, spec.name, spec.key)
        rec = StageRecord(stage.name, action, step.reason, step.fingerprint, round(time.perf_counter() - t0, 3),
                          rows, round(_peak_rss_mb(), 1), report.summary,
                          report.skipped | ({stage.name: step.reason} if step.action == SKIP else {}))
        _record(store, ctx.snapshot.snapshot_id, rec, step)
        records.append(rec)
        _fault_pause(stage.name)
    return records


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


def publish_snapshot(cfg: Config, engine: Engine, snap: int, n: int) -> None:
    """The two-phase publish (see the module docstring)."""
    store = engine.store
    from shoplens.serving.profile_store import profiles_dir, prune_serving, publish, switch_current
    from shoplens.serving.reader import verify

    store.con.execute("UPDATE snapshots SET finished_at = now() WHERE snapshot_id = ?", [snap])
    target = publish(store, snap, Path(store.path))
    if (problem := verify(target)) is not None:
        raise IntegrityError(f"the serving file just written does not verify: {problem}")
    _fault_pause("published")
    store.complete_snapshot(snap, n)
    _fault_pause("completed")
    switch_current(target.parent, target.name)
    store.prune_snapshots(cfg.store.keep_snapshots)
    live = set(store.live_snapshots())
    engine.prune(live)
    prune_serving(profiles_dir(Path(store.path)), live)
    for path in segments_dir(Path(store.path)).glob("snap_*-map.*"):
        m = re.match(r"snap_(\d+)-map\.", path.name)
        if m and int(m.group(1)) not in live:  # pruned, or of a killed build
            path.unlink(missing_ok=True)


def reconcile_serving(store: Store) -> None:
    """A build killed after its snapshot was marked complete but before ``CURRENT``
    was switched: switch now, when that snapshot's serving file verifies."""
    from shoplens.serving.profile_store import profiles_dir, switch_current
    from shoplens.serving.reader import current_name, serving_files, verify

    snap = store.current_snapshot()
    folder = profiles_dir(Path(store.path))
    if snap is None or not folder.exists():
        return
    current = current_name(folder) or ""
    if current.startswith(f"snap_{snap}."):
        return
    for sid, path in serving_files(folder):
        if sid == snap and verify(path) is None:
            switch_current(folder, path.name)
            return

