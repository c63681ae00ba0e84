"""The candidate sources of the hybrid recommender, each fitted on one customer x product
matrix and scoring a batch of customers sparsely (never a dense customer x product matrix).

- ``History``: what the customer bought, how often and how long ago, against the
  product's learned repeat interval (per product where enough customers repeat it, else
  per category, else the whole shop);
- ``CoOccurrence``: item-item cosine over customers (bought together, or viewed together
  when fitted on views), top ``k`` neighbours per product, scored from the customer's items
  weighted by how recently each was bought; ``evidence`` names the items behind a score;
- ``Collaborative``: implicit's ALS (a C++ library, conjugate gradient; folds in a customer
  the model never saw with one solve, no retrain);
- ``Popularity``: recent-weighted purchase counts, overall and per group (segment,
  demographic band).

Item-item similarity is computed here rather than with implicit's ``ItemItemRecommender``
because the reasons need the per-item contributions to each score (which items made
the score), and the sparse product below gives them directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

DAY = 86_400.0


def top_k_rows(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the ``k`` largest entries of each row."""
    m = m.tocsr()
    indptr, indices, data = m.indptr, m.indices, m.data
    counts = np.diff(indptr)
    if counts.max(initial=0) <= k:
        return m
    rows, cols, vals = [], [], []
    for r in np.flatnonzero(counts):
        a, b = indptr[r], indptr[r + 1]
        d = data[a:b]
        keep = np.argpartition(-d, k - 1)[:k] if b - a > k else np.arange(b - a)
        rows.append(np.full(len(keep), r))
        cols.append(indices[a:b][keep])
        vals.append(d[keep])
    if not rows:
        return sp.csr_matrix(m.shape, dtype=m.dtype)
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=m.shape)


def recency_weights(last_day: sp.csr_matrix, half_life_items: float) -> sp.csr_matrix:
    """Each row's entries weighted 0.5 ** (recency rank / half_life): the most recently
    bought item weighs 1, the ``half_life``-th most recent 0.5."""
    w = last_day.tocsr().copy().astype(np.float32)
    rows = np.repeat(np.arange(w.shape[0]), np.diff(w.indptr))
    order = np.lexsort((-w.data, rows))  # by row, most recent first
    rank = np.empty(len(order), dtype=np.float32)
    rank[order] = np.arange(len(order)) - w.indptr[rows[order]]
    w.data = (0.5 ** (rank / half_life_items)).astype(np.float32)
    return w


@dataclass
class Interactions:
    """Customers x products as sparse matrices, days counted from the fit's first day + 1
    (so that 0 means 'never')."""

    counts: sp.csr_matrix  # baskets containing the product
    first: sp.csr_matrix  # day of the first purchase
    last: sp.csr_matrix  # day of the last purchase
    first_basket: sp.csr_matrix  # number of the customer's basket with the first purchase (1 = first)
    last_basket: sp.csr_matrix  # ... and with the last
    baskets: np.ndarray  # baskets per customer
    now: float  # the day recommendations are made for

    @classmethod
    def build(cls, frame: pd.DataFrame, users: pd.Index, items: pd.Index, origin: float, now: float) -> Interactions:
        """``frame``: customer_id, product_id, ts (seconds); one row per purchase line.
        A basket is one customer's purchases at one time."""
        u = users.get_indexer(pd.Index(frame["customer_id"]))
        i = items.get_indexer(pd.Index(frame["product_id"]))
        ok = (u >= 0) & (i >= 0)
        day = (frame["ts"].to_numpy(dtype=np.float64)[ok] - origin) / DAY + 1.0
        lines = pd.DataFrame({"u": u[ok], "i": i[ok], "d": day}).drop_duplicates()
        lines["b"] = lines.groupby("u")["d"].rank(method="dense")  # the basket's number, 1 = first
        agg = lines.groupby(["u", "i"], sort=True).agg(n=("d", "size"), first=("d", "min"), last=("d", "max"),
                                                       first_b=("b", "min"), last_b=("b", "max")).reset_index()
        shape = (len(users), len(items))

        def mat(column: str) -> sp.csr_matrix:
            return sp.csr_matrix((agg[column].to_numpy(np.float32), (agg["u"], agg["i"])), shape=shape)

        baskets = np.zeros(len(users))
        per_user = lines.groupby("u")["b"].max()
        baskets[per_user.index.to_numpy()] = per_user.to_numpy()
        return cls(mat("n"), mat("first"), mat("last"), mat("first_b"), mat("last_b"), baskets, now)

    @property
    def binary(self) -> sp.csr_matrix:
        b = self.counts.copy()
        b.data[:] = 1.0
        return b


@dataclass
class History:
    """Repurchase: counts, recency and the learned repeat interval of each product."""

    min_repeaters: int = 5
    interval: np.ndarray = field(default_factory=lambda: np.zeros(0))
    repeat_rate: np.ndarray = field(default_factory=lambda: np.zeros(0))
    category_repeat: dict[str, float] = field(default_factory=dict)

    def fit(self, x: Interactions, categories: np.ndarray) -> History:
        c = x.counts.tocoo()
        first = x.first.tocoo().data
        last = x.last.tocoo().data
        rep = c.data >= 2
        per_pair = np.where(rep, (last - first) / np.maximum(c.data - 1, 1), np.nan)
        frame = pd.DataFrame({"i": c.col, "gap": per_pair, "rep": rep, "cat": categories[c.col]})
        n_items = x.counts.shape[1]
        by_item = frame.groupby("i").agg(gap=("gap", "median"), repeaters=("rep", "sum"), buyers=("rep", "size"))
        by_cat = frame.groupby("cat").agg(gap=("gap", "median"), repeaters=("rep", "sum"), buyers=("rep", "size"))
        whole = float(np.nanmedian(per_pair)) if rep.any() else np.nan
        cat_gap = frame["cat"].map(by_cat["gap"]).groupby(frame["i"]).first()
        interval = np.full(n_items, whole, dtype=np.float64)
        interval[cat_gap.index.to_numpy()] = cat_gap.fillna(whole).to_numpy()
        own = by_item[by_item["repeaters"] >= self.min_repeaters]
        interval[own.index.to_numpy()] = own["gap"].to_numpy()
        self.interval = np.maximum(np.nan_to_num(interval, nan=np.inf), 1.0)
        self.repeat_rate = np.zeros(n_items)
        self.repeat_rate[by_item.index.to_numpy()] = (by_item["repeaters"] / by_item["buyers"]).to_numpy()
        self.category_repeat = {str(k): float(v) for k, v in (by_cat["repeaters"] / by_cat["buyers"]).items()}
        return self


@dataclass
class CoOccurrence:
    """Item-item cosine similarity over customers, top ``k`` neighbours per product."""

    k: int = 100
    half_life_items: float = 5.0
    block: int = 2000
    sim: sp.csr_matrix = field(default_factory=lambda: sp.csr_matrix((0, 0)))
    _by_target: sp.csr_matrix | None = None  # sim transposed: who points at each product

    def fit(self, binary: sp.csr_matrix) -> CoOccurrence:
        xt = binary.T.tocsr().astype(np.float32)
        norms = np.sqrt(np.asarray(xt.multiply(xt).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        xn = sp.diags(1.0 / norms).astype(np.float32) @ xt
        xnt = xn.T.tocsc()
        parts = []
        for a in range(0, xn.shape[0], self.block):
            s = (xn[a:a + self.block] @ xnt).tocoo()
            off = s.row + a != s.col  # a product is not its own neighbour
            s = sp.csr_matrix((s.data[off], (s.row[off], s.col[off])), shape=s.shape)
            parts.append(top_k_rows(s, self.k))
        self.sim = sp.vstack(parts).tocsr() if parts else sp.csr_matrix((0, 0), dtype=np.float32)
        return self

    def weights(self, last: sp.csr_matrix) -> sp.csr_matrix:
        return recency_weights(last, self.half_life_items)

    def score(self, weights: sp.csr_matrix) -> sp.csr_matrix:
        return (weights @ self.sim).tocsr()

    @property
    def by_target(self) -> sp.csr_matrix:
        """The similarity transposed: row i holds the products that point at i."""
        if self._by_target is None:
            self._by_target = self.sim.T.tocsr()
        return self._by_target


@dataclass
class Ease:
    """EASE (Steck 2019): item-item weights B = I - P / diag(P), P = (X'X + lambda I)^-1,
    dense over products, so only for catalogues up to ``max_items`` (a 10k catalogue is a
    400 MB float32 matrix and a few seconds to invert). A score is the sum of the
    customer's products' weights, so its terms name the products behind it."""

    lam: float = 500.0
    max_items: int = 10_000
    weights: np.ndarray | None = None

    def fit(self, binary: sp.csr_matrix) -> Ease | None:
        if binary.shape[1] > self.max_items or binary.nnz == 0:
            return None
        x = binary.astype(np.float32)
        g = (x.T @ x).toarray()
        g[np.diag_indices_from(g)] += self.lam
        p = np.linalg.inv(g)
        b = -p / np.diag(p)
        b[np.diag_indices_from(b)] = 0
        self.weights = b.astype(np.float32)
        return self

    def score(self, binary_rows: sp.csr_matrix) -> np.ndarray:
        assert self.weights is not None
        return np.asarray(binary_rows @ self.weights)


@dataclass
class Collaborative:
    """implicit's ALS on confidence 1 + alpha * log1p(count)."""

    factors: int = 64
    regularization: float = 0.05
    alpha: float = 10.0
    iterations: int = 15
    random_state: int = 0
    model: Any = None

    def _confidence(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        c = counts.copy().astype(np.float32)
        c.data = self.alpha * np.log1p(c.data)
        return c

    def fit(self, counts: sp.csr_matrix) -> Collaborative:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):  # implicit's own threads; BLAS threads inside them oversubscribe
            self.model = AlternatingLeastSquares(factors=self.factors, regularization=self.regularization,
                                                 iterations=self.iterations, random_state=self.random_state)
            self.model.fit(self._confidence(counts), show_progress=False)
        return self

    @property
    def item_factors(self) -> np.ndarray:
        return np.asarray(self.model.item_factors)  # type: ignore[attr-defined]

    @property
    def user_factors(self) -> np.ndarray:
        return np.asarray(self.model.user_factors)  # type: ignore[attr-defined]

    def fold_in(self, counts: sp.csr_matrix) -> np.ndarray:
        """Factors for customers the model never saw, from their purchases (one solve each)."""
        conf = self._confidence(counts)
        out = np.zeros((counts.shape[0], self.factors), dtype=np.float32)
        for r in range(counts.shape[0]):
            if conf.indptr[r + 1] > conf.indptr[r]:
                out[r] = np.asarray(self.model.recalculate_user(0, conf[r])).ravel()  # type: ignore[attr-defined]
        return out

    def top(self, factors: np.ndarray, k: int) -> sp.csr_matrix:
        """Each row's ``k`` best products by factor score (scores kept as values), by
        implicit's multithreaded top-k (never a dense rows x products block here)."""
        from implicit.cpu.topk import topk

        k = min(k, self.item_factors.shape[0])
        idx, vals = topk(self.item_factors.astype(np.float32), np.ascontiguousarray(factors, dtype=np.float32), k,
                         num_threads=0)
        ok = idx >= 0
        rows = np.repeat(np.arange(factors.shape[0]), k).reshape(idx.shape)
        return sp.csr_matrix((np.maximum(vals[ok], 1e-6), (rows[ok], idx[ok])),
                             shape=(factors.shape[0], self.item_factors.shape[0]))


@dataclass
class Popularity:
    """Purchases per customer for each product, overall and per group (segment,
    demographic band), optionally with a half-life in days; a group's rates are shrunk
    towards the overall ones by ``prior_customers`` (a small group is mostly the shop)."""

    half_life_days: float | None = 60.0
    prior_customers: float = 50.0
    overall: np.ndarray = field(default_factory=lambda: np.zeros(0))
    groups: dict[str, np.ndarray] = field(default_factory=dict)

    def fit(self, x: Interactions, group_of_user: pd.Series | None = None) -> Popularity:
        w = x.counts.copy()
        if self.half_life_days is not None:
            w.data = w.data * 0.5 ** ((x.now - x.last.data) / self.half_life_days)
        buyers = max(int((np.diff(w.indptr) > 0).sum()), 1)
        rate = np.asarray(w.sum(axis=0)).ravel() / buyers
        self.overall = rate / max(float(rate.max(initial=0.0)), 1e-12)
        self.groups = {}
        if group_of_user is not None:
            codes = group_of_user.to_numpy()
            for g in pd.unique(codes[pd.notna(codes)]):
                rows = np.flatnonzero(codes == g)
                pop = (np.asarray(w[rows].sum(axis=0)).ravel() + self.prior_customers * rate) / (len(rows) + self.prior_customers)
                self.groups[str(g)] = pop / max(float(pop.max(initial=0.0)), 1e-12)
        return self

    def top(self, k: int, group: str | None = None) -> np.ndarray:
        pop = self.groups.get(group, self.overall) if group is not None else self.overall
        k = min(k, len(pop))
        idx = np.argpartition(-pop, k - 1)[:k]
        return idx[np.argsort(-pop[idx])]
