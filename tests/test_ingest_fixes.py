"""Ingest a person can correct, and that keeps no identifier in clear (issue #11, items 2,
3, 14, 15, 16): pseudonymised session ids, own ids out of free text, the erased
customers' suppression list, re-reading after a config fix, quarantine entries that
resolve, value mappings, unmapped columns and birth dates."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import CONFIG_CO, write_shop
from typer.testing import CliRunner

from shoplens import cli
from shoplens.cli import app
from shoplens.config import load_config
from shoplens.datasets.demo import generate
from shoplens.errors import ConfigError
from shoplens.ingest import ingest, quarantine_report
from shoplens.privacy import keys_for
from shoplens.store import Store

CUSTOMERS = """
customer_id,name,phone,gender,birth_year,city,signup_at
C001,张三,13812345678,男,1990,上海,2023-01-05 10:00:00
C002,Li Si,13912345678,F,1985,北京,2023-02-01
C003,王五,13712345678,female,1970,广州,2023-03-01
"""


def by_table(results: list) -> dict:
    return {r.table: r for r in results}


def raw_id_hits(st: Store, needles: list[str]) -> list[tuple[str, str, str, int]]:
    """Every VARCHAR column of every table in every schema that contains one of ``needles``."""
    cols = st.con.execute(
        "SELECT table_schema, table_name, column_name FROM information_schema.columns "
        "WHERE data_type = 'VARCHAR' AND table_catalog = current_database()"
    ).fetchall()
    assert len(cols) > 30
    hits = []
    for schema, tbl, col in cols:
        n = st.scalar(f'SELECT count(*) FROM "{schema}"."{tbl}" v, unnest(?) AS u(needle) '
                      f'WHERE contains(v."{col}", u.needle)', [needles])
        if n:
            hits.append((schema, tbl, col, int(n)))
    return hits


# ---- item 2: nothing identifying in clear -----------------------------------------------


def test_demo_store_holds_no_raw_customer_id_in_any_column(tmp_path: Path, store_for) -> None:
    folder = tmp_path / "shop"
    generate(folder, customers=60, seed=1)
    with open(folder / "customers.csv", encoding="gb18030") as fh:
        raw_ids = [row["customer_id"] for row in csv.DictReader(fh)]
    with open(folder / "risk_truth.csv", encoding="utf-8") as fh:
        planted = {row["customer_id"] for row in csv.DictReader(fh)}
    assert len(raw_ids) == 60 + len(planted) and planted <= set(raw_ids)
    cfg = load_config(folder / "shoplens.toml")
    st = store_for(cfg)
    results = by_table(ingest(cfg, st))
    assert results["events"].accepted > 1000
    assert raw_id_hits(st, raw_ids) == []
    # session ids are pseudonyms, still one per session
    assert st.scalar("SELECT count(*) FROM events WHERE session_id NOT LIKE 'c\\_%' ESCAPE '\\'") == 0
    assert st.scalar("SELECT count(DISTINCT session_id) FROM events") > 60


def test_own_customer_id_in_free_text_and_rejected_rows_is_replaced(tmp_path: Path, store_for) -> None:
    texts = [
        {"text_id": "T1", "customer_id": "C001", "text": "我是会员C001,订单没到", "created_at": "2024-01-01"},
        {"text_id": "T2", "customer_id": "C002", "text": "member C002 here (C002's order); C00 is not me", "created_at": "2024-01-01"},
    ]
    events = (
        "customer_id,event_ts,event_type,query,session_id\n"
        "C003,2024-01-01 10:00:00,search,C003 的订单,C003-s1\n"
        "C003,2024-01-01 10:00:00,search,too,many,fields\n"
    )
    config = CONFIG_CO.split('[[sources]]\ntable = "orders"')[0] + (
        '[[sources]]\ntable = "texts"\npath = "texts.jsonl"\n[[sources]]\ntable = "events"\npath = "events.csv"\n'
    )
    jsonl = "\n".join(json.dumps(t, ensure_ascii=False) for t in texts) + "\n"
    cfg = write_shop(tmp_path, {"customers.csv": CUSTOMERS, "texts.jsonl": jsonl, "events.csv": events}, config)
    st = store_for(cfg)
    results = by_table(ingest(cfg, st))
    assert (results["texts"].accepted, results["events"].accepted, results["events"].quarantined) == (2, 1, 1)
    assert dict(st.con.execute("SELECT text_id, text FROM texts").fetchall()) == {
        "T1": "我是会员[ID],订单没到", "T2": "member [ID] here ([ID]'s order); C00 is not me"}
    assert st.scalar("SELECT query FROM events") == "[ID] 的订单"
    (reject,) = quarantine_report(st, table_name="events")
    assert reject["reason"] == "unparseable row" and "[ID]" in str(reject["found"]) and "C003" not in str(reject["found"])
    assert raw_id_hits(st, ["C001", "C002", "C003"]) == []


def test_a_customer_row_that_does_not_split_keeps_no_personal_data_in_clear(tmp_path: Path, store_for) -> None:
    # an unquoted comma inside the address: the row has one field too many
    customers = "customer_id,name,address,city\nC001,Li Si,Room 5, 12 Baker St,London\nC002,王五,某路1号,上海\n"
    cfg = write_shop(tmp_path, {"customers.csv": customers}, CONFIG_CO.split('[[sources]]\ntable = "orders"')[0])
    st = store_for(cfg)
    ingest(cfg, st)
    (reject,) = quarantine_report(st, table_name="customers")
    assert reject["reason"] == "unparseable row" and str(reject["found"]).startswith("5 fields")
    assert not any(w in str(reject["found"]) for w in ("Li Si", "Baker", "C001"))
    assert raw_id_hits(st, ["Li Si", "Baker St", "C001"]) == []


# ---- item 3: erasure is not undone by the next ingest --------------------------------------


def test_erased_customer_is_not_brought_back_by_the_next_ingest(tmp_path: Path, store_for) -> None:
    orders = "order_id,customer_id,order_ts,amount\nO1,C001,2024-01-01,5\nO2,C002,2024-01-02,6\n"
    config = CONFIG_CO + '[[sources]]\ntable = "texts"\npath = "texts.csv"\n'
    texts = "text_id,customer_id,text,created_at\nT1,C002,电话13912345678,2024-01-03\n"
    cfg = write_shop(tmp_path, {"customers.csv": CUSTOMERS, "orders.csv": orders, "texts.csv": texts}, config)
    st = store_for(cfg)
    ingest(cfg, st)
    keys = keys_for(cfg)
    gone = keys.pseudonym("C002")
    # what erasure does: the keyed subject hash on the suppression list, the rows deleted
    st.con.execute("INSERT INTO erased_subjects VALUES (?, now())", [keys.subject_hash(gone)])
    for t in ("orders", "texts", "vault_customer_pii", "customer_links", "customers"):
        st.con.execute(f"DELETE FROM {t} WHERE customer_id = ?", [gone])
    st.con.execute("DELETE FROM vault_text_raw WHERE text_id = 'T1'")
    # the shop exports again: a changed customers file, new orders of the erased customer
    (tmp_path / "customers.csv").write_text(CUSTOMERS.lstrip() + "C004,赵六,13612345678,男,1999,上海,2024-01-01\n")
    (tmp_path / "orders.csv").write_text(orders + "O3,C002,2024-02-01,7\nO4,C002,2024-02-02,8,extra,fields\n")
    (tmp_path / "texts.csv").write_text(texts + "T2,C002,again,2024-02-03\n")
    res = by_table(ingest(cfg, st))
    assert (res["customers"].accepted, res["customers"].unchanged, res["customers"].quarantined) == (1, 2, 1)
    assert (res["orders"].unchanged, res["orders"].quarantined) == (1, 3)
    assert res["texts"].quarantined == 2
    for t in ("customers", "orders", "texts", "vault_customer_pii"):
        assert st.scalar(f"SELECT count(*) FROM {t} WHERE customer_id = ?", [gone]) == 0, t
    assert st.scalar("SELECT count(*) FROM vault_text_raw") == 0
    erased = st.con.execute(
        "SELECT table_name, field, found, record_enc, row_key FROM quarantine WHERE reason = 'erased' ORDER BY 1, line"
    ).fetchall()
    assert [r[0] for r in erased] == ["customers", "orders", "orders", "orders", "texts", "texts"]
    assert {(r[1], r[2], r[3], r[4]) for r in erased} == {("customer_id", "(erased customer)", None, None)}
    assert st.scalar("SELECT count(*) FROM quarantine WHERE reason <> 'erased'") == 0  # no orphans with records
    assert raw_id_hits(st, ["C002", "13912345678", "Li Si", gone]) == []


# ---- item 14: a fixed config re-reads the file; --force re-reads everything ----------------


def test_fixing_the_config_rereads_an_unchanged_file(tmp_path: Path, store_for) -> None:
    orders = "order_id,customer_id,下单时间,付款时间,amount\nO1,C001,2024-01-01,未付款,5\nO2,C002,2024-01-02,未付款,6\n"
    config = CONFIG_CO.replace('path = "orders.csv"', 'path = "orders.csv"\ncolumns = { order_ts = "付款时间" }')
    cfg = write_shop(tmp_path, {"customers.csv": CUSTOMERS, "orders.csv": orders}, config)
    st = store_for(cfg)
    first = by_table(ingest(cfg, st))["orders"]
    assert (first.accepted, first.quarantined) == (0, 2)  # every row refused: the mapping was wrong
    assert all(r.skipped for r in ingest(cfg, st))  # same bytes, same settings
    cfg = write_shop(tmp_path, {}, config.replace("付款时间", "下单时间"))
    again = by_table(ingest(cfg, st))
    assert again["customers"].skipped and not again["orders"].skipped
    assert (again["orders"].accepted, again["orders"].quarantined) == (2, 0)
    cfg = write_shop(tmp_path, {}, config.replace("付款时间", "下单时间") + '[defaults]\ntimezone = "UTC"\n')
    assert not any(r.skipped for r in ingest(cfg, st))  # [defaults] shape every source


def test_force_rereads_every_source(tmp_path: Path, store_for) -> None:
    orders = "order_id,customer_id,order_ts,amount\nO1,C001,2024-01-01,5\n"
    cfg = write_shop(tmp_path, {"customers.csv": CUSTOMERS, "orders.csv": orders}, CONFIG_CO)
    st = store_for(cfg)
    ingest(cfg, st)
    forced = ingest(cfg, st, force=True)
    assert [(r.skipped, r.rows_in, r.unchanged) for r in forced] == [(False, 3, 3), (False, 1, 1)]
    st.close()
    run = CliRunner().invoke(app, ["ingest", "--config", str(tmp_path / "shoplens.toml"), "--json"])
    assert run.exit_code == 0 and [r["skipped"] for r in json.loads(run.stdout)] == [True, True]
    run = CliRunner().invoke(app, ["ingest", "--config", str(tmp_path / "shoplens.toml"), "--json", "--force"])
    assert run.exit_code == 0 and [r["skipped"] for r in json.loads(run.stdout)] == [False, False]


# ---- item 15: quarantine entries resolve ---------------------------------------------------


def test_quarantine_entry_resolves_when_the_row_is_fixed(tmp_path: Path, store_for, monkeypatch) -> None:
    orders = "order_id,customer_id,order_ts,amount\nO1,C001,2024-01-01,5\nO2,C002,2024-02-30,6\nO3,C003,2024-01-03,-1\n"
    cfg = write_shop(tmp_path, {"customers.csv": CUSTOMERS, "orders.csv": orders}, CONFIG_CO)
    st = store_for(cfg)
    ingest(cfg, st)
    assert {r["line"] for r in quarantine_report(st)} == {3, 4}
    ingest(cfg, st, force=True)  # re-read unfixed: the entries are superseded, not doubled
    assert len(quarantine_report(st)) == 2 and st.counts()["quarantine"] == 2
    (tmp_path / "orders.csv").write_text(orders.replace("2024-02-30", "2024-02-03"))
    res = by_table(ingest(cfg, st))["orders"]
    assert (res.accepted, res.unchanged, res.quarantined) == (1, 1, 1)
    assert [(r["line"], r["field"]) for r in quarantine_report(st)] == [(4, "amount")]
    assert st.counts()["quarantine"] == 1
    everything = quarantine_report(st, include_resolved=True)
    assert sorted((r["line"], r["resolution"] or "open") for r in everything) == [
        (3, "accepted"), (3, "superseded"), (4, "open"), (4, "superseded"), (4, "superseded")]
    assert {r["resolved_ingest"] for r in everything if r["resolution"] == "accepted"} == {res.ingest_id}
    st.close()
    cfg_path = str(tmp_path / "shoplens.toml")
    monkeypatch.setattr(cli.console, "width", 400)  # one table row per line
    shown = CliRunner().invoke(app, ["quarantine", "--config", cfg_path]).stdout
    assert "1 open (4 resolved)" in shown and "2024-02-30" not in shown and "amount" in shown
    shown_all = CliRunner().invoke(app, ["quarantine", "--config", cfg_path, "--all"]).stdout
    assert "2024-02-30" in shown_all and f"accepted by ingest #{res.ingest_id}" in shown_all


def test_rejected_row_resolves_when_the_line_is_fixed(tmp_path: Path, store_for) -> None:
    orders = "order_id,customer_id,order_ts,amount\nO1,C001,2024-01-01,5,oops\n"
    cfg = write_shop(tmp_path, {"customers.csv": CUSTOMERS, "orders.csv": orders}, CONFIG_CO)
    st = store_for(cfg)
    ingest(cfg, st)
    assert [r["reason"] for r in quarantine_report(st)] == ["unparseable row"]
    (tmp_path / "orders.csv").write_text(orders.replace(",oops", ""))
    ingest(cfg, st)
    assert quarantine_report(st) == [] and st.counts()["quarantine"] == 0


# ---- item 16: Chinese exports can be mapped ------------------------------------------------


def test_common_chinese_statuses_and_value_mappings(tmp_path: Path, store_for) -> None:
    orders = (
        "order_id,customer_id,order_ts,amount,status\n"
        "O1,C001,2024-01-01,5,已退货\nO2,C001,2024-01-01,5,已签收\nO3,C001,2024-01-01,5,待发货\n"
        "O4,C001,2024-01-01,5,退款中\nO5,C001,2024-01-01,5,拒收\nO6,C001,2024-01-01,5,Paid\nO7,C001,2024-01-01,5,\"我\"\"的\"\n"
    )
    cfg = write_shop(tmp_path, {"customers.csv": CUSTOMERS, "orders.csv": orders}, CONFIG_CO)
    st = store_for(cfg)
    ingest(cfg, st)
    assert dict(st.con.execute("SELECT order_id, status FROM orders").fetchall()) == {
        "O1": "returned", "O2": "paid", "O3": "paid", "O4": "returned", "O6": "paid"}
    q = {r["line"]: r for r in quarantine_report(st)}
    assert q[6]["expected"] == (
        "one of paid, cancelled, returned (map other spellings in this source's [[sources]] block: "
        'values = { status = { "拒收" = "..." } })'
    )
    assert 'status = { "我\\"的" = "..." }' in str(q[8]["expected"])  # quoted as TOML wants it
    config = CONFIG_CO.replace('path = "orders.csv"', 'path = "orders.csv"\nvalues = { status = { "拒收" = "Returned" } }')
    with pytest.raises(ConfigError, match=r"values.status: '拒收' maps to 'Returned'; expected one of paid, cancelled, returned"):
        write_shop(tmp_path, {}, config)
    config = CONFIG_CO.replace('path = "orders.csv"', 'path = "orders.csv"\nvalues = { channel = { "x" = "y" } }')
    with pytest.raises(ConfigError, match=r"values: 'channel' is not an enum column of orders; expected one of status"):
        write_shop(tmp_path, {}, config)
    config = CONFIG_CO.replace('path = "orders.csv"', 'path = "orders.csv"\nvalues = { status = { " 拒收 " = "returned" } }')
    cfg = write_shop(tmp_path, {}, config)
    assert by_table(ingest(cfg, st))["orders"].accepted == 1
    assert st.scalar("SELECT status FROM orders WHERE order_id = 'O5'") == "returned"


def test_unmapped_source_columns_are_reported(tmp_path: Path, store_for, monkeypatch) -> None:
    orders = "order_id,customer_id,order_ts,amount,备注,快递单号\nO1,C001,2024-01-01,5,x,SF1\n"
    cfg = write_shop(tmp_path, {"customers.csv": CUSTOMERS, "orders.csv": orders}, CONFIG_CO)
    st = store_for(cfg)
    res = by_table(ingest(cfg, st))
    assert res["orders"].unmapped_columns == ["备注", "快递单号"] and res["customers"].unmapped_columns == []
    st.close()
    cfg_path = str(tmp_path / "shoplens.toml")
    run = CliRunner().invoke(app, ["ingest", "--config", cfg_path, "--json", "--force"])
    assert [r["unmapped_columns"] for r in json.loads(run.stdout)] == [[], ["备注", "快递单号"]]
    monkeypatch.setattr(cli.console, "width", 400)
    run = CliRunner().invoke(app, ["ingest", "--config", cfg_path])
    assert run.exit_code == 0
    assert "orders.csv: column(s) not used, dropped: 备注, 快递单号" in run.stdout
    assert 'columns = { <orders column> = "备注" }' in run.stdout


def test_birth_date_is_validated_gives_birth_year_and_is_never_analysed(tmp_path: Path, store_for) -> None:
    customers = (
        "customer_id,出生日期\nC001,1990-05-17\nC002,1985/02/01\nC003,19700101\nC004,1899-12-31\n"
        "C005,2999-01-01\nC006,not a date\nC007,1988年3月9日\nC008,\n"
    )
    config = '[[sources]]\ntable = "customers"\npath = "customers.csv"\ncolumns = { birth_date = "出生日期" }\n'
    cfg = write_shop(tmp_path, {"customers.csv": customers}, config)
    st = store_for(cfg)
    (res,) = ingest(cfg, st)
    assert (res.accepted, res.quarantined) == (5, 3)
    keys = keys_for(cfg)
    years = dict(st.con.execute("SELECT customer_id, birth_year FROM customers").fetchall())
    assert years == {keys.pseudonym(c): y for c, y in
                     (("C001", 1990), ("C002", 1985), ("C003", 1970), ("C007", 1988), ("C008", None))}
    q = {r["line"]: r for r in quarantine_report(st)}
    assert {r["field"] for r in q.values()} == {"birth_date"}
    assert q[5]["expected"] == q[6]["expected"] == "a date between 1900-01-01 and today"
    assert q[7]["expected"].startswith("a date (YYYY-MM-DD") and q[7]["found"] == "<redacted PII>"
    cols = [c for (c,) in st.con.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'customers'").fetchall()]
    assert "birth_date" not in cols
    assert st.scalar("SELECT count(*) FROM vault_customer_pii WHERE field = 'birth_date'") == 0  # default: drop
    assert raw_id_hits(st, ["1990-05-17", "1985/02/01", "19700101"]) == []
    # [privacy] pii = { birth_date = "encrypt" } keeps it, encrypted, in the vault
    cfg = write_shop(tmp_path / "enc", {"customers.csv": customers}, config + '[privacy]\npii = { birth_date = "encrypt" }\n')
    st2 = store_for(cfg)
    ingest(cfg, st2)
    token = st2.scalar("SELECT ciphertext FROM vault_customer_pii WHERE field = 'birth_date' AND customer_id = ?",
                       [keys.pseudonym("C001")])
    assert keys.decrypt(token) == "1990-05-17"
