"""De-identification: no raw PII in analysis tables, masking identical in Python and SQL,
the secret never stored with the data."""

from __future__ import annotations

import csv
import json
import os
import re

import duckdb
from hypothesis import given, settings
from hypothesis import strategies as st

from shoplens.jobs import Summary
from shoplens.privacy import keys_for, mask_sql, mask_text
from shoplens.store import Store

ANALYSIS_TABLES = ("customers", "products", "orders", "order_items", "events", "texts", "quarantine")


def test_masking_examples() -> None:
    cases = {
        "电话13812345678，邮箱 a.b@shop.cn": "电话[PHONE],邮箱 [EMAIL]",  # full-width punctuation is folded
        "身份证号11010119900307123X。": "身份证号[ID]。",
        "卡号6222 0212 3456 7890 123，谢谢": "卡号[CARD],谢谢",
        "call +1 415-555-2671 or (415) 555-2671": "call [PHONE] or [PHONE]",
        "号码 138-1234-5678 和 021-12345678": "号码 [PHONE] 和 [PHONE]",
        "13812345678,13912345678": "[PHONE],[PHONE]",
        "订单号20231111000001234567 价格 199 元": "订单号20231111000001234567 价格 199 元",
        "邮箱ＣＨＵＮＬＩＮＧ２１９＠ＳＯＨＵ．ＣＯＭ，电话１３８１２３４５６７８": "邮箱[EMAIL],电话[PHONE]",
    }
    for raw, masked in cases.items():
        assert mask_text(raw) == masked


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(
    st.sampled_from(["13812345678", "a@b.cn", "11010119900307123X", "6222021234567890", " ", "，", "x", "0", "+86 138 1234 5678",
                     "１３８１２３４５６７８", "Ａ＠Ｂ．ＣＮ", "'", "＇"]),
    st.text(max_size=6),
), max_size=8))
def test_sql_masking_equals_python_masking(parts: list[str]) -> None:
    text = "".join(parts).replace("\x00", "")
    con = duckdb.connect()
    assert con.execute(f"SELECT {mask_sql('?')}", [text]).fetchall()[0][0] == mask_text(text)


def _pii_values(folder, fields=("customer_id", "name", "phone", "email", "address", "id_number")) -> set[str]:
    values: set[str] = set()
    with open(folder / "customers.csv", encoding="gb18030") as fh:
        for row in csv.DictReader(fh):
            values |= {row[k] for k in fields if row[k]}
    return values


def test_no_raw_pii_in_analysis_tables(demo_shop: Summary) -> None:
    folder = demo_shop.folder
    pii = _pii_values(folder)
    assert len(pii) > 1000
    # distinctive values must not appear even inside other text
    inside = re.compile("|".join(re.escape(v) for v in _pii_values(folder, ("phone", "email", "id_number"))))
    with Store.open(folder / "shoplens.duckdb", read_only=True) as st:
        schemas = [f"snap_{demo_shop.build.snapshot_id}"]
        tables = [f"main.{t}" for t in ANALYSIS_TABLES]
        tables += [f"{s}.{t}" for s in schemas for (t,) in st.con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = ?", [schemas[0]]).fetchall()]
        leaks = []
        for t in tables:
            cols = [c for c, typ in st.con.execute(f"SELECT column_name, data_type FROM information_schema.columns "
                                                   f"WHERE table_schema || '.' || table_name = '{t}'").fetchall() if typ == "VARCHAR"]
            for c in cols:
                for (v,) in st.con.execute(f'SELECT DISTINCT "{c}" FROM {t} WHERE "{c}" IS NOT NULL').fetchall():
                    if v in pii or inside.search(v):
                        leaks.append((t, c, v[:40]))
        assert leaks == []
        # the masked texts do carry placeholders where the raw texts had a phone or e-mail
        raw = [json.loads(line)["text"] for line in (folder / "texts.jsonl").read_text(encoding="utf-8").splitlines()]
        raw_with_pii = sum(1 for t in raw if "联系我" in t or "email me" in t)
        masked = st.scalar("SELECT count(*) FROM texts WHERE text LIKE '%[PHONE]%' OR text LIKE '%[EMAIL]%'")
        assert raw_with_pii > 0 and masked >= raw_with_pii - demo_shop.ingest[-1].quarantined


def test_vault_decrypts_only_with_the_key(demo_shop: Summary) -> None:
    from shoplens.config import load_config

    cfg = load_config(demo_shop.folder / "shoplens.toml")
    keys = keys_for(cfg)
    with Store.open(cfg.store_path, read_only=True) as st:
        cid, token = st.one("SELECT customer_id, ciphertext FROM vault_customer_pii WHERE field = 'phone' LIMIT 1")
        assert token.startswith("gAAAA")
        assert st.scalar("SELECT count(*) FROM vault_customer_pii WHERE field IN ('address', 'id_number')") == 0  # dropped per config
    phone = keys.decrypt(token)
    assert phone in _pii_values(demo_shop.folder)


def test_secret_is_not_stored_with_the_data(demo_shop: Summary) -> None:
    secret = os.environ["SHOPLENS_SECRET_KEY"].encode()
    blob = (demo_shop.folder / "shoplens.duckdb").read_bytes()
    assert secret not in blob and secret.rstrip(b"=") not in blob
