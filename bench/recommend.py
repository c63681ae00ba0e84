"""Recommendations at scale: fit + top-10 for every customer, ours (``HybridRecommender``)
against implicit's ALS alone on the same data.

Run:  .venv/bin/python bench/recommend.py [--customers 100000 1000000] [--products 50000]

Data (generated, seeded): products with Zipf(1.1) popularity in 500 categories; each
customer has 1-3 favourite categories and 2-12 baskets of 1-6 products over a year,
80% drawn from the favourites by popularity, the rest from the whole catalogue, with
a personal staple re-bought in a third of the baskets. Every method runs in its own
process (so its peak RSS is its own) and is given the same interaction table; the
data generation is not timed. Never a dense customer x product matrix.

Printed per size: wall time (fit, recommend) and peak RSS of each method, and last the
ratio of our total time to ALS's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

DAY = 86_400.0


def shop(customers: int, products: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    n_cat = 500
    pop = 1.0 / np.arange(1, products + 1) ** 1.1
    item_cat = rng.integers(0, n_cat, products)
    order = np.argsort(item_cat, kind="stable")  # products grouped by category for the draws below
    cat_start = np.searchsorted(item_cat[order], np.arange(n_cat + 1))
    cat_pop = [pop[order[cat_start[c]:cat_start[c + 1]]] for c in range(n_cat)]
    cat_cdf = [np.cumsum(p) / p.sum() if len(p) else p for p in cat_pop]
    all_cdf = np.cumsum(pop) / pop.sum()
    baskets = rng.integers(2, 13, customers)
    fav = rng.integers(0, n_cat, (customers, 3))
    n_fav = rng.integers(1, 4, customers)
    staple = np.searchsorted(all_cdf, rng.random(customers))
    b_cust = np.repeat(np.arange(customers), baskets)
    b_ts = rng.uniform(0, 365, len(b_cust)) * DAY
    sizes = rng.integers(1, 7, len(b_cust))
    l_basket = np.repeat(np.arange(len(b_cust)), sizes)
    l_cust = b_cust[l_basket]
    from_fav = rng.random(len(l_basket)) < 0.8
    cat = fav[l_cust, rng.integers(0, 3, len(l_basket)) % n_fav[l_cust]]
    item = np.searchsorted(all_cdf, rng.random(len(l_basket)))
    u = rng.random(len(l_basket))
    for c in np.unique(cat[from_fav]):
        rows = np.flatnonzero(from_fav & (cat == c))
        if len(cat_cdf[c]):
            item[rows] = order[cat_start[c] + np.searchsorted(cat_cdf[c], u[rows])]
    inter = pd.DataFrame({"customer_id": l_cust, "product_id": item, "ts": b_ts[l_basket], "quantity": 1.0})
    restock = np.flatnonzero(rng.random(len(b_cust)) < 1 / 3)
    inter = pd.concat([inter, pd.DataFrame({"customer_id": b_cust[restock], "product_id": staple[b_cust[restock]],
                                            "ts": b_ts[restock], "quantity": 1.0})], ignore_index=True)
    inter["customer_id"] = "c" + inter["customer_id"].astype(str)
    inter["product_id"] = "p" + inter["product_id"].astype(str)
    products_frame = pd.DataFrame({"product_id": "p" + pd.Series(np.arange(products)).astype(str),
                                   "category": "cat" + pd.Series(item_cat).astype(str)})
    products_frame["name"] = products_frame["product_id"]
    return inter, products_frame


def run_one(method: str, customers: int, products: int) -> dict[str, float]:
    sys.path.insert(0, str(Path(__file__).parent))
    from _util import PeakRss

    inter, prods = shop(customers, products)
    users = pd.unique(inter["customer_id"])
    with PeakRss() as rss:
        t0 = time.perf_counter()
        if method == "ours":
            from shoplens.recommend import HybridRecommender

            model = HybridRecommender().fit(inter, prods)
            t1 = time.perf_counter()
            out = model.recommend(list(users), n=10)
        else:
            import scipy.sparse as sp
            from implicit.cpu.als import AlternatingLeastSquares
            from threadpoolctl import threadpool_limits

            ui = pd.Index(users).get_indexer(inter["customer_id"])
            ii = pd.Index(prods["product_id"]).get_indexer(inter["product_id"])
            x = sp.csr_matrix((np.ones(len(ui), np.float32), (ui, ii)), shape=(len(users), len(prods)))
            x.sum_duplicates()
            with threadpool_limits(1, "blas"):
                model = AlternatingLeastSquares(factors=64, regularization=0.05, iterations=15, random_state=0)
                model.fit(x, show_progress=False)
                t1 = time.perf_counter()
                ids, _scores = model.recommend(np.arange(len(users)), x, N=10, filter_already_liked_items=False)
            out = ids
        t2 = time.perf_counter()
    return {"fit_s": t1 - t0, "recommend_s": t2 - t1, "total_s": t2 - t0, "peak_rss_gb": rss.peak / 2**30,
            "rows": int(len(inter)), "lists": int(len(out))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--products", type=int, default=50_000)
    ap.add_argument("--one", nargs=3, metavar=("METHOD", "CUSTOMERS", "PRODUCTS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]), int(args.one[2]))))
        return
    results: dict[int, dict[str, dict[str, float]]] = {}
    for n in args.customers:
        for method in ("ours", "implicit ALS"):
            proc = subprocess.run([sys.executable, __file__, "--one", "ours" if method == "ours" else "als", str(n),
                                   str(args.products)], capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stderr[-2000:])
                raise SystemExit(f"{method} at {n:,} customers failed")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results.setdefault(n, {})[method] = r
            print(f"{n:>9,} customers, {r['rows']:>10,} lines | {method:<12} fit {r['fit_s']:7.1f} s  "
                  f"recommend {r['recommend_s']:7.1f} s  total {r['total_s']:7.1f} s  peak {r['peak_rss_gb']:5.2f} GiB",
                  flush=True)
    for n, r in results.items():
        print(f"ratio ours / implicit ALS at {n:,} customers: {r['ours']['total_s'] / r['implicit ALS']['total_s']:.2f}x")


if __name__ == "__main__":
    main()
