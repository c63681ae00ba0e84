"""Property: whatever the input, every row is stored, recognised as unchanged, or
quarantined, and the counts add up to the input."""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoplens.config import config_from_dict
from shoplens.ingest import ingest
from shoplens.store import Store

cell = st.one_of(
    st.sampled_from(["", "C1", "C2", "-1", "12.5", "2024-02-30", "2024-01-01 10:00:00", "paid", "退货", "¥3,000", "x"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"), max_size=12),
)
row = st.lists(cell, min_size=1, max_size=7)
COLUMNS = ["order_id", "customer_id", "order_ts", "status", "amount", "discount"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(row, max_size=25), customers=st.lists(st.sampled_from(["C1", "C2", "C3", "", "C1"]), max_size=5))
def test_every_row_is_stored_or_quarantined(rows: list[list[str]], customers: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(COLUMNS)
        w.writerows(rows)  # rows may be short or long: the parser must reject those too
        (folder / "orders.csv").write_text(buf.getvalue(), encoding="utf-8")
        (folder / "customers.csv").write_text("customer_id\n" + "\n".join(customers) + ("\n" if customers else ""), encoding="utf-8")
        cfg = config_from_dict(
            {"sources": [{"table": "customers", "path": "customers.csv"}, {"table": "orders", "path": "orders.csv"}]},
            folder,
        )
        with Store.open(cfg.store_path) as store:
            results = ingest(cfg, store)
            for r in results:
                assert r.rows_in == r.accepted + r.unchanged + r.quarantined
                stored = store.scalar(f"SELECT count(*) FROM {r.table} WHERE _ingest_id = ?", [r.ingest_id])
                held = store.scalar("SELECT count(*) FROM quarantine WHERE ingest_id = ?", [r.ingest_id])
                assert (stored, held) == (r.accepted, r.quarantined)
            expected_in = sum(1 for line in csv.reader(io.StringIO(buf.getvalue()))) - 1
            assert results[1].rows_in == expected_in
