"""Ingestion: every row stored or quarantined with a reason; clear errors for bad sources."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import CONFIG_CO, write_shop

from shoplens.errors import ConfigError, SourceError
from shoplens.ingest import ingest, quarantine_report
from shoplens.store import Store

CUSTOMERS = """
customer_id,name,phone,gender,birth_year,city,signup_at
C1,张三,13812345678,男,1990,上海,2023-01-05 10:00:00
C2,Li Si,13912345678,F,1985,北京,2023-02-01
C3,王五,,female,1970,广州,2023-03-01
"""


def reconcile(results: list) -> None:
    for r in results:
        assert r.rows_in == r.accepted + r.unchanged + r.quarantined, r


def quarantined(store: Store) -> list[dict]:
    return quarantine_report(store, limit=1000)


def test_bad_rows_are_quarantined_with_line_field_expected_found(tmp_path: Path, store_for) -> None:
    orders = """
    order_id,customer_id,order_ts,status,amount,discount
    O1,C1,2024-01-05 10:00:00,paid,"¥1,299.50",0
    O2,C9,2024-02-05 10:00:00,paid,99,0
    O3,C2,2024-02-30 10:00:00,paid,99,0
    O4,C2,2024-03-05 10:00:00,paid,-5,0
    O5,C2,2024-03-05 10:00:00,shipped-ish,5,0
    O1,C2,2024-03-06 10:00:00,paid,7,0
    O6,C2,2031-01-01 00:00:00,paid,7,0
    O7,C3,2024-03-05 10:00:00,退货,12.5,1
    """
    cfg = write_shop(tmp_path, {"customers.csv": CUSTOMERS, "orders.csv": orders}, CONFIG_CO)
    st = store_for(cfg)
    results = ingest(cfg, st)
    reconcile(results)
    assert [(r.table, r.rows_in, r.accepted, r.quarantined) for r in results] == [
        ("customers", 3, 3, 0),
        ("orders", 8, 2, 6),
    ]
    q = {row["line"]: row for row in quarantined(st)}
    assert q[3]["field"] == "customer_id" and "present in customers" in q[3]["expected"]
    assert q[3]["found"].startswith("c_") and "orphan" in q[3]["found"]  # pseudonymised, not raw
    assert (q[4]["field"], q[4]["expected"], q[4]["found"]) == ("order_ts", "a date/time", "2024-02-30 10:00:00")
    assert (q[5]["field"], q[5]["expected"], q[5]["found"]) == ("amount", "a value >= 0", "-5")
    assert q[6]["field"] == "status" and "one of paid, cancelled, returned" in q[6]["expected"]
    assert q[7]["field"] == "order_id" and "duplicate of line 2" in q[7]["found"]
    assert q[8]["field"] == "order_ts" and "between 1990-01-01 and tomorrow" in q[8]["expected"]
    amounts = dict(st.con.execute("SELECT order_id, CAST(amount AS DOUBLE) FROM orders").fetchall())
    assert amounts == {"O1": 1299.5, "O7": 12.5}
    assert st.scalar("SELECT status FROM orders WHERE order_id = 'O7'") == "returned"


def test_missing_file_is_a_clear_error(tmp_path: Path, store_for) -> None:
    cfg = write_shop(tmp_path, {"customers.csv": CUSTOMERS}, CONFIG_CO)
    with pytest.raises(SourceError, match=r"orders\.csv: file not found \(source for table 'orders'\)"):
        ingest(cfg, store_for(cfg))


def test_missing_required_column_names_it_and_lists_found(tmp_path: Path, store_for) -> None:
    orders = "order_id,customer_id,order_ts\nO1,C1,2024-01-01\n"
    cfg = write_shop(tmp_path, {"customers.csv": CUSTOMERS, "orders.csv": orders}, CONFIG_CO)
    with pytest.raises(SourceError) as err:
        ingest(cfg, store_for(cfg))
    assert "missing required column 'amount'" in str(err.value)
    assert "columns found: order_id, customer_id, order_ts" in str(err.value)


def test_mapped_column_missing_is_named(tmp_path: Path, store_for) -> None:
    config = CONFIG_CO.replace('path = "orders.csv"', 'path = "orders.csv"\ncolumns = { amount = "实付金额" }')
    orders = "order_id,customer_id,order_ts,金额\nO1,C1,2024-01-01,5\n"
    cfg = write_shop(tmp_path, {"customers.csv": CUSTOMERS, "orders.csv": orders}, config)
    with pytest.raises(SourceError, match="column '实付金额' \\(mapped to orders.amount\\) is missing; columns found: order_id, customer_id, order_ts, 金额"):
        ingest(cfg, store_for(cfg))


def test_mapping_to_unknown_canonical_column_is_config_error(tmp_path: Path, store_for) -> None:
    config = CONFIG_CO.replace('path = "orders.csv"', 'path = "orders.csv"\ncolumns = { amout = "x" }')
    cfg = write_shop(tmp_path, {"customers.csv": CUSTOMERS, "orders.csv": "order_id\n"}, config)
    with pytest.raises(ConfigError, match=r"maps unknown orders column\(s\) \['amout'\]"):
        ingest(cfg, store_for(cfg))


def test_unreadable_encoding(tmp_path: Path, store_for) -> None:
    bad = b"customer_id,city\nC1,\xff\xfe\xfd\xff\n"
    cfg = write_shop(tmp_path, {"customers.csv": bad}, '[[sources]]\ntable = "customers"\npath = "customers.csv"\n')
    with pytest.raises(SourceError, match="unreadable encoding: neither UTF-8 nor GB18030"):
        ingest(cfg, store_for(cfg))


def test_declared_encoding_that_does_not_fit(tmp_path: Path, store_for) -> None:
    gbk = "customer_id,city\nC1,上海\n".encode("gbk")
    config = '[[sources]]\ntable = "customers"\npath = "customers.csv"\nencoding = "utf-8"\n'
    cfg = write_shop(tmp_path, {"customers.csv": gbk}, config)
    with pytest.raises(SourceError, match="customers.csv: (unreadable|cannot parse)"):
        ingest(cfg, store_for(cfg))


@pytest.mark.parametrize("encoding", ["gbk", "gb18030", "utf-8-sig"])
def test_chinese_exports_in_gbk_are_read(tmp_path: Path, store_for, encoding: str) -> None:
    data = "用户ID,城市,性别\nC1,上海,男\nC2,北京,女\n".encode(encoding)
    config = '[[sources]]\ntable = "customers"\npath = "c.csv"\ncolumns = { customer_id = "用户ID", city = "城市", gender = "性别" }\n'
    cfg = write_shop(tmp_path, {"c.csv": data}, config)
    st = store_for(cfg)
    (r,) = ingest(cfg, st)
    assert (r.accepted, r.quarantined) == (2, 0)
    assert sorted(st.con.execute("SELECT city, gender FROM customers").fetchall()) == [("上海", "male"), ("北京", "female")]


def test_malformed_csv_rows_and_embedded_newlines_keep_exact_lines(tmp_path: Path, store_for) -> None:
    texts = (
        "text_id,customer_id,text,created_at\n"
        'T1,C1,"第一行\n第二行",2024-01-01\n'  # lines 2-3
        "T2,C1,too,many,fields,2024-01-01\n"  # line 4
        "T3,C1,,2024-01-01\n"  # line 5: empty text
        'T4,C2,"ok",2024-01-02\n'  # line 6
    )
    config = CONFIG_CO.split("[[sources]]\ntable = \"orders\"")[0] + '[[sources]]\ntable = "texts"\npath = "texts.csv"\n'
    cfg = write_shop(tmp_path, {"customers.csv": CUSTOMERS, "texts.csv": texts}, config)
    st = store_for(cfg)
    results = ingest(cfg, st)
    reconcile(results)
    assert (results[1].rows_in, results[1].accepted, results[1].quarantined) == (4, 2, 2)
    q = {row["line"]: row for row in quarantined(st)}
    assert q[4]["field"] == "(row)" and q[4]["expected"] == "4 fields" and q[4]["found"].startswith("6 fields")
    assert q[5]["field"] == "text" and q[5]["found"] == "empty"
    assert st.scalar("SELECT _line FROM texts WHERE text_id = 'T4'") == 6


def test_reingest_is_idempotent_and_append_works(tmp_path: Path, store_for) -> None:
    orders = "order_id,customer_id,order_ts,amount\nO1,C1,2024-01-01,5\nO2,C2,2024-01-02,6\n"
    cfg = write_shop(tmp_path, {"customers.csv": CUSTOMERS, "orders.csv": orders}, CONFIG_CO)
    st = store_for(cfg)
    ingest(cfg, st)
    before = st.counts()
    again = ingest(cfg, st)
    assert all(r.skipped for r in again) and st.counts() == before
    # a new export that repeats O2 unchanged, adds O3 and changes O1: idempotent per row
    (tmp_path / "orders.csv").write_text("order_id,customer_id,order_ts,amount\nO2,C2,2024-01-02,6\nO3,C3,2024-01-03,7\nO1,C1,2024-01-01,500\n")
    res = ingest(cfg, st)
    reconcile(res)
    o = res[1]
    assert (o.rows_in, o.accepted, o.unchanged, o.quarantined) == (3, 1, 1, 1)
    assert st.scalar("SELECT count(*) FROM orders") == 3
    assert st.scalar("SELECT CAST(amount AS DOUBLE) FROM orders WHERE order_id = 'O1'") == 5.0
    row = [r for r in quarantined(st) if r["line"] == 4][0]
    assert "already stored with different values" in row["found"]


def test_parquet_jsonl_and_sqlite_sources(tmp_path: Path, store_for) -> None:
    pq.write_table(pa.table({"customer_id": ["C1", "C2"], "birth_year": [1990, 1800]}), tmp_path / "c.parquet")
    lines = [
        json.dumps({"text_id": "T1", "customer_id": "C1", "text": "物流太慢了", "created_at": "2024-01-01"}, ensure_ascii=False),
        "{not json",
        json.dumps({"text_id": "T2", "customer_id": "C1", "text": "great", "created_at": "2024-01-02", "rating": 9}),
        "",
        json.dumps(["a", "list"]),
    ]
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    db = tmp_path / "shop.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE orders (order_id TEXT, customer_id TEXT, order_ts TEXT, amount REAL)")
        con.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)", [("O1", "C1", "2024-01-01 08:00:00", 9.5), ("O2", "C2", "2024-01-01", 3)])
    config = f"""
    [[sources]]
    table = "customers"
    path = "c.parquet"
    [[sources]]
    table = "texts"
    path = "t.jsonl"
    [[sources]]
    table = "orders"
    url = "sqlite:///{db}"
    """
    cfg = write_shop(tmp_path, {}, config)
    st = store_for(cfg)
    results = {r.table: r for r in ingest(cfg, st)}
    reconcile(list(results.values()))
    assert (results["customers"].accepted, results["customers"].quarantined) == (1, 1)  # birth_year 1800
    assert (results["orders"].rows_in, results["orders"].accepted, results["orders"].quarantined) == (2, 1, 1)  # C2 orphan
    assert (results["texts"].rows_in, results["texts"].accepted, results["texts"].quarantined) == (4, 1, 3)
    q = {(r["table"], r["line"]): r for r in quarantined(st)}
    assert q[("texts", 2)]["expected"] == "a JSON object" and "invalid JSON" in q[("texts", 2)]["found"]
    assert q[("texts", 3)]["field"] == "rating" and q[("texts", 3)]["expected"] == "a value <= 5"
    assert q[("texts", 5)]["expected"] == "a JSON object"
    assert st.scalar("SELECT language FROM texts") == "zh"


def test_timezones_and_formats(tmp_path: Path, store_for) -> None:
    orders = (
        "order_id,customer_id,order_ts,amount\n"
        "O1,C1,2024/01/05 10:00,1\n"
        "O2,C1,2024-01-05T02:00:00Z,1\n"
        "O3,C1,1704420000,1\n"
    )
    config = CONFIG_CO.replace('path = "orders.csv"', 'path = "orders.csv"\ntimestamp_formats = ["%Y/%m/%d %H:%M", "epoch"]\ntimezone = "UTC"')
    cfg = write_shop(tmp_path, {"customers.csv": CUSTOMERS, "orders.csv": orders}, config)
    st = store_for(cfg)
    ingest(cfg, st)
    got = dict(st.con.execute("SELECT order_id, strftime(order_ts, '%Y-%m-%d %H:%M') FROM orders").fetchall())
    # naive times are UTC in this source and stored in the shop's zone (Asia/Shanghai, +8)
    assert got == {"O1": "2024-01-05 18:00", "O2": "2024-01-05 10:00", "O3": "2024-01-05 10:00"}


def test_foreign_currency_needs_a_rate(tmp_path: Path, store_for) -> None:
    orders = "order_id,customer_id,order_ts,amount,currency\nO1,C1,2024-01-01,10,USD\nO2,C1,2024-01-01,10,EUR\n"
    config = CONFIG_CO + "[defaults]\nfx_rates = { usd = 7.0 }\n"
    cfg = write_shop(tmp_path, {"customers.csv": CUSTOMERS, "orders.csv": orders}, config)
    st = store_for(cfg)
    ingest(cfg, st)
    assert st.con.execute("SELECT order_id, CAST(amount AS DOUBLE), currency FROM orders").fetchall() == [("O1", 70.0, "USD")]
    (row,) = [r for r in quarantined(st) if r["table"] == "orders"]
    assert row["field"] == "currency" and row["found"] == "EUR" and "CNY or USD" in row["expected"]
