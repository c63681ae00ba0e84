"""Behavioural features: hand-computed values on a tiny shop, and agreement with an
independent pandas implementation on the demo shop."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_shop

from shoplens.build import build
from shoplens.errors import ConfigError
from shoplens.features import FEATURE_COLUMNS
from shoplens.features.rfm import load_rules
from shoplens.ingest import ingest
from shoplens.jobs import Summary
from shoplens.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from pandas_baseline import differing_columns, pandas_features  # noqa: E402

TINY = {
    "customers.csv": """
        customer_id,signup_at
        A,2024-01-01 00:00:00
        B,2024-03-01 00:00:00
        N,2024-02-01 00:00:00
        """,
    "products.csv": """
        product_id,category
        p1,服装/女装/连衣裙
        p2,数码 > 手机
        """,
    "orders.csv": """
        order_id,customer_id,order_ts,status,amount,discount
        o1,A,2024-03-01 09:00:00,paid,100,0
        o2,A,2024-03-01 21:00:00,paid,50,10
        o3,A,2024-03-11 09:00:00,paid,30,0
        o4,A,2024-03-21 09:00:00,returned,40,0
        o5,A,2024-03-31 09:00:00,paid,20,0
        o6,B,2024-03-15 23:30:00,cancelled,10,0
        o7,B,2024-03-20 23:30:00,paid,10,0
        """,
    "order_items.csv": """
        order_id,line_no,product_id,quantity,unit_price,discount
        o1,1,p1,1,100,0
        o2,1,p2,1,60,10
        o3,1,p1,3,10,0
        o5,1,p2,1,20,0
        o7,1,p1,1,10,0
        """,
    "events.csv": """
        customer_id,event_ts,event_type,product_id,session_id
        A,2024-02-28 09:00:00,view,p1,s1
        A,2024-02-28 09:05:00,view,p2,s1
        A,2024-02-28 09:06:00,view,p3x,s1
        A,2024-02-29 09:00:00,cart,p1,s2
        B,2024-03-20 23:00:00,search,,s3
        N,2024-02-02 10:00:00,cart,p1,s9
        """,
}
SOURCES = "".join(f'[[sources]]\ntable = "{n}"\npath = "{n}.csv"\n' for n in ("customers", "products", "orders", "order_items", "events"))


def test_hand_computed_features(tmp_path: Path) -> None:
    cfg = write_shop(tmp_path, TINY, SOURCES)
    with Store.for_config(cfg) as st:
        res = ingest(cfg, st)
        assert [r.quarantined for r in res] == [0, 0, 0, 0, 1]  # event on unknown product p3x is an orphan
        b = build(cfg, st, as_of=date(2024, 4, 10))
        df = st.con.execute(f"SELECT * FROM snap_{b.snapshot_id}.customer_features").df().set_index("customer_id")
        cats = st.con.execute(f"SELECT * FROM snap_{b.snapshot_id}.customer_category_shares ORDER BY customer_id, rank").fetchall()
    a = df[df.n_orders == 4].iloc[0]
    # A: paid on Mar 1 (twice), Mar 11, Mar 31 -> 3 purchase days; BTYD frequency 2
    assert a.n_orders == 4 and a.n_orders_all == 5 and a.total_spend == 200
    assert a.frequency == 2 and a.recency == 30 and a["T"] == 39  # Mar 1 -> Apr 9, the last observed day
    assert a.monetary_value == pytest.approx((30 + 20) / 2)  # repeat days only
    assert a.mean_interpurchase_days == pytest.approx(15)
    assert a.return_rate == pytest.approx(1 / 5) and a.cancel_rate == 0
    assert a.discount_rate == pytest.approx(10 / 210) and a.discount_order_share == pytest.approx(1 / 4)
    assert a.recency_days == pytest.approx(9 + 15 / 24)  # Mar 31 09:00 -> Apr 10 00:00
    assert a.tenure_days == pytest.approx(100)
    assert a.top_category == "服装" and a.top_category_share == pytest.approx(130 / 200) and a.n_categories == 2
    assert a.peak_hour == 9 and a.n_views == 2 and a.n_cart_adds == 1 and a.n_sessions == 2
    assert a.view_to_buy_rate == pytest.approx(1.0)  # viewed p1, p2; bought both
    assert a.cart_to_order_rate == pytest.approx(4.0)
    b_row = df[df.n_orders_all == 2].iloc[0]
    assert b_row.n_orders == 1 and b_row.cancel_rate == 0.5 and b_row.frequency == 0 and np.isnan(b_row.monetary_value)
    assert b_row.peak_hour == 23 and b_row.night_share == 1.0 and b_row.n_searches == 1
    n_row = df[df.n_orders_all == 0].iloc[0]
    assert n_row.rfm_segment == "No purchase" and pd.isna(n_row.r_score) and n_row.total_spend == 0
    assert pd.isna(n_row.recency_days) and n_row.n_events == 1
    assert n_row.cart_to_order_rate == 0 and pd.isna(b_row.cart_to_order_rate)  # cart adds but no order: 0
    assert a.r_score == 5 and b_row.r_score == 1  # A bought most recently (percent rank among buyers)
    assert len(cats) == 3


def test_rfm_rules_are_validated(tmp_path: Path) -> None:
    p = tmp_path / "rules.toml"
    p.write_text('[[segment]]\nname = "X"\nr = [0, 5]\nfm = [1, 5]\n')
    with pytest.raises(ConfigError, match=r"'r' must be \[low, high\] within 1..5, found \[0, 5\]"):
        load_rules(str(p))
    p.write_text('[[segment]]\nname = "X"\nr = [1, 5]\nfm = [1, 5]\ncolour = "red"\n')
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['colour'\]"):
        load_rules(str(p))


def test_ibis_features_match_independent_pandas_implementation(demo_shop: Summary) -> None:
    with Store.open(demo_shop.folder / "shoplens.duckdb", read_only=True) as st:
        snap = demo_shop.build.snapshot_id
        ours = st.con.execute(f"SELECT * FROM snap_{snap}.customer_features").df()
        t = {n: st.con.execute(f"SELECT * FROM {n}").df() for n in ("customers", "orders", "order_items", "products", "events")}
        # the build sees only customers who consent to profiling, and their rows
        profiled = {r[0] for r in st.con.execute(f"SELECT customer_id FROM snap_{snap}.customer_consent WHERE profiling").fetchall()}
    assert 0 < len(profiled) < len(t["customers"])
    for n in ("customers", "orders", "events"):
        t[n] = t[n][t[n].customer_id.isin(profiled)]
    t["order_items"] = t["order_items"][t["order_items"].order_id.isin(set(t["orders"].order_id))]
    as_of = pd.Timestamp(demo_shop.build.as_of)
    ref = pandas_features(t["customers"], t["orders"], t["order_items"], t["products"], t["events"], as_of, load_rules())
    assert_same_features(ours, ref)


def assert_same_features(ours: pd.DataFrame, ref: pd.DataFrame) -> None:
    assert [c for c in ours.columns if c != "customer_id"] == list(FEATURE_COLUMNS[1:])
    assert differing_columns(ours, ref, list(FEATURE_COLUMNS[1:])) == []
