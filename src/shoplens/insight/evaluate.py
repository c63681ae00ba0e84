"""``shoplens evaluate insight``: the weekly complaint alerts against spikes planted in
generated demo shops (``datasets/demo_insight``), over several seeds; and total weekly
demand backtested at rolling origins (``demand.backtest``: 4 origins, 8 weeks ahead) on
each of those shops and on CDNOW, the time-series and bottom-up forecasts beside naive
and seasonal naive.

An alert is *found* when its product, aspect and week are a planted spike's.
Precision counts every other alert as false, including alerts for another aspect in a
planted week (the planted reviews often name a second aspect: they are real reviews);
``precision_product_week`` counts an alert right when its product and week are a
planted spike's. The seeds default to 1-5; the settings were chosen on seed 42.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from shoplens.insight.demand import backtest

SEEDS = (1, 2, 3, 4, 5)


def _shop(folder: Path, customers: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, float, dict[str, Any]]:
    from shoplens.jobs import build_evaluation_shop
    from shoplens.store import Store

    cfg = build_evaluation_shop(folder, customers, seed)
    with Store.for_config(cfg, read_only=True) as store:
        snap = store.require_snapshot()
        found = store.con.execute(f"SELECT product_id, aspect, CAST(week AS DATE) AS week FROM snap_{snap}.aspect_alerts").df()
        orders, lines = shop_sales(store.con)
    truth = pd.read_csv(folder / "insight_truth.csv")
    return found, truth, cfg.insight.fdr, backtest(orders, lines)


def shop_sales(con: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A store's orders (not cancelled) and their lines, as ``demand.backtest`` takes them."""
    orders = con.execute("SELECT order_id, customer_id, order_ts AS ts FROM orders WHERE status <> 'cancelled'").df()
    lines = con.execute("SELECT i.order_id, p.category, i.quantity AS units, "
                        "CAST(i.unit_price * i.quantity - i.discount AS DOUBLE) AS revenue FROM order_items i "
                        "JOIN products p USING (product_id)").df()
    return orders, lines


def cdnow_sales() -> tuple[pd.DataFrame, pd.DataFrame]:
    """CDNOW (the full 23,570-customer cohort, shipped in ``lifetimes``): orders and lines."""
    from shoplens.datasets.public import package_file

    df = pd.read_csv(package_file("lifetimes", "lifetimes/datasets/CDNOW_master.txt"), sep=r"\s+", header=0,
                     names=["customer_id", "date", "cds", "dollars"], dtype=str)
    df["ts"], df["order_id"] = pd.to_datetime(df["date"], format="%Y%m%d"), range(len(df))
    lines = pd.DataFrame({"order_id": df["order_id"], "category": "Music", "units": df["cds"].astype(float),
                          "revenue": df["dollars"].astype(float)})
    return df[["order_id", "customer_id", "ts"]], lines


def score(alerts: pd.DataFrame, truth: pd.DataFrame) -> dict[str, Any]:
    a = {(r.product_id, r.aspect, str(r.week)[:10]) for r in alerts.itertuples()}
    t = {(r.product_id, r.aspect, str(r.week)[:10]) for r in truth.itertuples()}
    weeks = {(p, w) for p, _a, w in t}
    hit = len(a & t)
    near = sum((p, w) in weeks for p, _a, w in a)
    return {"planted": len(t), "alerts": len(a), "found": hit, "near": near,
            "precision": hit / len(a) if a else None, "precision_product_week": near / len(a) if a else None,
            "recall": hit / len(t) if t else None}


def evaluate(seeds: tuple[int, ...] = SEEDS, customers: int = 1500,
             on_seed: Callable[[int], None] | None = None) -> dict[str, Any]:
    rows, fdr, demand = [], 0.0, []
    for seed in seeds:
        if on_seed:
            on_seed(seed)
        with tempfile.TemporaryDirectory(prefix="shoplens-insight-") as tmp:
            found, truth, fdr, demo_demand = _shop(Path(tmp) / "shop", customers, seed)
        rows.append({"seed": seed, **score(found, truth)})
        demand.append(demo_demand)
    total = {k: sum(r[k] for r in rows) for k in ("planted", "alerts", "found", "near")}
    total |= {"precision": total["found"] / total["alerts"] if total["alerts"] else None,
              "precision_product_week": total["near"] / total["alerts"] if total["alerts"] else None,
              "recall": total["found"] / total["planted"] if total["planted"] else None}
    methods = ("time_series", "bottom_up", "naive", "seasonal_naive")
    demo = {m: {k: sum(d[m][k] for d in demand) / len(demand) for k in ("mase", "wape")} for m in methods if demand}
    return {"fdr": fdr, "customers": customers, "per_seed": rows, "total": total,
            "demand": {"demo": demo | {"seeds": len(demand)}, "cdnow": backtest(*cdnow_sales())}}
