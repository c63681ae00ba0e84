"""Erasure leaves no recoverable byte: a byte-level search of every file of a shop
folder (store, WAL, serving files, caches, audit log, exports, report) after
``shoplens forget``; the suppression list keeps the customer out of later ingests; a
kill before compaction is finished by the next open; an unknown id is a 404."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import CONFIG_CO, write_shop
from typer.testing import CliRunner

from shoplens.cli import app
from shoplens.config import load_config
from shoplens.erasure import compact, forget, pending_marker
from shoplens.errors import ConfigError, NotFoundError
from shoplens.ingest.pipeline import ingest
from shoplens.jobs import Summary
from shoplens.privacy import keys_for
from shoplens.serving.access import Access, Principal
from shoplens.store import Store
from shoplens.text.embed import EMBEDDERS, text_key

INPUTS = {"customers.csv", "products.csv", "orders.csv", "order_items.csv", "events.parquet", "texts.jsonl", "consents.csv",
          "shoplens.toml"}
PHONE = re.compile(r"1[3-9]\d{9}")


def _texts(folder: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in (folder / "texts.jsonl").read_text("utf-8").splitlines() if line.strip()]


def _victim(folder: Path) -> tuple[str, dict[str, str]]:
    """A customer with a phone number in a review, orders and a customers.csv row."""
    customers = {r["customer_id"]: r for r in csv.DictReader(io.StringIO((folder / "customers.csv").read_bytes().decode("gb18030")))}
    ordered = {r["customer_id"] for r in csv.DictReader((folder / "orders.csv").open(encoding="utf-8"))}
    for t in _texts(folder):
        if PHONE.search(t["text"]) and t["customer_id"] in ordered and t["customer_id"] in customers:
            return t["customer_id"], customers[t["customer_id"]]
    raise AssertionError("the demo shop has no customer with a phone number in a review")


def _needles(folder: Path, raw: str, row: dict[str, str]) -> dict[str, bytes]:
    cfg = load_config(folder / "shoplens.toml")
    keys = keys_for(cfg)
    cid = keys.pseudonym(raw)
    out = {"raw id": raw, "pseudonym": cid}
    for field in ("phone", "email", "name"):
        if row.get(field) and len(row[field]) >= 4:
            out[field] = row[field]
    for r in csv.DictReader((folder / "orders.csv").open(encoding="utf-8")):
        if r["customer_id"] == raw:
            out[f"order {r['order_id']}"] = r["order_id"]
    for t in _texts(folder):
        if t["customer_id"] == raw:
            out[f"text id {t['text_id']}"] = t["text_id"]
            for m in PHONE.findall(t["text"]):
                out[f"phone in text {m}"] = m
    with Store.for_config(cfg, read_only=True) as st:
        for i, (tok,) in enumerate(st.con.execute(
                "SELECT v.ciphertext FROM vault_text_raw v JOIN texts t USING (text_id) WHERE t.customer_id = ? UNION ALL "
                "SELECT ciphertext FROM vault_customer_pii WHERE customer_id = ?", [cid, cid]).fetchall()):
            out[f"vault token {i}"] = tok
        masked = [r[0] for r in st.con.execute("SELECT text FROM texts WHERE customer_id = ?", [cid]).fetchall()]
        # their own words, where no other customer wrote the same (segment quotes, the report, caches)
        for i, (text,) in enumerate(st.con.execute(
                "SELECT text FROM texts t WHERE customer_id = ? AND length(text) >= 20 AND NOT EXISTS "
                "(SELECT 1 FROM texts o WHERE o.text = t.text AND o.customer_id <> t.customer_id)", [cid]).fetchall()):
            out[f"own words {i}"] = text
    for name, factory in EMBEDDERS.items():
        for i, text in enumerate(masked):
            out[f"{name} cache key {i}"] = text_key(factory.id, text)  # type: ignore[attr-defined]
    return {k: v.encode("utf-8") for k, v in out.items()}


def _search(folder: Path, needles: dict[str, bytes]) -> list[str]:
    hits = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.parent == folder and path.name in INPUTS:
            continue  # the shop's own source files: not ShopLens' to rewrite
        data = path.read_bytes()
        hits += [f"{label} in {path.relative_to(folder)}" for label, n in needles.items() if n in data]
    return hits


@pytest.fixture
def shop(demo_shop: Summary, tmp_path: Path) -> Path:
    folder = tmp_path / "shop"
    shutil.copytree(demo_shop.folder, folder)
    return folder


def test_erasure_leaves_no_recoverable_byte_in_any_file(shop: Path) -> None:
    cfg_path = shop / "shoplens.toml"
    raw, row = _victim(shop)
    needles = _needles(shop, raw, row)
    cid = needles["pseudonym"].decode()
    runner = CliRunner()
    # traces an erasure must reach: audit rows (old ones named raw ids in the path), an
    # export with the customer in it, the report
    access = Access(load_config(cfg_path).store_path)
    access.audit(Principal("ops", "admin"), "GET", f"/profiles/{raw}", cid, 200)
    access.close()
    # consent recorded through the CLI (the ledger and, after the build, the store's
    # consent records) and an e-mail export holding the customer
    for purpose, channel in (("profiling", "any"), ("marketing", "email")):
        res = runner.invoke(app, ["consent", "set", cid, "--purpose", purpose, "--channel", channel, "--status",
                                  "granted", "-c", str(cfg_path)])
        assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["build", "-c", str(cfg_path)])
    assert res.exit_code == 0, res.output
    exports = shop / "exports"
    exports.mkdir()
    for target in (exports / "all.csv", exports / "all.parquet"):
        res = runner.invoke(app, ["audience", "n_orders >= 0", "--channel", "email", "-c", str(cfg_path), "--out",
                                  str(target)])
        assert res.exit_code == 0, res.output
    assert any(cid.encode() in (exports / "all.csv").read_bytes() for _ in (0,))
    res = runner.invoke(app, ["report", "-c", str(cfg_path), "--out", str(shop / "report.html")])
    assert res.exit_code == 0, res.output
    before = _search(shop, needles)
    assert any("shoplens.duckdb" in h for h in before) and any("cache key" in h for h in before), before

    res = runner.invoke(app, ["forget", raw, "-c", str(cfg_path)])
    assert res.exit_code == 0, res.output

    assert _search(shop, needles) == []
    with Store.for_config(load_config(cfg_path), read_only=True) as st:
        assert st.scalar("SELECT count(*) FROM erased_subjects") == 1 + sum(k.startswith("order ") for k in needles)
        assert st.current_snapshot() is not None  # the store still works after compaction
        assert st.scalar("SELECT count(*) FROM customers") > 0


def test_erased_customer_stays_out_of_later_ingests(shop: Path) -> None:
    cfg = load_config(shop / "shoplens.toml")
    raw, _row = _victim(shop)
    keys = keys_for(cfg)
    with Store.for_config(cfg) as st:
        forget(st, raw, keys, cfg)
    orders = [r["order_id"] for r in csv.DictReader((shop / "orders.csv").open(encoding="utf-8")) if r["customer_id"] == raw]
    # the shop exports its customers, orders and order lines again, with a change, so the files are read anew
    for name in ("customers.csv", "orders.csv", "order_items.csv"):
        path = shop / name
        path.write_bytes(path.read_bytes().replace(b"\r\n", b"\n").rstrip(b"\n") + b"\n")
    with Store.for_config(cfg) as st:
        ingest(cfg, st)
        cid = keys.pseudonym(raw)
        assert st.scalar("SELECT count(*) FROM customers WHERE customer_id = ?", [cid]) == 0
        assert st.scalar("SELECT count(*) FROM vault_customer_pii WHERE customer_id = ?", [cid]) == 0
        assert st.scalar("SELECT count(*) FROM orders WHERE customer_id = ?", [cid]) == 0
        erased = st.con.execute("SELECT count(*), count(record_enc) FROM quarantine WHERE reason = 'erased'").fetchall()[0]
        assert erased[0] >= 1 and erased[1] == 0
        # their order lines name no customer, only the erased orders: also "erased", with nothing kept
        lines = st.con.execute("SELECT reason, record_enc, found FROM quarantine WHERE table_name = 'order_items' "
                               "AND field = 'order_id' AND resolved_ingest IS NULL").fetchall()
        assert not [r for r in lines if r[0] != "erased" and any(o in (r[2] or "") for o in orders)]
        assert any(r[0] == "erased" and r[1] is None for r in lines)


def test_unknown_customer_is_not_found_and_changes_nothing(shop: Path) -> None:
    cfg = load_config(shop / "shoplens.toml")
    with Store.for_config(cfg) as st, pytest.raises(NotFoundError):
        forget(st, "NO-SUCH-CUSTOMER", keys_for(cfg), cfg)
    with Store.for_config(cfg, read_only=True) as st:
        assert st.scalar("SELECT count(*) FROM erased_subjects") == 0


def test_a_kill_before_compaction_is_finished_by_the_next_open(shop: Path) -> None:
    cfg = load_config(shop / "shoplens.toml")
    raw, _row = _victim(shop)
    with Store.for_config(cfg) as st:
        st.con.execute("DELETE FROM customers WHERE customer_id = ?", [keys_for(cfg).pseudonym(raw)])
        st.con.execute("CHECKPOINT")
    path = cfg.store_path
    marker = pending_marker(path)
    marker.write_text("compaction pending\n")
    inode = path.stat().st_ino
    with Store.for_config(cfg) as st:
        assert st.scalar("SELECT count(*) FROM customers") > 0
    assert not marker.exists() and path.stat().st_ino != inode  # rewritten into a new file


def test_compaction_keeps_sequences_indexes_and_snapshots(shop: Path) -> None:
    cfg = load_config(shop / "shoplens.toml")
    with Store.for_config(cfg) as st:
        before = {t: st.scalar(f"SELECT count(*) FROM {t}") for t in ("customers", "orders", "quarantine", "snapshots")}
        snap = st.current_snapshot()
        seq = st.scalar("SELECT max(ingest_id) FROM ingest_log")
        compact(st)
        assert {t: st.scalar(f"SELECT count(*) FROM {t}") for t in before} == before
        assert st.current_snapshot() == snap
        assert st.scalar("SELECT nextval('ingest_seq')") == seq + 1


def test_raw_session_ids_stored_by_an_older_version_are_pseudonymised_and_compacted(shop: Path) -> None:
    cfg = load_config(shop / "shoplens.toml")
    with Store.for_config(cfg) as st:  # what an older version stored: the shop's raw id inside the session id
        st.con.execute("UPDATE events SET session_id = 'U99999999-s1' WHERE rowid % 7 = 0")
        st.con.execute("DELETE FROM store_meta WHERE key = 'identifiers_pseudonymised'")  # an older store has no mark
        st.con.execute("CHECKPOINT")
    assert b"U99999999-s1" in cfg.store_path.read_bytes()
    with Store.for_config(cfg) as st:
        ingest(cfg, st)
        assert st.scalar("SELECT count(*) FROM events WHERE session_id NOT LIKE 'c\\_%' ESCAPE '\\'") == 0
    assert b"U99999999-s1" not in cfg.store_path.read_bytes()


def test_segment_quotes_of_an_erased_customer_are_removed(shop: Path) -> None:
    cfg = load_config(shop / "shoplens.toml")
    with Store.for_config(cfg) as st:
        snap = st.require_snapshot()
        quotes = {q for p, c in st.con.execute(f"SELECT praise, complaints FROM snap_{snap}.segments").fetchall()
                  for q in json.loads(p or "[]") + json.loads(c or "[]")}
        quoted = st.con.execute("SELECT customer_id, text FROM texts WHERE list_contains(?, left(text, 200))",
                                [sorted(quotes)]).fetchall()
        assert quoted, "the demo's segments quote no review"
        cid, text = quoted[0]
        report = forget(st, cid, keys_for(cfg), cfg)
        assert report.removed.get("segment quotes", 0) >= 1
        left = [q for p, c in st.con.execute(f"SELECT praise, complaints FROM snap_{snap}.segments").fetchall()
                for q in json.loads(p or "[]") + json.loads(c or "[]")]
        assert text[:200] not in left


SMALL_CUSTOMERS = """\
customer_id,name,phone,city,signup_at
C001,张三,13812345678,上海,2023-01-05 10:00:00
C0010,李四,13912345678,北京,2023-02-01
"""
SMALL_CONFIG = CONFIG_CO


def test_erasure_by_pseudonym_takes_the_quarantined_rows_naming_the_raw_id_and_only_those(tmp_path: Path) -> None:
    orders = ("order_id,customer_id,order_ts,amount\nO1,C001,2024-01-01,5\nO10,C0010,2024-01-02,6\n"
              "O2,C001,2024-01-03,not-a-number\nO3,C0010,2024-01-04,not-a-number\n")
    cfg = write_shop(tmp_path, {"customers.csv": SMALL_CUSTOMERS, "orders.csv": orders}, SMALL_CONFIG)
    keys = keys_for(cfg)
    with Store.for_config(cfg) as st:
        ingest(cfg, st)
        assert st.scalar("SELECT count(*) FROM quarantine") == 2
        forget(st, keys.pseudonym("C001"), keys, cfg)  # by pseudonym: the records hold the raw id
        left = [keys.decrypt(r[0]) for r in st.con.execute("SELECT record_enc FROM quarantine").fetchall()]
        assert len(left) == 1 and "C0010" in left[0] and "O3" in left[0]  # C0010 and O10 are not C001 and O1
        assert st.scalar("SELECT count(*) FROM orders WHERE order_id = 'O10'") == 1
    assert b"C001," not in cfg.store_path.read_bytes()


def test_an_interrupted_erasure_is_finished_later(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    orders = "order_id,customer_id,order_ts,amount\nO1,C001,2024-01-01,5\nO10,C0010,2024-01-02,6\n"
    cfg = write_shop(tmp_path, {"customers.csv": SMALL_CUSTOMERS, "orders.csv": orders}, SMALL_CONFIG)
    keys = keys_for(cfg)
    cid = keys.pseudonym("C001")
    access = Access(cfg.store_path)
    access.audit(Principal("ops", "admin"), "GET", f"/profiles/{cid}", cid, 200)
    access.close()
    with Store.for_config(cfg) as st:
        ingest(cfg, st)

    def killed(*_a: object, **_k: object) -> None:
        raise KeyboardInterrupt  # what a kill between two steps leaves

    import shoplens.erasure as erasure

    monkeypatch.setattr(erasure, "_erase_access", killed)
    with Store.for_config(cfg) as st, pytest.raises(KeyboardInterrupt):
        forget(st, "C001", keys, cfg)
    marker = pending_marker(cfg.store_path)
    assert marker.exists() and b"C001" not in marker.read_bytes() and cid.encode() not in marker.read_bytes()
    monkeypatch.undo()
    with Store.for_config(cfg) as st:  # the next open for writing finishes the job
        assert st.scalar("SELECT count(*) FROM customers") == 1
    assert not marker.exists()
    shop_bytes = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".csv")
    assert cid.encode() not in shop_bytes


def test_new_orders_of_an_erased_customer_keep_their_lines_out(tmp_path: Path) -> None:
    orders = "order_id,customer_id,order_ts,amount\nO1,C001,2024-01-01,5\n"
    config = SMALL_CONFIG + '[[sources]]\ntable = "order_items"\npath = "order_items.csv"\n' \
        '[[sources]]\ntable = "products"\npath = "products.csv"\n'
    files = {"customers.csv": SMALL_CUSTOMERS, "orders.csv": orders, "products.csv": "product_id\nP1\n",
             "order_items.csv": "order_id,line_no,product_id,unit_price\nO1,1,P1,5\n"}
    cfg = write_shop(tmp_path, files, config)
    keys = keys_for(cfg)
    with Store.for_config(cfg) as st:
        ingest(cfg, st)
        forget(st, "C001", keys, cfg)
    # the shop exports a new order of the erased customer, with its line
    (tmp_path / "orders.csv").write_text(orders + "O7,C001,2024-02-01,9\n", encoding="utf-8")
    (tmp_path / "order_items.csv").write_text("order_id,line_no,product_id,unit_price\nO1,1,P1,5\nO7,1,P1,9\n",
                                              encoding="utf-8")
    with Store.for_config(cfg) as st:
        ingest(cfg, st)
        rows = st.con.execute("SELECT table_name, reason, record_enc FROM quarantine WHERE resolved_ingest IS NULL "
                              "ORDER BY table_name").fetchall()
        assert rows and all(r[1] == "erased" and r[2] is None for r in rows), rows
        assert {r[0] for r in rows} >= {"order_items", "orders"}


def test_another_key_is_refused_and_no_key_is_made_for_a_store_with_data(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    orders = "order_id,customer_id,order_ts,amount\nO1,C001,2024-01-01,5\n"
    cfg = write_shop(tmp_path, {"customers.csv": SMALL_CUSTOMERS, "orders.csv": orders}, SMALL_CONFIG)
    with Store.for_config(cfg) as st:
        ingest(cfg, st)
    other = "b" * 43 + "="
    monkeypatch.setenv("SHOPLENS_SECRET_KEY", other)
    with Store.for_config(cfg) as st, pytest.raises(ConfigError, match="not the one this store was built with"):
        ingest(cfg, st, create_key=True)
    monkeypatch.delenv("SHOPLENS_SECRET_KEY")  # and no key where the default says: one is not made up
    monkeypatch.setenv("SHOPLENS_KEY_DIR", str(tmp_path / "keys"))
    with Store.for_config(cfg) as st, pytest.raises(ConfigError, match="no secret key"):
        ingest(cfg, st, create_key=True)
    assert not (tmp_path / "keys").exists()
    with Store.for_config(cfg, read_only=True) as st:
        assert st.scalar("SELECT count(*) FROM customers") == 2
