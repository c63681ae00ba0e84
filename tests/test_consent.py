"""Consent and purpose: the state rules, the build leaving out customers without
profiling consent, channel audiences and exports (API on a real server and CLI), a
withdrawal taking effect at once and at the next build, and a property test that no
audience or export ever holds a customer without the consent its channel needs."""

from __future__ import annotations

import csv
import io
import shutil
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import ibis
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from servers import role_keys, serving

from shoplens.config import ConsentConfig, load_config
from shoplens.consent import KEY_NAMES, KEYS, Change, fold, select, state_expr
from shoplens.jobs import Summary
from shoplens.store import Store

T0 = datetime(2025, 1, 1)


def _state(records: list[tuple[str, str, str, str, int]], cfg: ConsentConfig | None = None,
           people: tuple[str, ...] = ("a", "b")) -> dict[str, dict[str, bool]]:
    con = ibis.duckdb.connect()
    customers = ibis.memtable({"customer_id": list(people)})
    consents = ibis.memtable(pa.table({
        "customer_id": pa.array([r[0] for r in records], pa.string()), "purpose": pa.array([r[1] for r in records], pa.string()),
        "channel": pa.array([r[2] for r in records], pa.string()), "status": pa.array([r[3] for r in records], pa.string()),
        "consent_ts": pa.array([T0 + timedelta(days=r[4]) for r in records], pa.timestamp("us"))}))
    rows = con.to_pyarrow(state_expr(customers, consents, cfg or ConsentConfig())).to_pylist()
    return {r.pop("customer_id"): r for r in rows}


def test_defaults_deny_marketing_and_sharing_and_allow_profiling() -> None:
    s = _state([])
    assert s["a"] == {"profiling": True, "personalisation": True} | {k: False for k in KEY_NAMES[2:]}
    strict = _state([], ConsentConfig(defaults={"profiling": "denied"}))
    assert not strict["a"]["profiling"] and strict["a"]["personalisation"]


def test_the_latest_record_decides_and_any_covers_every_channel() -> None:
    s = _state([("a", "marketing", "any", "granted", 0), ("a", "marketing", "sms", "withdrawn", 5),
                ("b", "marketing", "email", "granted", 1), ("b", "marketing", "any", "withdrawn", 3),
                ("b", "profiling", "any", "withdrawn", 2), ("b", "profiling", "any", "granted", 4)])
    assert s["a"]["marketing_email"] and s["a"]["marketing_push"] and not s["a"]["marketing_sms"]
    assert not s["b"]["marketing_email"]  # withdrawn later on every channel
    assert s["b"]["profiling"]  # withdrawn, then granted again
    # the channel's own record wins a tie with "any" at the same moment
    tie = _state([("a", "marketing", "any", "withdrawn", 1), ("a", "marketing", "sms", "granted", 1)])
    assert tie["a"]["marketing_sms"] and not tie["a"]["marketing_email"]


def test_the_ledger_folds_changes_the_same_way() -> None:
    changes = [Change("a", "marketing", "any", "granted", "2025-01-01 00:00:00", "x"),
               Change("a", "marketing", "sms", "withdrawn", "2025-01-02 00:00:00", "x")]
    state = fold(changes)["a"]
    assert state["marketing_email"] and not state["marketing_sms"] and "profiling" not in state


# ---- the demo shop: build, CLI, API --------------------------------------------------------

@pytest.fixture(scope="module")
def shop(demo_shop: Summary, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("consent") / "shop"
    shutil.copytree(demo_shop.folder, folder)
    return folder


def _served(folder: Path) -> sqlite3.Connection:
    from shoplens.serving.reader import ProfileReader

    return ProfileReader(load_config(folder / "shoplens.toml").store_path).db()


def test_customers_without_profiling_consent_are_not_profiled(shop: Path) -> None:
    cfg = load_config(shop / "shoplens.toml")
    with Store.for_config(cfg, read_only=True) as st:
        snap = st.require_snapshot()
        out = {r[0] for r in st.con.execute(
            f"SELECT customer_id FROM snap_{snap}.customer_consent WHERE NOT profiling").fetchall()}
        assert out, "the demo has customers who withdrew profiling"
        for table in ("customers", "customer_features", "customer_predictions", "customer_segments",
                      "customer_text_features", "text_analysis"):
            ids = {r[0] for r in st.con.execute(f"SELECT DISTINCT customer_id FROM snap_{snap}.{table}").fetchall()}
            assert ids and not ids & out, table
        total = st.scalar(f"SELECT count(*) FROM snap_{snap}.customer_consent")
        assert total == st.scalar("SELECT count(*) FROM customers")  # everyone's consent is known
    db = _served(shop)
    assert not db.execute(f"SELECT count(*) FROM profiles WHERE customer_id IN ({','.join('?' * len(out))})",
                          list(out)).fetchone()[0]
    assert db.execute("SELECT count(*) FROM consent_state").fetchone()[0] == total


@pytest.fixture(scope="module")
def server(shop: Path) -> Iterator[dict]:
    keys = role_keys(shop, prefix="consent")
    with serving(shop) as (base, _proc):
        yield {"base": base, "keys": keys}


def _call(server: dict, method: str, path: str, role: str, body: dict | None = None) -> httpx.Response:
    return httpx.request(method, server["base"] + path, headers={"X-API-Key": server["keys"][role]}, json=body,
                         timeout=20)


def test_an_sms_withdrawal_takes_effect_at_once_and_at_the_next_build(shop: Path, server: dict) -> None:
    """The issue's case: out of the sms audience and export at once, still in analytics
    and in other channels, and still out after the next build (now from the store)."""
    from typer.testing import CliRunner

    from shoplens.build import build
    from shoplens.cli import app

    db = _served(shop)
    cid = db.execute("SELECT s.customer_id FROM consent_state s JOIN flat f USING (customer_id) WHERE "
                     "s.marketing_sms = 1 AND s.marketing_email = 1 AND f.n_orders >= 1 ORDER BY 1").fetchone()[0]
    sms = {"text": "n_orders >= 1", "channel": "sms", "page_size": 1000}
    before = _call(server, "POST", "/audiences", "analyst", sms).json()
    assert cid in before["customer_ids"] and before["consent"]["excluded"]["no_consent"] > 0
    r = _call(server, "POST", f"/profiles/{cid}/consent", "service",
              {"purpose": "marketing", "channel": "短信", "status": "撤回", "source": "app settings"})
    assert r.status_code == 200 and r.json()["consent"]["marketing_sms"] is False
    assert _call(server, "POST", f"/profiles/{cid}/consent", "analyst",
                 {"purpose": "marketing", "channel": "sms", "status": "granted"}).status_code == 403
    after = _call(server, "POST", "/audiences", "analyst", sms).json()
    assert cid not in after["customer_ids"] and after["consent"]["excluded"]["withdrawn_since_build"] == 1
    export = _call(server, "POST", "/audiences", "analyst", sms | {"format": "csv"})
    assert export.status_code == 200 and cid not in {row["customer_id"] for row in csv.DictReader(io.StringIO(export.text))}
    assert '"withdrawn_since_build":1' in export.headers["X-ShopLens-Consent"]
    email = _call(server, "POST", "/audiences", "analyst", sms | {"channel": "email"}).json()
    assert cid in email["customer_ids"]  # other channels are untouched
    analysis = _call(server, "POST", "/audiences", "analyst", {"text": "n_orders >= 1", "page_size": 1000}).json()
    assert cid in analysis["customer_ids"]  # analytics: profiling consent remains
    assert _call(server, "GET", f"/profiles/{cid}", "analyst").status_code == 200
    cli = CliRunner().invoke(app, ["audience", "n_orders >= 1", "--channel", "sms", "-c", str(shop / "shoplens.toml")])
    assert cli.exit_code == 0 and "withdrawn since the last build" in cli.output

    cfg = load_config(shop / "shoplens.toml")
    with Store.for_config(cfg) as st:
        result = build(cfg, st)
    ran = {r.stage for r in result.stages if r.action == "ran"}
    # a marketing change re-runs no profiling stage; recommend reads personalisation from
    # customer_consent, and a stage's output is fingerprinted by its inputs, so it re-runs too
    assert ran == {"consent", "recommend"}
    view = _call(server, "GET", f"/profiles/{cid}/consent", "analyst").json()
    assert view["snapshot_id"] == result.snapshot_id and view["at_build"]["marketing_sms"] is False
    assert any(h["recorded"] == "store" and h["source"].startswith("app settings") for h in view["history"])
    rebuilt = _call(server, "POST", "/audiences", "analyst", sms).json()
    assert cid not in rebuilt["customer_ids"] and rebuilt["consent"]["excluded"]["withdrawn_since_build"] == 0


def test_a_profiling_withdrawal_hides_the_profile_at_once(shop: Path, server: dict) -> None:
    db = _served(shop)
    cid = db.execute("SELECT customer_id FROM flat ORDER BY customer_id DESC").fetchone()[0]
    assert _call(server, "GET", f"/profiles/{cid}", "analyst").status_code == 200
    _call(server, "POST", f"/profiles/{cid}/consent", "admin", {"purpose": "profiling", "status": "withdrawn"})
    assert _call(server, "GET", f"/profiles/{cid}", "analyst").status_code == 404
    assert _call(server, "GET", f"/profiles/{cid}", "service").status_code == 404
    everyone = _call(server, "POST", "/audiences", "analyst", {"text": "n_orders >= 0", "page_size": 1000}).json()
    assert cid not in everyone["customer_ids"]
    assert _call(server, "GET", f"/profiles/{cid}/consent", "analyst").json()["profiled"] is False


def test_exports_name_their_channel_and_bad_consent_input_is_a_clear_400(shop: Path, server: dict) -> None:
    r = _call(server, "POST", "/audiences", "analyst", {"text": "n_orders >= 1", "format": "csv"})
    assert r.status_code == 400 and "channel" in r.json()["error"]
    assert _call(server, "POST", "/audiences", "analyst", {"text": "n_orders >= 1", "channel": "fax"}).status_code == 422
    db_cid = _call(server, "POST", "/audiences", "analyst", {"text": "n_orders >= 1"}).json()["customer_ids"][0]
    for body in ({"purpose": "spying", "status": "granted"}, {"purpose": "profiling", "channel": "sms", "status": "granted"},
                 {"purpose": "marketing", "channel": "sms", "status": "maybe"}):
        r = _call(server, "POST", f"/profiles/{db_cid}/consent", "admin", body)
        assert r.status_code == 400 and r.json()["code"] == "consent", body
    assert _call(server, "GET", "/profiles/c_doesnotexist/consent", "analyst").status_code == 404
    import time

    from shoplens.serving.access import access_path

    time.sleep(0.3)  # the audit commits in groups
    with sqlite3.connect(access_path(load_config(shop / "shoplens.toml").store_path)) as db:
        named = db.execute("SELECT count(*) FROM audit WHERE customer_id = 'c_doesnotexist' OR "
                           "instr(path, 'doesnotexist') > 0").fetchone()[0]
    assert named == 0  # the audit names only customers that exist


def test_match_keys_only_for_ad_consent_and_only_hashed(shop: Path, server: dict) -> None:
    import hashlib

    from shoplens.serving.match_keys import normalise_email, normalise_phone

    body = {"text": "n_orders >= 1", "channel": "ads", "format": "csv", "match_keys": True}
    assert _call(server, "POST", "/audiences", "analyst", body).status_code == 403
    assert _call(server, "POST", "/audiences", "admin", body | {"channel": "sms"}).status_code == 400
    r = _call(server, "POST", "/audiences", "admin", body)
    assert r.status_code == 200, r.text
    rows = list(csv.DictReader(io.StringIO(r.text)))
    consented = {c for (c,) in _served(shop).execute("SELECT customer_id FROM consent_state WHERE sharing_ads = 1")}
    assert rows and {x["customer_id"] for x in rows} <= consented
    pii = _call(server, "GET", f"/profiles/{rows[0]['customer_id']}?include_pii=true", "admin").json()["pii"]
    assert rows[0]["email_sha256"] == hashlib.sha256(normalise_email(pii["email"]).encode()).hexdigest()
    assert rows[0]["phone_sha256"] == hashlib.sha256(normalise_phone(pii["phone"]).encode()).hexdigest()
    assert pii["email"] not in r.text and pii["phone"] not in r.text


def test_data_use_report_counts_consents(shop: Path) -> None:
    from typer.testing import CliRunner

    from shoplens.cli import app

    res = CliRunner().invoke(app, ["report", "--data-use", "--json", "-c", str(shop / "shoplens.toml")])
    assert res.exit_code == 0, res.output
    import json

    rows = {r["purpose"]: r for r in json.loads(res.output)}
    assert set(rows) == {"profiling", "personalisation", "marketing", "sharing"}
    m = rows["marketing"]
    assert set(m["consented"]) == {"marketing_sms", "marketing_email", "marketing_push", "marketing_phone"}
    assert all(m["consented"][k] + m["not_consented"][k] == m["customers"] for k in m["consented"])
    assert 0 < rows["profiling"]["not_consented"]["profiling"] < m["customers"] and m["default"] == "denied"


# ---- property: no audience or export holds a customer without the consent it needs ----

CHANNELS = [c for _k, _p, c in KEYS if c != "any"]


def _file(states: list[dict[str, bool]], spend: list[int]) -> sqlite3.Connection:
    """A serving file's ``flat`` (profiled customers only) and ``consent_state``."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE flat (customer_id TEXT PRIMARY KEY, n_orders REAL)")
    db.execute(f"CREATE TABLE consent_state (customer_id TEXT PRIMARY KEY, {', '.join(k + ' INTEGER' for k in KEY_NAMES)})")
    for i, (state, n) in enumerate(zip(states, spend, strict=True)):
        cid = f"c_{i:04d}"
        if state["profiling"]:
            db.execute("INSERT INTO flat VALUES (?, ?)", [cid, n])
        db.execute(f"INSERT INTO consent_state VALUES (?, {', '.join('?' * len(KEY_NAMES))})",
                   [cid, *(int(state[k]) for k in KEY_NAMES)])
    return db


class _Ledger:
    def __init__(self, state: dict[str, dict[str, bool]]) -> None:
        self._state = state

    def denied(self, snapshot: int | None, key: str) -> set[str]:
        return {c for c, k in self._state.items() if k.get(key) is False}


@settings(max_examples=60, deadline=None)
@given(states=st.lists(st.fixed_dictionaries({k: st.booleans() for k in KEY_NAMES}), min_size=1, max_size=25),
       channel=st.sampled_from(CHANNELS), threshold=st.integers(0, 3), data=st.data())
def test_no_audience_or_export_holds_a_customer_without_consent(states: list[dict[str, bool]], channel: str,
                                                                threshold: int, data: st.DataObject) -> None:
    from shoplens.consent import channel_key

    spend = data.draw(st.lists(st.integers(0, 4), min_size=len(states), max_size=len(states)))
    withdrawn = data.draw(st.lists(st.sampled_from(KEY_NAMES), max_size=3))
    ledger = {f"c_{i:04d}": {k: False for k in withdrawn} for i in range(len(states)) if i % 2}
    db = _file(states, spend)
    chosen = select(db, "n_orders >= ?", [threshold], channel, _Ledger(ledger), None)  # type: ignore[arg-type]
    key = channel_key(channel)
    kept = chosen.ids(db)
    assert len(kept) == chosen.kept
    for cid in kept:
        i = int(cid[2:])
        assert states[i][key] and states[i]["profiling"] and spend[i] >= threshold
        assert ledger.get(cid, {}).get(key) is not False and ledger.get(cid, {}).get("profiling") is not False
    eligible = [i for i, s in enumerate(states) if s["profiling"] and spend[i] >= threshold]
    assert chosen.matched == len(eligible)
    assert chosen.matched - sum(chosen.excluded.values()) == len(kept)


def test_the_unprofiled_count_in_shop_totals_only_when_configured(shop: Path, tmp_path: Path) -> None:
    from shoplens.build import build
    from shoplens.report import build_report

    pages = {}
    for mode in ("exclude", "aggregate"):
        text = (shop / "shoplens.toml").read_text("utf-8").split("\n[consent]")[0]
        (shop / "shoplens.toml").write_text(text + f'\n[consent]\nwithout_profiling = "{mode}"\n', "utf-8")
        cfg = load_config(shop / "shoplens.toml")
        with Store.for_config(cfg) as st:
            build(cfg, st)
            pages[mode] = build_report(st, tmp_path / f"{mode}.html").read_text("utf-8")
            everyone, profiled = st.scalar("SELECT count(*) FROM customers"), st.scalar(
                f"SELECT count(*) FROM snap_{st.require_snapshot()}.customers")
    assert profiled < everyone
    assert f"{profiled:,} customers," in pages["exclude"] and "not counted or profiled" in pages["exclude"]
    assert f"{everyone:,} customers," in pages["aggregate"] and "counted in these totals only" in pages["aggregate"]
