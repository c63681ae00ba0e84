"""The CLI end to end, as a user runs it: real processes, exit codes, messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shoplens.jobs import Summary


def shoplens(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shoplens.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, env=env)


def test_demo_then_profile_json(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    run = shoplens("demo", "--customers", "120", "--seed", "3", "--out", str(out), "--json")
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    planted = len({line.split(",")[0] for line in (out / "risk_truth.csv").read_text().splitlines()[1:]})
    assert planted >= 10  # accounts with abuse patterns, beside the 120 ordinary ones
    assert summary["customers"] == 120 + planted - summary["not_profiled"] and summary["not_profiled"] >= 0
    orders = [r for r in summary["ingest"] if r["table"] == "orders"][0]
    assert orders["quarantined"] >= 4  # the demo's deliberate export faults
    assert "build snapshot" in run.stderr  # progress is shown
    cid = summary["example_customer"]
    prof = shoplens("profile", cid, "--json", "--config", str(out / "shoplens.toml"))
    assert prof.returncode == 0, prof.stderr
    doc = json.loads(prof.stdout)
    assert doc["customer_id"] == cid and doc["behaviour"]["rfm"]["n_orders"] >= 1
    assert doc["provenance"]["snapshot_id"] == summary["snapshot_id"]
    assert doc["segment"]["name"] and isinstance(doc["segment"]["id"], int)
    pred = doc["predictions"]
    assert pred["clv"] > 0 and 0 <= pred["churn_risk"] <= 1 and 0 <= pred["p_alive"] <= 1
    assert pred["churn_risk"] == pytest.approx(1 - pred["purchase_propensity"], abs=1e-3)
    assert isinstance(pred["churn_reasons"], list) and len(pred["churn_reasons"]) == len(pred["churn_reasons_zh"])
    # the shop's own id works too, through the keyed pseudonym
    raw = (out / "orders.csv").read_text().splitlines()[1].split(",")[1]
    assert json.loads(shoplens("profile", raw, "--json", "--config", str(out / "shoplens.toml")).stdout)["customer_id"].startswith("c_")
    # running the demo again re-uses the files: ingest is idempotent, a new snapshot is built
    again = shoplens("demo", "--out", str(out), "--json")
    second = json.loads(again.stdout)
    assert second["snapshot_id"] == summary["snapshot_id"] + 1
    assert all(r["skipped"] for r in second["ingest"])
    assert second["tables"] == summary["tables"]


def test_unknown_customer_is_a_clear_error(demo_shop: Summary) -> None:
    run = shoplens("profile", "nobody", "--config", str(demo_shop.folder / "shoplens.toml"))
    assert run.returncode == 2
    assert "customer 'nobody' not found in the published profiles" in run.stderr
    assert "Traceback" not in run.stderr


def test_missing_config_and_missing_file_exit_nonzero(tmp_path: Path) -> None:
    run = shoplens("ingest", "--config", str(tmp_path / "none.toml"))
    assert run.returncode == 2 and "config file not found" in run.stderr
    (tmp_path / "shoplens.toml").write_text('[[sources]]\ntable = "orders"\npath = "gone.csv"\n')
    run = shoplens("ingest", cwd=tmp_path)
    assert run.returncode == 2 and "gone.csv: file not found" in run.stderr and "Traceback" not in run.stderr


def test_init_status_quarantine_and_help(tmp_path: Path, demo_shop: Summary) -> None:
    no_env_key = {k: v for k, v in os.environ.items() if k != "SHOPLENS_SECRET_KEY"}
    no_env_key["SHOPLENS_KEY_DIR"] = str(tmp_path / "keys")
    run = shoplens("init", str(tmp_path / "new"), env=no_env_key)
    assert run.returncode == 0 and (tmp_path / "new" / "shoplens.toml").exists()
    (key,) = (tmp_path / "keys").glob("new-*.key")  # outside the shop folder: copying the shop never copies it
    assert oct(key.stat().st_mode)[-3:] == "600" and str(key) in run.stdout
    assert not list((tmp_path / "new").rglob("*.key"))
    cfg = str(demo_shop.folder / "shoplens.toml")
    status = shoplens("status", "--config", cfg)
    assert status.returncode == 0 and "(current)" in status.stdout
    q = shoplens("quarantine", "--config", cfg, "--table", "orders")
    assert q.returncode == 0 and "amount" in q.stdout
    for cmd in ([], ["ingest"], ["build"], ["profile"], ["datasets"], ["demo"], ["demo-data"], ["evaluate", "predictions"]):
        h = shoplens(*cmd, "--help")
        assert h.returncode == 0 and "Usage" in h.stdout, cmd


def test_bad_as_of_is_reported(demo_shop: Summary) -> None:
    run = shoplens("build", "--config", str(demo_shop.folder / "shoplens.toml"), "--as-of", "yesterday")
    assert run.returncode == 2 and "--as-of: expected a date YYYY-MM-DD, found 'yesterday'" in run.stderr
