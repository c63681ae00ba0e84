"""``shoplens evaluate recommendations``: the hybrid against the strongest baselines on
real data, one temporal protocol for all.

Protocol: each customer's last basket (every product bought at their last purchase
time) is the test; everything before it is what the methods see. Ranking is over the
whole catalogue (no sampled negatives). Where products are not bought twice
(MovieLens), every method excludes what the customer already has. Metrics at 10:
HR (any hit), NDCG (binary gains, ideal over min(basket, 10)), Recall, catalogue
coverage, and recall split into repeat products (bought before) and new ones.

Cold customers: a random 20% of test customers are left out of every fit; the hybrid
serves them (a) from their purchases given at request time, with no retrain, and (b)
with no history at all (their demographic group's popularity); both beside global
popularity on the same customers.

The hybrid's ranker learns on the training data's own last baskets (see
``hybrid.HybridRecommender.fit``): the test baskets are never seen by any fit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from shoplens.errors import NotFoundError
from shoplens.recommend.hybrid import HybridRecommender
from shoplens.recommend.sources import DAY, Collaborative, CoOccurrence, Interactions

K = 10
DATASETS = ("instacart", "movielens", "demo")


@dataclass
class Data:
    name: str
    interactions: pd.DataFrame  # customer_id, product_id, ts (seconds), quantity
    products: pd.DataFrame | None = None
    customers: pd.DataFrame | None = None
    exclude_purchased: bool = False


@dataclass
class Result:
    dataset: str
    table: pd.DataFrame  # method x metric, warm customers
    cold: pd.DataFrame  # method x metric, cold customers
    info: dict[str, Any] = field(default_factory=dict)


def load(name: str) -> Data:
    if name == "instacart":
        return _instacart()
    if name == "movielens":
        return _movielens()
    if name == "demo":
        return _demo()
    raise NotFoundError(f"evaluate recommendations: unknown dataset '{name}': expected one of {', '.join(DATASETS)}")


def _instacart() -> Data:
    from shoplens.datasets.public import instacart_frames

    orders, items = instacart_frames()
    ts = orders.set_index("order_id")["order_ts"].map(lambda t: t.timestamp())
    inter = pd.DataFrame({"customer_id": items["customer_id"].astype(str), "product_id": items["product_id"].astype(str),
                          "ts": items["order_id"].map(ts).to_numpy(), "quantity": 1.0})
    products = pd.DataFrame({"product_id": sorted(inter["product_id"].unique()), "category": "grocery"})
    return Data("instacart", inter, products)


def _movielens() -> Data:
    from shoplens.datasets.public import movielens_frames

    users, items, inter = movielens_frames()
    age = pd.to_numeric(users["age"])
    band = np.select([age < 25, age < 35, age < 50], ["<25", "25-34", "35-49"], "50+")
    customers = pd.DataFrame({"customer_id": users["user_id"], "group": users["gender"] + "/" + band})
    products = pd.DataFrame({"product_id": items["item_id"], "name": items["movie_title"],
                             "category": "Movies/" + items["class"].fillna("unknown").str.split(" ").str[0]})
    frame = pd.DataFrame({"customer_id": inter["user_id"], "product_id": inter["item_id"],
                          "ts": pd.to_numeric(inter["timestamp"]).astype(float), "quantity": 1.0})
    return Data("movielens", frame, products, customers, exclude_purchased=True)


def _demo() -> Data:
    import tempfile

    from shoplens.datasets.demo import generate

    with tempfile.TemporaryDirectory() as tmp:
        generate(tmp)
        orders = pd.read_csv(f"{tmp}/orders.csv", dtype=str)
        items = pd.read_csv(f"{tmp}/order_items.csv", dtype=str)
        products = pd.read_csv(f"{tmp}/products.csv", dtype=str)
        customers = pd.read_csv(f"{tmp}/customers.csv", dtype=str, encoding="gb18030")
    orders = orders[orders["status"].fillna("paid") == "paid"]
    ts = pd.to_datetime(orders["order_ts"], errors="coerce", format="mixed")
    orders = orders.assign(ts=ts).dropna(subset=["ts"])
    merged = items.merge(orders[["order_id", "customer_id", "ts"]], on="order_id")
    inter = pd.DataFrame({"customer_id": merged["customer_id"], "product_id": merged["product_id"],
                          "ts": merged["ts"].astype("datetime64[ns]").astype("int64") / 1e9,
                          "quantity": pd.to_numeric(merged["quantity"], errors="coerce").fillna(1.0)})
    cust = pd.DataFrame({"customer_id": customers["customer_id"], "group": customers.get("gender", pd.Series(dtype=str))})
    return Data("demo", inter, products[["product_id", "name", "category"]], cust)


def split(data: Data) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test): each customer's last basket is the test, for customers with an
    earlier one."""
    inter = data.interactions
    last = inter.groupby("customer_id")["ts"].transform("max")
    first = inter.groupby("customer_id")["ts"].transform("min")
    is_test = (inter["ts"] == last) & (last > first)
    return inter[~is_test], inter[is_test]


# ------------------------------------------------------------------ metrics
def metrics(recs: dict[str, list[str]], test: pd.DataFrame, train: pd.DataFrame, n_items: int) -> dict[str, float]:
    truth = test.groupby("customer_id")["product_id"].apply(set)
    seen = train.groupby("customer_id")["product_id"].apply(set)
    hr, ndcg, recall, rep_hit, rep_n, new_hit, new_n = [], [], [], 0, 0, 0, 0
    shown: set[str] = set()
    for cid, items in truth.items():
        got = recs.get(str(cid), [])[:K]
        shown.update(got)
        hits = [p in items for p in got]
        hr.append(float(any(hits)))
        dcg = sum(1 / np.log2(r + 2) for r, h in enumerate(hits) if h)
        idcg = sum(1 / np.log2(r + 2) for r in range(min(len(items), K)))
        ndcg.append(dcg / idcg)
        recall.append(sum(hits) / len(items))
        before = seen.get(cid, set())
        top = set(got)
        for p in items:
            if p in before:
                rep_n += 1
                rep_hit += p in top
            else:
                new_n += 1
                new_hit += p in top
    return {"customers": len(truth), "HR@10": float(np.mean(hr)), "NDCG@10": float(np.mean(ndcg)),
            "Recall@10": float(np.mean(recall)), "coverage": len(shown) / max(n_items, 1),
            "repeat_recall": rep_hit / rep_n if rep_n else float("nan"),
            "new_recall": new_hit / new_n if new_n else float("nan")}


# ---------------------------------------------------------------- baselines
class _Matrix:
    """The training interactions as a customer x product count matrix."""

    def __init__(self, train: pd.DataFrame, items: pd.Index):
        self.users = pd.Index(pd.unique(train["customer_id"]))
        self.items = items
        origin = float(train["ts"].min())
        self.x = Interactions.build(train, self.users, items, origin, (float(train["ts"].max()) - origin) / DAY + 1)

    def top(self, scores: np.ndarray, users: list[str], exclude: bool) -> dict[str, list[str]]:
        """Top 10 per customer from a (customers x products) dense score block."""
        if exclude:
            seen = self.x.counts[self.users.get_indexer(pd.Index(users))]
            scores = scores.copy()
            scores[seen.nonzero()] = -np.inf
        idx = np.argpartition(-scores, K, axis=1)[:, :K]
        order = np.take_along_axis(-scores, idx, axis=1).argsort(axis=1)
        idx = np.take_along_axis(idx, order, axis=1)
        return {u: self.items[row].tolist() for u, row in zip(users, idx, strict=True)}


def _blocks(users: list[str], size: int = 1000) -> list[list[str]]:
    return [users[a:a + size] for a in range(0, len(users), size)]


def popularity(m: _Matrix, users: list[str], exclude: bool, **_: Any) -> dict[str, list[str]]:
    pop = np.asarray(m.x.counts.sum(axis=0)).ravel()
    out: dict[str, list[str]] = {}
    for b in _blocks(users):
        out |= m.top(np.tile(pop, (len(b), 1)), b, exclude)
    return out


def personal(m: _Matrix, users: list[str], exclude: bool, **_: Any) -> dict[str, list[str]]:
    """The customer's most bought products (latest first on ties), then global popularity."""
    pop = np.asarray(m.x.counts.sum(axis=0)).ravel()
    pop = pop / (pop.max() + 1)
    out: dict[str, list[str]] = {}
    for b in _blocks(users):
        rows = m.users.get_indexer(pd.Index(b))
        own = m.x.counts[rows].toarray() + m.x.last[rows].toarray() / (m.x.now * 10)
        out |= m.top(own + pop, b, exclude)
    return out


def item_knn(m: _Matrix, users: list[str], exclude: bool, **_: Any) -> dict[str, list[str]]:
    co = CoOccurrence(k=100).fit(m.x.binary)
    out: dict[str, list[str]] = {}
    for b in _blocks(users):
        rows = m.users.get_indexer(pd.Index(b))
        out |= m.top(co.score(m.x.binary[rows]).toarray(), b, exclude)
    return out


def als(m: _Matrix, users: list[str], exclude: bool, **params: Any) -> dict[str, list[str]]:
    model = Collaborative(**params).fit(m.x.counts)
    f = model.user_factors[m.users.get_indexer(pd.Index(users))]
    return m.top(f @ model.item_factors.T, users, exclude)


def bpr(m: _Matrix, users: list[str], exclude: bool, **_: Any) -> dict[str, list[str]]:
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):
        model = BayesianPersonalizedRanking(factors=64, iterations=100, random_state=0)
        model.fit(m.x.binary, show_progress=False)
    f = np.asarray(model.user_factors)[m.users.get_indexer(pd.Index(users))]
    return m.top(f @ np.asarray(model.item_factors).T, users, exclude)


def ease(m: _Matrix, users: list[str], exclude: bool, lam: float = 500.0) -> dict[str, list[str]]:
    """EASE (Steck 2019): B = I - P / diag(P), P = (X'X + lambda I)^-1, dense over products."""
    x = m.x.binary.astype(np.float32)
    g = (x.T @ x).toarray()
    g[np.diag_indices_from(g)] += lam
    p = np.linalg.inv(g)
    b = -p / np.diag(p)
    b[np.diag_indices_from(b)] = 0
    out: dict[str, list[str]] = {}
    for blk in _blocks(users):
        out |= m.top(np.asarray(x[m.users.get_indexer(pd.Index(blk))] @ b), blk, exclude)
    return out


# hyperparameters chosen per data set on a validation split of the training data (each
# customer's last training basket), never on the test baskets
GRIDS: dict[str, list[dict[str, Any]]] = {
    "implicit ALS": [{"factors": f, "regularization": r, "alpha": a}
                     for f in (32, 64, 128) for r in (0.01, 0.1, 1.0) for a in (1.0, 10.0, 40.0)],
    "EASE": [{"lam": lam} for lam in (50.0, 200.0, 500.0, 1000.0, 3000.0)],
}
EASE_GRID_MAX_ITEMS = 5000  # a bigger catalogue takes minutes per EASE fit: lambda 500, untuned


def _tune(method: str, fn: Callable[..., dict[str, list[str]]], train: pd.DataFrame, items: pd.Index,
          exclude: bool) -> dict[str, Any]:
    grid = GRIDS.get(method, [])
    if len(grid) < 2 or (method == "EASE" and len(items) > EASE_GRID_MAX_ITEMS):
        return {}
    vtrain, vtest = split(Data("validation", train))
    vm = _Matrix(vtrain, items)
    vusers = sorted(vtest["customer_id"].unique())
    scored = [(metrics(fn(vm, vusers, exclude, **g), vtest, vtrain, len(items))["NDCG@10"], i) for i, g in enumerate(grid)]
    return grid[max(scored)[1]]


BASELINES: dict[str, Callable[..., dict[str, list[str]]]] = {
    "global popularity": popularity, "personal popularity": personal, "item-kNN": item_knn,
    "implicit ALS": als, "implicit BPR": bpr, "EASE": ease,
}


def _hybrid_recs(frame: pd.DataFrame) -> dict[str, list[str]]:
    lists = frame.sort_values(["customer_id", "rank"]).groupby("customer_id")["product_id"].apply(list)
    return {str(k): v for k, v in lists.items()}


def evaluate(name: str, on_info: Callable[[str], None] = lambda _m: None, seed: int = 0) -> Result:
    data = load(name)
    train, test = split(data)
    items = pd.Index(pd.unique(data.interactions["product_id"]))
    users = sorted(test["customer_id"].unique())
    rng = np.random.default_rng(seed)
    cold = sorted(rng.choice(users, max(1, len(users) // 5), replace=False).tolist())
    warm = [u for u in users if u not in set(cold)]
    rows: dict[str, dict[str, float]] = {}
    timing: dict[str, float] = {}
    m = _Matrix(train, items)
    chosen: dict[str, dict[str, Any]] = {}
    for method, fn in BASELINES.items():
        on_info(f"{name}: {method}")
        t = time.perf_counter()
        chosen[method] = _tune(method, fn, train, items, data.exclude_purchased)
        recs = fn(m, users, data.exclude_purchased, **chosen[method])
        timing[method] = time.perf_counter() - t
        rows[method] = metrics({u: recs[u] for u in warm}, test[test["customer_id"].isin(warm)], train, len(items))
    on_info(f"{name}: hybrid")
    t = time.perf_counter()
    model = HybridRecommender(random_state=seed)
    model.fit(train, data.products, data.customers, on_info=on_info, exclude_purchased=data.exclude_purchased)
    hyb = model.recommend(warm, n=K, exclude_purchased=data.exclude_purchased)
    timing["hybrid"] = time.perf_counter() - t
    rows["hybrid"] = metrics(_hybrid_recs(hyb), test[test["customer_id"].isin(warm)], train, len(items))
    table = pd.DataFrame(rows).T

    on_info(f"{name}: cold customers (left out of the fit)")
    cold_train = train[~train["customer_id"].isin(cold)]
    cold_test = test[test["customer_id"].isin(cold)]
    cold_rows: dict[str, dict[str, float]] = {}
    cold_rows["global popularity, history excluded"] = metrics(popularity(m, cold, data.exclude_purchased), cold_test,
                                                               train, len(items))
    cold_rows["global popularity, knowing nothing"] = metrics(popularity(m, cold, False), cold_test, train, len(items))
    cold_model = HybridRecommender(random_state=seed)
    customers = data.customers
    cold_model.fit(cold_train, data.products, customers, on_info=on_info, exclude_purchased=data.exclude_purchased)
    given = cold_model.recommend(cold, n=K, exclude_purchased=data.exclude_purchased,
                                 history=train[train["customer_id"].isin(cold)])
    cold_rows["hybrid, history at request time"] = metrics(_hybrid_recs(given), cold_test, train, len(items))
    bare = cold_model.recommend(cold, n=K, exclude_purchased=data.exclude_purchased,
                                groups=_groups(customers, cold))
    cold_rows["hybrid, no history"] = metrics(_hybrid_recs(bare), cold_test, train, len(items))
    info = {"customers": len(users), "cold": len(cold), "products": len(items), "interactions": len(data.interactions),
            "seconds": {k: round(v, 1) for k, v in timing.items()},
            "baseline_params": {k: v for k, v in chosen.items() if v}, "ranker": getattr(model, "validation_", None),
            "date": datetime.now().strftime("%Y-%m-%d")}
    return Result(name, table, pd.DataFrame(cold_rows).T, info)


def _groups(customers: pd.DataFrame | None, ids: list[str]) -> dict[str, str] | None:
    if customers is None or "group" not in customers:
        return None
    g = customers.astype({"customer_id": str}).set_index("customer_id")["group"]
    return {i: str(g.get(i)) for i in ids if pd.notna(g.get(i))}
