"""The build pipeline: every registered stage keeps its contract (declared schema, empty
in gives empty out, a disabled stage says why); an unchanged re-run reuses every stage;
a changed setting re-runs that stage and what depends on it, nothing else; publishing
is two-phase, so a kill at any point leaves the store and the serving pointer agreeing."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest

from shoplens.build import build, build_plan
from shoplens.config import load_config
from shoplens.engine.base import Snapshot
from shoplens.engine.duckdb import DuckDBEngine
from shoplens.features.rfm import load_rules
from shoplens.jobs import Summary
from shoplens.pipeline import runner
from shoplens.pipeline.registry import default_stages
from shoplens.pipeline.runner import check_schema, order
from shoplens.pipeline.stage import BuildContext
from shoplens.serving.reader import current_name, profiles_dir, serving_files
from shoplens.store import Store, segments_dir


@pytest.fixture
def shop(demo_shop: Summary, tmp_path: Path) -> Path:
    folder = tmp_path / "shop"
    shutil.copytree(demo_shop.folder, folder)
    return folder


def _edit(folder: Path, section: str, line: str) -> None:
    """Add ``line`` to ``[section]`` of the shop's config (creating the section)."""
    path = folder / "shoplens.toml"
    text = path.read_text("utf-8")
    head = f"[{section}]\n"
    path.write_text(text.replace(head, head + line + "\n") if head in text else text + f"\n{head}{line}\n", "utf-8")


def _actions(folder: Path, force: bool = False) -> dict[str, str]:
    cfg = load_config(folder / "shoplens.toml")
    with Store.for_config(cfg) as st:
        result = build(cfg, st, force=force)
    return {r.stage: r.action for r in result.stages}


def test_every_stage_keeps_its_contract_on_empty_input(tmp_path: Path) -> None:
    """Run each registered stage, in order, on a store with no rows: each writes every
    table it declares, with the declared schema, and no rows."""
    (tmp_path / "shoplens.toml").write_text('[store]\npath = "s.duckdb"\n[text]\nembedder = "hash"\n', "utf-8")
    cfg = load_config(tmp_path / "shoplens.toml")
    day = date(2024, 1, 1)
    with Store.for_config(cfg) as st:
        engine = DuckDBEngine(st)
        snap = Snapshot(st.begin_snapshot(day, "test", "test"), day)
        ctx = BuildContext(cfg, engine, snap, load_rules())
        for stage in order(default_stages()):
            assert stage.skip_reason(cfg) is None, f"{stage.name} is skipped by default"
            stage.run(ctx)
            rows = check_schema(engine, ctx, stage)  # raises on a missing table or another schema
            assert set(rows) == {t.name for t in stage.makes}
            data = {k: n for k, n in rows.items() if k != "model_artifacts"}
            assert all(n == 0 for n in data.values()), (stage.name, rows)
        # with nothing to fit, the only artifacts are the reasons each model was skipped
        names = [r[0] for r in st.con.execute(f"SELECT name FROM {snap.schema}.model_artifacts").fetchall()]
        assert names and all(n.startswith("skipped:") for n in names)


def test_a_disabled_stage_gives_its_reason(tmp_path: Path) -> None:
    (tmp_path / "shoplens.toml").write_text(
        "[text]\nenabled = false\n[predictions]\nenabled = false\n[segments]\nenabled = false\n", "utf-8")
    cfg = load_config(tmp_path / "shoplens.toml")
    reasons = {s.name: s.skip_reason(cfg) for s in default_stages()}
    assert reasons["text"] and "[text]" in reasons["text"]
    assert reasons["predictions"] and "[predictions]" in reasons["predictions"]
    assert reasons["segments"] and "[segments]" in reasons["segments"]
    assert reasons["customers"] is None and reasons["features"] is None


def test_stages_are_ordered_by_what_they_read() -> None:
    names = [s.name for s in order(list(reversed(default_stages())))]
    assert names.index("customers") < names.index("features") < names.index("predictions") < names.index("segments")
    assert names.index("text") < names.index("predictions")


def test_unchanged_rerun_reuses_every_stage_and_a_changed_setting_reruns_only_what_depends_on_it(shop: Path) -> None:
    first = _actions(shop, force=True)
    assert first == {s.name: "ran" for s in default_stages()}
    cfg = load_config(shop / "shoplens.toml")
    with Store.for_config(cfg) as st:
        result = build(cfg, st)
        ran = st.con.execute("SELECT sum(seconds) FROM build_stages WHERE snapshot_id = ?",
                             [result.snapshot_id - 1]).fetchall()[0][0]
    assert {r.stage: r.action for r in result.stages} == dict.fromkeys(first, "reused")
    assert sum(r.seconds for r in result.stages) < ran  # copying a table is cheaper than computing it
    assert all(r.reason.startswith("unchanged since snapshot") for r in result.stages)

    # recommend reads the segments (their popular lists) and the predictions (CLV, churn)
    _edit(shop, "recommend", "candidates = 50")
    assert _actions(shop) == {"consent": "reused", "customers": "reused", "features": "reused", "text": "reused",
                              "predictions": "reused", "segments": "reused", "recommend": "ran", "risk": "reused",
                              "insight": "reused", "demand": "reused"}
    _edit(shop, "segments", "k_max = 5")
    assert _actions(shop) == {"consent": "reused", "customers": "reused", "features": "reused", "text": "reused",
                              "predictions": "reused", "segments": "ran", "recommend": "ran", "risk": "reused",
                              "insight": "ran", "demand": "ran"}
    _edit(shop, "predictions", "horizon_days = 60")
    assert _actions(shop) == {"consent": "reused", "customers": "reused", "features": "reused", "text": "reused",
                              "predictions": "ran", "segments": "ran", "recommend": "ran", "risk": "reused",
                              "insight": "ran", "demand": "ran"}
    _edit(shop, "text", "n_keywords = 4")
    assert _actions(shop) == {"consent": "reused", "customers": "reused", "features": "reused", "text": "ran",
                              "predictions": "ran", "segments": "ran", "recommend": "ran", "risk": "ran",
                              "insight": "ran", "demand": "ran"}
    # switching a stage off changes what its readers see: they re-run, never reuse
    _edit(shop, "text", "enabled = false")
    assert _actions(shop) == {"consent": "reused", "customers": "reused", "features": "reused", "text": "skipped",
                              "predictions": "ran", "segments": "ran", "recommend": "ran", "risk": "ran",
                              "insight": "ran", "demand": "ran"}


def test_plan_says_why_each_stage_runs(shop: Path) -> None:
    cfg = load_config(shop / "shoplens.toml")
    with Store.for_config(cfg) as st:
        build(cfg, st)
        with st.transaction() as con:  # one new order: every stage reading orders must re-run
            con.execute("UPDATE orders SET amount = amount + 1 WHERE order_id = (SELECT min(order_id) FROM orders)")
        _day, steps = build_plan(cfg, st)
    plan = {s.stage: (s.action, s.reason) for s in steps}
    assert plan["features"] == ("run", "input changed: orders")
    assert plan["text"][0] == "reuse" and plan["customers"][0] == "reuse"
    assert plan["predictions"][0] == "run" and "customer_features" in plan["predictions"][1]


class _Killed(BaseException):
    """What a kill at a fault point leaves: nothing after it runs."""


def _kill_at(monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    def pause(at: str) -> None:
        if at == point:
            raise _Killed(point)
    monkeypatch.setattr(runner, "_fault_pause", pause)


@pytest.mark.parametrize("point", ["published", "completed"])
def test_a_kill_while_publishing_leaves_store_and_serving_agreeing(shop: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   point: str) -> None:
    cfg = load_config(shop / "shoplens.toml")
    folder = profiles_dir(cfg.store_path)
    with Store.for_config(cfg) as st:
        before = st.require_snapshot()
    served = current_name(folder)
    _kill_at(monkeypatch, point)
    with Store.for_config(cfg) as st, pytest.raises(_Killed):
        build(cfg, st, force=True)
    with Store.for_config(cfg) as st:
        now = st.current_snapshot()
    if point == "published":  # the new file is written, the store has not switched: neither has CURRENT
        assert now == before and current_name(folder) == served
    else:  # the store switched, CURRENT not yet: the previous snapshot is still complete and served
        assert now == before + 1 and current_name(folder) == served
        from shoplens.cli.tools import _reconcile

        _reconcile(cfg)  # what `shoplens serve` does first: serve what the store calls current
        assert current_name(folder) == f"snap_{now}.sqlite"
    monkeypatch.undo()
    with Store.for_config(cfg) as st:
        result = build(cfg, st)
        live = set(st.live_snapshots())
    assert current_name(folder) == f"snap_{result.snapshot_id}.sqlite"
    assert {snap for snap, _p in serving_files(folder)} == live  # the orphan of the killed build is gone
    maps = {int(p.name.split("-")[0].removeprefix("snap_")) for p in segments_dir(cfg.store_path).glob("snap_*-map.png")}
    assert maps <= live


def test_old_serving_files_and_maps_are_pruned_with_their_snapshots(shop: Path) -> None:
    _edit(shop, "store", "keep_snapshots = 1")
    for _ in range(2):
        _actions(shop)
    cfg = load_config(shop / "shoplens.toml")
    with Store.for_config(cfg) as st:
        live = st.live_snapshots()
    assert len(live) == 1
    assert [snap for snap, _p in serving_files(profiles_dir(cfg.store_path))] == live
    assert sorted(p.name for p in segments_dir(cfg.store_path).glob("snap_*-map.*")) == [
        f"snap_{live[0]}-map.html", f"snap_{live[0]}-map.png"]
