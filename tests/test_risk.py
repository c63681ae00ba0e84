"""Risk flags: identifiers linked only as keyed hashes, each planted pattern found on a
seed the rules were not set on, flags with facts in the profile, audience and queue,
roles, decisions as labels, and erasure of everything a flag or decision holds."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import pandas as pd
import pytest
from servers import demo_server
from typer.testing import CliRunner

from shoplens.cli import app
from shoplens.jobs import Summary
from shoplens.privacy import Keys, link_sql
from shoplens.profile_schema import RiskFlag
from shoplens.risk.stage import TYPES


def _current(folder: Path) -> tuple[duckdb.DuckDBPyConnection, int]:
    con = duckdb.connect(str(folder / "shoplens.duckdb"), read_only=True)
    return con, con.execute("SELECT snapshot_id FROM current_snapshot").fetchone()[0]


def test_link_hash_normalises_spellings_and_needs_the_key() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE t (x VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?)", [["+86 138-0013-8000"], ["13800138000"], ["139 0000 0000"]])
    phones = [r[0] for r in con.execute(f"SELECT {link_sql('phone', 'x')} FROM t").fetchall()]
    assert phones[0] == phones[1] != phones[2]
    a, b = Keys.from_secret(b"a" * 32), Keys.from_secret(b"b" * 32)
    assert a.link_hash(phones[0]) == a.link_hash(phones[1]) != b.link_hash(phones[0])
    assert a.link_hash(phones[0]) not in (a.pseudonym(phones[0]), a.subject_hash(phones[0]))


def test_identifiers_are_kept_only_as_link_hashes(demo_shop: Summary) -> None:
    folder = demo_shop.folder
    orders = pd.read_csv(folder / "orders.csv")
    con, _ = _current(folder)
    kinds = dict(con.execute("SELECT kind, count(*) FROM customer_links GROUP BY kind").fetchall())
    assert {"phone", "email", "address", "device", "payment"} <= set(kinds)
    assert "device_id" not in [r[0] for r in con.execute("DESCRIBE orders").fetchall()]
    con.close()
    raw = (folder / "shoplens.duckdb").read_bytes()
    for value in orders["device_id"].dropna().unique()[:50].tolist() + orders["payment_ref"].dropna().unique()[:50].tolist():
        assert value.encode() not in raw


# ---- served: profile, audience, queue, decisions, erasure ---------------------------------

@pytest.fixture(scope="module")
def server(demo_shop: Summary, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    with demo_server(demo_shop, tmp_path_factory, "risk") as srv:
        yield srv


def _call(server: dict, method: str, path: str, role: str | None = "analyst", **kw) -> httpx.Response:
    headers = {"X-API-Key": server["keys"][role]} if role else {}
    return httpx.request(method, server["base"] + path, headers=headers, timeout=30, **kw)


def test_queue_profile_and_audience_carry_the_flags(server: dict) -> None:
    q = _call(server, "GET", "/risk", params={"limit": 500})
    assert q.status_code == 200, q.text
    body = q.json()
    assert "eligibility" in body["notice"]
    flags = body["flags"]
    assert flags and all(f["level"] in ("HIGH", "MEDIUM") and f["facts"] for f in flags)
    assert [f["level"] == "HIGH" for f in flags] == sorted((f["level"] == "HIGH" for f in flags), reverse=True)
    linked = next(f for f in flags if f["type"] == "linked_accounts")
    assert linked["linked_with"] and all(c.startswith("c_") for c in linked["linked_with"])
    assert all(c not in json.dumps(linked["facts"]) for c in linked["linked_with"])  # names only when read
    high = next(f for f in flags if f["level"] == "HIGH")
    doc = _call(server, "GET", f"/profiles/{high['customer_id']}").json()
    assert any(x["type"] == high["type"] and x["level"] == "HIGH" for x in doc["risk_flags"])
    for x in doc["risk_flags"]:
        RiskFlag.model_validate(x)
        assert all(f["description"] and f["description_zh"] for f in x["facts"])
    service = _call(server, "GET", f"/profiles/{high['customer_id']}", "service").json()
    assert "risk_flags" not in service
    assert _call(server, "GET", "/risk", "service").status_code == 403
    assert _call(server, "GET", "/risk", None).status_code == 401
    aud = _call(server, "POST", "/audiences", json={"text": f"risk.{high['type']} = 'HIGH'", "page_size": 1000})
    assert aud.status_code == 200, aud.text
    assert high["customer_id"] in aud.json()["customer_ids"]
    assert _call(server, "POST", "/audiences", json={"text": "risk.level = 'HIGH'"}).json()["total"] >= 1
    unflagged = _call(server, "POST", "/audiences", json={"text": "risk.level != 'HIGH'"}).json()["total"]
    everyone = _call(server, "POST", "/audiences", json={"text": "risk.level = 'NONE' OR risk.level != 'NONE'"}).json()["total"]
    high = _call(server, "POST", "/audiences", json={"text": "risk.level = 'HIGH'"}).json()["total"]
    assert unflagged + high == everyone  # customers without a flag are NONE, not NULL
    for bad in ({"type": "nope"}, {"level": "SEVERE"}, {"limit": 0}):
        assert _call(server, "GET", "/risk", params=bad).status_code in (400, 422)


def test_audience_exports_leave_risk_out(server: dict) -> None:
    r = _call(server, "POST", "/audiences", "admin",
              json={"text": "risk.level IN ('HIGH', 'MEDIUM')", "format": "csv", "channel": "email"})
    assert r.status_code == 200, r.text
    assert "risk." not in r.text.splitlines()[0] and "customer_id" in r.text.splitlines()[0]
    cli = CliRunner().invoke(app, ["audience", "risk.level IN ('HIGH', 'MEDIUM')", "--channel", "email", "-c",
                                   str(server["folder"] / "shoplens.toml"),
                                   "--out", str(server["folder"] / "high.csv")])
    assert cli.exit_code == 0, cli.output
    header = (server["folder"] / "high.csv").read_text("utf-8").splitlines()[0]
    assert "risk." not in header and "customer_id" in header


def test_decisions_are_labels_and_erasure_leaves_none(server: dict) -> None:
    flags = _call(server, "GET", "/risk", params={"limit": 500}).json()["flags"]
    first, second = flags[0], flags[1]
    for f, decision in ((first, "confirmed"), (second, "dismissed")):
        r = _call(server, "POST", f"/profiles/{f['customer_id']}/risk/decisions",
                  json={"type": f["type"], "decision": decision, "note": "checked the orders"})
        assert r.status_code == 200, r.text
    assert _call(server, "POST", f"/profiles/{first['customer_id']}/risk/decisions", "service",
                 json={"type": first["type"], "decision": "confirmed"}).status_code == 403
    assert _call(server, "POST", f"/profiles/{first['customer_id']}/risk/decisions",
                 json={"type": first["type"], "decision": "maybe"}).status_code == 400
    assert _call(server, "POST", "/profiles/c_00000000000000000000/risk/decisions",
                 json={"type": "return_abuse", "decision": "confirmed"}).status_code == 404
    queue = {(f["customer_id"], f["type"]) for f in _call(server, "GET", "/risk", params={"limit": 500}).json()["flags"]}
    assert (first["customer_id"], first["type"]) not in queue  # decided: off the queue
    cfg = str(server["folder"] / "shoplens.toml")
    tuned = CliRunner().invoke(app, ["risk", "tune", "-c", cfg])
    assert tuned.exit_code == 0 and first["type"] in tuned.output, tuned.output
    listed = CliRunner().invoke(app, ["risk", "-c", cfg, "--json", "--include-decided", "--limit", "1000"])
    assert listed.exit_code == 0 and first["customer_id"] in listed.output
    # a customer who withdraws profiling since the build is in no queue
    other = second["customer_id"]
    assert _call(server, "POST", f"/profiles/{other}/consent", "admin",
                 json={"purpose": "profiling", "status": "withdrawn", "source": "test"}).status_code == 200
    assert _call(server, "GET", f"/profiles/{other}/risk").status_code == 404
    shown = _call(server, "GET", "/risk", params={"limit": 1000, "include_decided": True}).json()["flags"]
    assert other not in {f["customer_id"] for f in shown}
    assert all(other not in f.get("linked_with", []) for f in shown)
    again = CliRunner().invoke(app, ["risk", "-c", cfg, "--json", "--include-decided", "--limit", "1000"])
    assert other not in again.output
    # erasure: the customer's flags, decisions and links go; nobody else's facts named them
    cid = first["customer_id"]
    assert _call(server, "DELETE", f"/admin/customers/{cid}", "admin").status_code == 200
    access = server["folder"] / "shoplens.access.sqlite"
    with sqlite3.connect(access) as db:
        assert db.execute("SELECT count(*) FROM risk_decisions WHERE customer_id = ?", [cid]).fetchone()[0] == 0
    con, snap = _current(server["folder"])
    assert con.execute("SELECT count(*) FROM customer_links WHERE customer_id = ?", [cid]).fetchone()[0] == 0
    assert con.execute(f"SELECT count(*) FROM snap_{snap}.risk_flags WHERE customer_id = ? OR contains(facts, ?)",
                       [cid, cid]).fetchone()[0] == 0
    con.close()
    assert _call(server, "GET", f"/profiles/{cid}/risk").status_code == 404


def test_planted_patterns_are_found_better_than_the_baseline() -> None:
    """``shoplens evaluate risk`` on seed 5 (the rules were set looking at seed 42 only):
    every type at precision >= 0.8 and recall >= 0.7, above IsolationForest."""
    r = CliRunner().invoke(app, ["evaluate", "risk", "--seeds", "5", "--customers", "1000", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output[r.output.index("{"):])
    rows = {(row["type"], row["method"]): row for row in out["summary"]}
    assert {t for t, _m in rows} == set(TYPES)
    for kind in TYPES:
        ours, base = rows[(kind, "shoplens")], rows[(kind, "isolation_forest")]
        assert ours["truth"] >= 3, kind
        assert ours["precision"] >= 0.8 and ours["recall"] >= 0.7, (kind, ours)
        assert ours["precision"] > (base["precision"] or 0) and ours["roc_auc"] > base["roc_auc"], (kind, ours, base)
    assert out["shuttle"] is None or out["shuttle"]["rows"] == 49097
