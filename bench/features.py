"""Benchmark: ShopLens' behavioural features (Ibis -> DuckDB) vs a straightforward pandas
groupby implementation of the same features, in one process, on the same Parquet files.

    .venv/bin/python bench/features.py                 # 10M orders, ~1M customers
    .venv/bin/python bench/features.py --orders 1000000 --customers 100000

The data (orders, one line per order over 1,000 products in 30 categories, events,
customers) is generated once into bench/.cache/ and reused. Each side reads the Parquet
files itself; peak RSS is sampled every 20 ms while each side runs. The two results are
compared column by column, and the ratio pandas/ours is printed last.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import PeakRss  # noqa: E402
from pandas_baseline import differing_columns, pandas_features  # noqa: E402

from shoplens.config import StoreConfig  # noqa: E402
from shoplens.features import Tables, behaviour_features  # noqa: E402
from shoplens.features.rfm import load_rules  # noqa: E402
from shoplens.store import tune  # noqa: E402

AS_OF = datetime(2025, 1, 1)
START = np.datetime64("2023-01-01T00:00:00", "us")
SPAN_US = int((np.datetime64("2025-01-01", "us") - START).astype(np.int64))


def _ids(prefix: str, values: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(values), pa.string()), "")


def generate(folder: Path, n_orders: int, n_customers: int, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    cust = np.arange(n_customers)
    pq.write_table(pa.table({
        "customer_id": _ids("c", cust),
        "signup_at": pa.array(START + rng.integers(0, SPAN_US, n_customers).astype("timedelta64[us]")),
    }), folder / "customers.parquet")
    n_products = 1000
    pq.write_table(pa.table({
        "product_id": _ids("p", np.arange(n_products)),
        "category": pa.array([f"cat{i % 30:02d}/sub{i % 7}" for i in range(n_products)]),
    }), folder / "products.parquet")
    # skewed activity: a few customers buy a lot
    who = np.minimum((rng.pareto(1.5, n_orders) * n_customers / 8).astype(np.int64), n_customers - 1)
    who = rng.permutation(n_customers)[who]
    oid = np.arange(n_orders)
    status = rng.choice(np.array(["paid", "cancelled", "returned"]), n_orders, p=[0.9, 0.05, 0.05])
    amount = np.round(rng.lognormal(4.5, 0.8, n_orders), 2)
    discount = np.where(rng.random(n_orders) < 0.3, np.round(amount * 0.1, 2), 0.0)
    pq.write_table(pa.table({
        "order_id": _ids("o", oid), "customer_id": _ids("c", who),
        "order_ts": pa.array(START + rng.integers(0, SPAN_US, n_orders).astype("timedelta64[us]")),
        "status": pa.array(status), "amount": amount, "discount": discount,
    }), folder / "orders.parquet", row_group_size=1_000_000)
    prod = rng.integers(0, n_products, n_orders)
    pq.write_table(pa.table({
        "order_id": _ids("o", oid), "line_no": np.ones(n_orders, np.int64), "product_id": _ids("p", prod),
        "quantity": np.ones(n_orders, np.int64), "unit_price": amount + discount, "discount": discount,
    }), folder / "order_items.parquet", row_group_size=1_000_000)
    n_events = n_orders // 2
    ev_who = rng.permutation(n_customers)[np.minimum((rng.pareto(1.5, n_events) * n_customers / 8).astype(np.int64), n_customers - 1)]
    pq.write_table(pa.table({
        "customer_id": _ids("c", ev_who),
        "event_ts": pa.array(START + rng.integers(0, SPAN_US, n_events).astype("timedelta64[us]")),
        "event_type": pa.array(rng.choice(np.array(["view", "search", "cart", "favorite"]), n_events, p=[0.7, 0.1, 0.15, 0.05])),
        "product_id": _ids("p", rng.integers(0, n_products, n_events)),
        "session_id": _ids("s", rng.integers(0, n_events // 3 + 1, n_events)),
    }), folder / "events.parquet", row_group_size=1_000_000)


NAMES = ("customers", "orders", "order_items", "products", "events")


def run_ours(folder: Path, memory_limit: str) -> tuple[float, int, pd.DataFrame]:
    import ibis

    with PeakRss() as mem:
        t0 = time.perf_counter()
        con = duckdb.connect()
        tune(con, memory_limit)
        for n in NAMES:
            con.execute(f"CREATE VIEW {n} AS SELECT * FROM read_parquet('{folder / (n + '.parquet')}')")
        backend = ibis.duckdb.from_connection(con)
        feats, cats = behaviour_features(Tables(*(backend.table(n) for n in NAMES)), AS_OF, load_rules())
        con.execute(f"CREATE TABLE features AS {ibis.to_sql(feats, dialect='duckdb')}")
        con.execute(f"CREATE TABLE category_shares AS {ibis.to_sql(cats, dialect='duckdb')}")
        seconds = time.perf_counter() - t0
    result = con.execute("SELECT * FROM features").df()
    con.close()
    return seconds, mem.peak, result


def run_pandas(folder: Path) -> tuple[float, int, pd.DataFrame]:
    with PeakRss() as mem:
        t0 = time.perf_counter()
        t = {n: pd.read_parquet(folder / f"{n}.parquet") for n in NAMES}
        result = pandas_features(t["customers"], t["orders"], t["order_items"], t["products"], t["events"],
                                 pd.Timestamp(AS_OF), load_rules())
        seconds = time.perf_counter() - t0
        del t
    return seconds, mem.peak, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", type=int, default=10_000_000)
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--memory-limit", default=StoreConfig().memory_limit, help="DuckDB memory limit (default: as `shoplens build`)")
    ap.add_argument("--only-ours", action="store_true", help="skip the pandas baseline (no ratio)")
    args = ap.parse_args()
    folder = Path(__file__).resolve().parent / ".cache" / f"orders{args.orders}_customers{args.customers}"
    if not (folder / "events.parquet").exists():
        t0 = time.perf_counter()
        generate(folder, args.orders, args.customers)
        print(f"generated data in {time.perf_counter() - t0:.1f}s -> {folder}")
    print(f"{args.orders:,} orders, {args.customers:,} customers, {args.orders // 2:,} events, {psutil.cpu_count()} cores")
    ours_s, ours_rss, ours = run_ours(folder, args.memory_limit)
    print(f"shoplens (Ibis -> DuckDB, memory_limit {args.memory_limit}): {ours_s:8.2f} s   peak RSS {ours_rss / 2**30:5.2f} GiB")
    if args.only_ours:
        return
    gc.collect()
    pd_s, pd_rss, ref = run_pandas(folder)
    print(f"pandas groupby baseline:   {pd_s:8.2f} s   peak RSS {pd_rss / 2**30:5.2f} GiB")
    bad = differing_columns(ours, ref, [c for c in ours.columns if c != "customer_id"])
    print("results: " + ("all feature columns equal" if not bad else "DIFFER in " + ", ".join(bad)))
    print(f"ratio (pandas time / shoplens time): {pd_s / ours_s:.2f}x")


if __name__ == "__main__":
    main()
