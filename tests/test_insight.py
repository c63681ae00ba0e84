"""Product insight and demand: intervals and the evidence threshold, spike alerts on data
with a known spike and on the demo's planted ones, complaint groups that never carry one
customer's words as a label, the served routes and their roles, erasure of quotes, and
demand backtests against the naive baselines on CDNOW."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta

import duckdb
import httpx
import numpy as np
import pandas as pd
import pytest
from servers import demo_server
from typer.testing import CliRunner

from shoplens.cli import app
from shoplens.insight.alerts import weekly_alerts
from shoplens.insight.aspects import aspect_table, complaint_groups, wilson
from shoplens.insight.demand import backtest
from shoplens.insight.evaluate import cdnow_sales, score
from shoplens.jobs import Summary
from shoplens.text.preprocess import tokens


def test_wilson_interval_contains_the_share_and_narrows_with_n() -> None:
    lo, hi = wilson(np.array([5, 50]), np.array([10, 100]))
    assert (lo < 0.5).all() and (hi > 0.5).all()
    assert hi[1] - lo[1] < hi[0] - lo[0]


def _mentions(rng: np.random.Generator, spike_week: datetime | None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    start = datetime(2024, 1, 1)
    texts, mentions = [], []
    for i in range(1200):  # 12 products, ~2 reviews a week each, 10% complain about logistics
        when = start + timedelta(days=float(rng.uniform(0, 364)))
        pid, cid = f"P{i % 12}", f"c{rng.integers(500)}"
        texts.append((f"t{i}", cid, pid, when))
        if rng.random() < 0.1:
            mentions.append((f"t{i}", "logistics", "negative"))
    if spike_week is not None:
        for j in range(6):
            texts.append((f"s{j}", f"spike{j}", "P3", spike_week + timedelta(days=j)))
            mentions.append((f"s{j}", "logistics", "negative"))
    t = pd.DataFrame(texts, columns=["text_id", "customer_id", "product_id", "created_at"])
    m = pd.DataFrame(mentions, columns=["text_id", "aspect", "polarity"])
    products = pd.DataFrame({"product_id": [f"P{k}" for k in range(12)], "name": "x", "category": "家居/床品"})
    return t, m, products


def test_a_planted_spike_alerts_and_quiet_data_does_not() -> None:
    week = datetime(2024, 9, 2)  # a Monday
    t, m, p = _mentions(np.random.default_rng(0), week)
    found = weekly_alerts(t, m, p, baseline_weeks=26, prior_texts=10, min_customers=3, fdr=0.05)
    assert [(r.product_id, r.aspect, r.week.date()) for r in found.itertuples()] == [("P3", "logistics", week.date())]
    quiet = weekly_alerts(*_mentions(np.random.default_rng(0), None), baseline_weeks=26, prior_texts=10,
                          min_customers=3, fdr=0.05)
    assert quiet.empty


def test_figures_under_the_evidence_threshold_are_not_shown() -> None:
    as_of = datetime(2025, 1, 1)
    rows = [("t1", "c1", "A", "quality", "negative", as_of - timedelta(days=5)),
            ("t2", "c2", "A", "quality", "negative", as_of - timedelta(days=6))]
    rows += [(f"u{i}", f"d{i}", "B", "quality", "negative" if i % 2 else "positive", as_of - timedelta(days=3))
             for i in range(8)]
    m = pd.DataFrame(rows, columns=["text_id", "customer_id", "product_id", "aspect", "polarity", "created_at"])
    products = pd.DataFrame({"product_id": ["A", "B"], "name": ["a", "b"], "category": ["数码/耳机"] * 2, "brand": ["x", "y"]})
    sales = pd.DataFrame({"product_id": ["A", "B"], "order_ts": [as_of - timedelta(days=1)] * 2, "status": ["paid"] * 2,
                          "revenue": [10.0, 20.0]})
    table = aspect_table(m, sales, products, as_of, 90, 3).set_index(["level", "key"])
    a, b = table.loc[("product", "A")], table.loc[("product", "B")]
    assert not a["shown"] and pd.isna(a["negative_share"]) and a["customers"] == 2
    assert b["shown"] and b["negative_share"] == 0.5 and b["ci_low"] < 0.5 < b["ci_high"]


def test_group_labels_are_words_two_customers_used() -> None:
    quotes = pd.DataFrame({
        "customer_id": ["c1", "c2", "c3"], "text_id": ["t1", "t2", "t3"], "product_id": "P1", "aspect": "logistics",
        "evidence": ["快递太慢了，等了一周", "快递太慢了，等了十天", "客服电话 13800138000 打不通"],
        "created_at": datetime(2025, 1, 1)})
    g = complaint_groups(quotes, 0.5, tokens)
    same = g[g["text_id"].isin(["t1", "t2"])]
    assert same["group_id"].nunique() == 1 and (same["group_size"] == 2).all()
    assert "快递" in same["group_label"].iloc[0]
    alone = g[g["text_id"] == "t3"]
    assert alone["group_label"].iloc[0] == "" and alone["group_size"].iloc[0] == 1


def test_demo_alerts_find_the_planted_spikes(demo_shop: Summary) -> None:
    con = duckdb.connect(str(demo_shop.folder / "shoplens.duckdb"), read_only=True)
    snap = con.execute("SELECT snapshot_id FROM current_snapshot").fetchone()[0]
    found = con.execute(f"SELECT product_id, aspect, CAST(week AS DATE) AS week FROM snap_{snap}.aspect_alerts").df()
    demand = con.execute(f"SELECT * FROM snap_{snap}.demand_forecast").df()
    con.close()
    result = score(found, pd.read_csv(demo_shop.folder / "insight_truth.csv"))
    assert result["planted"] >= 3 and result["recall"] >= 0.67 and result["precision_product_week"] >= 0.5, result
    assert len(demand) and (demand["units_lo_80"] <= demand["units"]).all() and (demand["units"] <= demand["units_hi_80"]).all()
    assert (demand["revenue_lo_95"] <= demand["revenue_lo_80"]).all() and (demand["revenue_hi_80"] <= demand["revenue_hi_95"]).all()
    assert set(demand["model"]) <= {"auto_ets", "croston_sba", "mean"}


def test_demand_backtest_beats_the_naive_baselines_on_cdnow() -> None:
    out = backtest(*cdnow_sales())
    assert out["origins"] == 4
    assert out["time_series"]["mase"] < out["seasonal_naive"]["mase"]
    assert out["bottom_up"]["mase"] < out["naive"]["mase"]  # a closed cohort: BG/NBD's home ground


# ---- served ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(demo_shop: Summary, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    with demo_server(demo_shop, tmp_path_factory, "insight") as srv:
        yield srv


def _get(server: dict, path: str, role: str | None = "analyst", **params) -> httpx.Response:
    headers = {"X-API-Key": server["keys"][role]} if role else {}
    return httpx.get(server["base"] + path, headers=headers, params=params, timeout=30)


def test_insight_routes_roles_and_erasure(server: dict) -> None:
    for path, key in (("/insight/products", "products"), ("/insight/aspects", "aspects"), ("/insight/alerts", "alerts"),
                      ("/insight/segments", "segments"), ("/insight/demand", "demand")):
        r = _get(server, path)
        assert r.status_code == 200, (path, r.text)
        assert key in r.json()
        assert _get(server, path, "service").status_code == 403
        assert _get(server, path, None).status_code == 401
    assert _get(server, "/insight/aspects", level="planet").status_code == 422
    assert _get(server, "/insight/products", category="x" * 500).status_code == 422
    hidden = [a for a in _get(server, "/insight/aspects", level="product", limit=1000).json()["aspects"] if not a["shown"]]
    assert hidden and all(a["negative_share"] is None for a in hidden)
    cfg = str(server["folder"] / "shoplens.toml")
    for cmd in ("products", "aspects", "alerts", "segments", "demand"):
        r = CliRunner().invoke(app, ["insight", cmd, "-c", cfg, "--json"])
        assert r.exit_code == 0, (cmd, r.output)
    # erasure: a complainer's quotes leave the served file
    serving = sorted((server["folder"] / "shoplens.profiles").glob("snap_*.sqlite"))[-1]
    with sqlite3.connect(serving) as db:
        cid = db.execute("SELECT customer_id FROM aspect_quotes LIMIT 1").fetchone()[0]
    assert httpx.delete(server["base"] + f"/admin/customers/{cid}", headers={"X-API-Key": server["keys"]["admin"]},
                        timeout=60).status_code == 200
    for path in (server["folder"] / "shoplens.profiles").glob("snap_*.sqlite"):
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT count(*) FROM aspect_quotes WHERE customer_id = ?", [cid]).fetchone()[0] == 0
