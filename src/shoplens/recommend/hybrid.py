"""``HybridRecommender``: candidates from every source, ranked by a LightGBM lambdarank
model over the sources' scores and the customer's profile, each recommendation with the
source(s) that produced it and a reason built from the same numbers.

How it learns without touching the evaluation's test data: ``fit`` holds out each
customer's last basket of the data it is given, fits the sources on the rest, and trains
the ranker on the candidates' features against that basket (early stopping on a
validation share of those customers); then it refits the sources on everything.

Reasons are faithful by construction: each source's part in a score is measured by
asking the ranker without that source's evidence (``recommend.explain``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from shoplens.recommend.explain import FEATURES, explain
from shoplens.recommend.inputs import (
    aspects,
    customers_frame,
    embeddings,
    normalise,
    products_frame,
)
from shoplens.recommend.reasons import Reasons
from shoplens.recommend.sources import (
    DAY,
    Collaborative,
    CoOccurrence,
    Ease,
    History,
    Interactions,
    Popularity,
)


@dataclass
class Fitted:
    """The sources fitted on one set of interactions."""

    x: Interactions
    history: History
    co: CoOccurrence
    pop: Popularity
    als: Collaborative | None
    ease: Ease | None
    views: CoOccurrence | None
    view_last: sp.csr_matrix | None


@dataclass
class _Rows:
    """A batch of customers' purchases (and views) as rows over all products."""

    counts: sp.csr_matrix
    last: sp.csr_matrix
    first_basket: sp.csr_matrix
    last_basket: sp.csr_matrix
    vlast: sp.csr_matrix | None
    baskets: np.ndarray


def _keys(m: sp.csr_matrix) -> np.ndarray:
    m = m.tocsr()
    m.sort_indices()
    rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
    return rows * m.shape[1] + m.indices


def _gather(m: sp.csr_matrix, keys: np.ndarray) -> np.ndarray:
    """``m``'s values at the (row * n_cols + col) ``keys``, 0 where absent."""
    m = m.tocsr()
    m.sort_indices()
    mk = _keys(m)
    if len(mk) == 0:
        return np.zeros(len(keys), dtype=np.float32)
    pos = np.clip(np.searchsorted(mk, keys), 0, len(mk) - 1)
    hit = mk[pos] == keys
    return np.where(hit, m.data[pos], 0.0).astype(np.float32)


class HybridRecommender:
    """A ranked top-N per customer from repurchase, bought/viewed together, ALS, content,
    popularity and (when given) aspect fit, blended by a learned ranker.

    ``interactions``: customer_id, product_id, ts (datetime or seconds), quantity.
    ``products`` (optional): product_id, name, category, and an ``embedding`` column or
    ``aspect.*`` praise shares. ``customers`` (optional): customer_id, ``group``
    (segment or demographic band), numeric profile columns named in ``profile_features``,
    ``aspect.*`` polarities. ``views`` (optional): customer_id, product_id, ts.
    """

    def __init__(self, n_candidates: int = 100, neighbours: int = 100, factors: int = 64, als_iterations: int = 15,
                 non_repeat_threshold: float = 0.05, profile_features: Sequence[str] = (),
                 n_estimators: int = 150, learning_rate: float = 0.1, max_train_customers: int = 10_000,
                 max_episodes: int = 3,
                 random_state: int = 0, reasons: Reasons | None = None):
        self.n_candidates = n_candidates
        self.neighbours = neighbours
        self.factors = factors
        self.als_iterations = als_iterations
        self.non_repeat_threshold = non_repeat_threshold
        self.profile_features = tuple(profile_features)
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_train_customers = max_train_customers
        self.max_episodes = max_episodes
        self.random_state = random_state
        self.reasons = reasons

    # ---------------------------------------------------------------- fitting
    def fit(self, interactions: pd.DataFrame, products: pd.DataFrame | None = None,
            customers: pd.DataFrame | None = None, views: pd.DataFrame | None = None,
            on_info: Callable[[str], None] = lambda _m: None, exclude_purchased: bool | None = None) -> HybridRecommender:
        """``exclude_purchased``: what the ranker's training candidates leave out, as
        ``recommend`` will (None: bought products of non-repeat categories)."""
        inter = normalise(interactions)
        vw = normalise(views) if views is not None and len(views) else None
        self.products_ = products_frame(products, inter, vw)
        self.names_ = self.products_["name"].astype(str).to_numpy()
        self.items_ = pd.Index(self.products_["product_id"])
        self.users_ = pd.Index(pd.unique(pd.concat([inter["customer_id"]] + ([vw["customer_id"]] if vw is not None else []))))
        self.categories_ = self.products_["category"].to_numpy()
        self.origin_ = float(min(inter["ts"].min(), vw["ts"].min() if vw is not None else np.inf))
        self.customers_ = customers_frame(customers, self.users_, self.profile_features)
        self.item_emb_ = embeddings(self.products_)
        self.item_aspects_ = aspects(self.products_)
        self.popularity_: dict[str, Any] = {"half_life_days": 60.0, "by_group": True}

        on_info("training the ranker on each customer's last basket")
        self.ranker_ = self._train_ranker(inter, vw, on_info, exclude_purchased)
        on_info("fitting the sources on all purchases")
        self.fitted_ = self._fit_sources(inter, vw)
        return self

    def _fit_sources(self, inter: pd.DataFrame, vw: pd.DataFrame | None) -> Fitted:
        now = (float(max(inter["ts"].max(), vw["ts"].max() if vw is not None else -np.inf)) - self.origin_) / DAY + 1
        x = Interactions.build(inter, self.users_, self.items_, self.origin_, now)
        history = History().fit(x, self.categories_)
        co = CoOccurrence(k=self.neighbours).fit(x.binary)
        pop = Popularity(self.popularity_["half_life_days"]).fit(
            x, self.customers_.get("group") if self.popularity_["by_group"] else None)
        als = None
        if x.counts.nnz >= 1000 and min(x.counts.shape) > self.factors:
            als = Collaborative(factors=self.factors, iterations=self.als_iterations,
                                random_state=self.random_state).fit(x.counts)
        views = view_last = None
        if vw is not None:
            vx = Interactions.build(vw, self.users_, self.items_, self.origin_, now)
            views, view_last = CoOccurrence(k=self.neighbours).fit(vx.binary), vx.last
        return Fitted(x, history, co, pop, als, Ease().fit(x.binary), views, view_last)

    def _train_ranker(self, inter: pd.DataFrame, vw: pd.DataFrame | None, on_info: Callable[[str], None],
                      exclude_purchased: bool | None) -> Any:
        """A lambdarank model over the candidates' features, labelled by the products of
        each customer's last basket (and, on a small shop, of the two before it, each
        an episode with the sources refitted on what came before)."""
        import lightgbm as lgb

        # 1 = the customer's last basket, 2 = the one before, ...
        back = inter.groupby("customer_id")["ts"].rank(method="dense", ascending=False).to_numpy()
        n_first = int(inter.loc[back == 2, "customer_id"].nunique())  # customers with an earlier basket
        episodes = max(1, min(self.max_episodes, self.max_train_customers // max(n_first, 1)))
        rng = np.random.default_rng(self.random_state)
        frames = []
        for e in range(episodes):
            has_earlier = pd.Series(back > e + 1).groupby(inter["customer_id"].to_numpy()).transform("any").to_numpy()
            label_rows = (back == e + 1) & has_earlier
            label = inter[label_rows]
            users = np.asarray(pd.unique(label["customer_id"]))
            if len(users) > self.max_train_customers // episodes:
                users = rng.choice(users, self.max_train_customers // episodes, replace=False)
            if len(users) < 20:
                break
            cut = label.groupby("customer_id")["ts"].first()
            before = inter[back > e + 1]
            vw_before = None
            if vw is not None:
                vw_before = vw[vw["ts"] < vw["customer_id"].map(cut).fillna(np.inf)]
            fitted = self._fit_sources(before, vw_before)
            if e == 0:
                fitted.pop = self._choose_popularity(fitted, label)
            else:
                fitted.pop = Popularity(self.popularity_["half_life_days"]).fit(
                    fitted.x, self.customers_.get("group") if self.popularity_["by_group"] else None)
            uidx = np.sort(self.users_.get_indexer(pd.Index(users)))
            bs = self._batch_size()
            frame = pd.concat([self._candidates(fitted, uidx[a:a + bs], exclude_purchased)[0]
                               for a in range(0, len(uidx), bs)], ignore_index=True)
            truth = set(zip(self.users_.get_indexer(pd.Index(label["customer_id"])),
                            self.items_.get_indexer(pd.Index(label["product_id"])), strict=True))
            frame["y"] = [int((u, i) in truth) for u, i in zip(frame["u"], frame["i"], strict=True)]
            frame = frame[frame.groupby("u")["y"].transform("max") > 0]
            frames.append(frame.assign(episode=e))
            on_info(f"ranker episode {e + 1}/{episodes}: {frame['u'].nunique():,} customers")
        if not frames:
            return None
        frame = pd.concat(frames, ignore_index=True)
        frame["g"] = frame["episode"] * len(self.users_) + frame["u"]
        ids = frame["u"].unique()
        if len(ids) < 20:
            return None
        rng.shuffle(ids)
        valid = set(ids[: max(1, len(ids) // 5)].tolist())  # whole customers, every episode of them
        is_valid = frame["u"].isin(valid).to_numpy()
        cols = self._feature_names()
        on_info(f"ranker: {len(ids):,} customers, {len(frame):,} candidates, {frame['y'].mean():.1%} bought")

        def part(mask: np.ndarray) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
            f = frame[mask]
            return f[cols], f["y"].to_numpy(), f.groupby("g", sort=False).size().to_numpy()

        xt, yt, gt = part(~is_valid)
        xv, yv, gv = part(is_valid)
        model = lgb.LGBMRanker(objective="lambdarank", n_estimators=self.n_estimators, learning_rate=self.learning_rate,
                               num_leaves=31, min_child_samples=20, subsample=0.8, subsample_freq=1,
                               colsample_bytree=0.9, random_state=self.random_state, verbose=-1, n_jobs=2,
                               deterministic=True, force_row_wise=True)
        with warnings.catch_warnings():  # eval_set: renamed in LightGBM 4.7, the only form before it
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message=".*eval_set.*")
            model.fit(xt, yt, group=gt, eval_set=[(xv, yv)], eval_group=[gv], eval_at=[10],
                      callbacks=[lgb.early_stopping(30, verbose=False)])
        self.validation_ = {"customers": int(len(valid)), "episodes": int(frame["episode"].max() + 1), "ndcg@10": float(model.best_score_["valid_0"]["ndcg@10"]),
                            "trees": int(model.best_iteration_ or self.n_estimators)}
        return model

    def _batch_size(self) -> int:
        """Customers per batch: with EASE (small catalogues) its dense scores stay near
        20M cells; otherwise nothing per batch is dense over the catalogue."""
        if len(self.items_) > Ease.max_items:
            return 5000
        return max(200, min(5000, 20_000_000 // max(len(self.items_), 1)))

    def _choose_popularity(self, fitted: Fitted, label: pd.DataFrame) -> Popularity:
        """The popularity half-life (30, 90, 365 days or none), with or without the
        customers' groups, whose top 10 best hits the held-out last baskets (what a
        customer with no history is served)."""
        truth = label.groupby("customer_id")["product_id"].apply(set)
        uidx = self.users_.get_indexer(truth.index)
        group = self.customers_.get("group")
        groups = group.to_numpy()[uidx] if group is not None else [None] * len(uidx)
        best: tuple[int, Popularity] | None = None
        for hl in (30.0, 90.0, 365.0, None):
            for by_group in ([False, True] if group is not None else [False]):
                pop = Popularity(hl).fit(fitted.x, group if by_group else None)
                tops: dict[Any, set[str]] = {}
                hits = 0
                for g, items in zip(groups, truth, strict=True):
                    key = str(g) if g is not None and str(g) in pop.groups else None
                    if key not in tops:
                        tops[key] = set(self.items_[pop.top(10, key)])
                    hits += bool(tops[key] & items)
                if best is None or hits > best[0]:
                    best = (hits, pop)
                    self.popularity_ = {"half_life_days": hl, "by_group": by_group}
        assert best is not None
        return best[1]

    def _feature_names(self) -> list[str]:
        return list(FEATURES) + [f"p_{c}" for c in self.customers_.columns if c in self.profile_features]

    # ------------------------------------------------------------- candidates
    def _rows(self, fitted: Fitted, uidx: np.ndarray) -> _Rows:
        """The stored rows of these customers (empty rows for unknown ones)."""
        known = uidx >= 0
        safe = np.where(known, uidx, 0)
        zero = sp.diags(known.astype(np.float32))
        vlast = (zero @ fitted.view_last[safe]).tocsr() if fitted.view_last is not None else None
        x = fitted.x
        counts, last, first_b, last_b = ((zero @ m[safe]).tocsr() for m in (x.counts, x.last, x.first_basket,
                                                                              x.last_basket))
        return _Rows(counts, last, first_b, last_b, vlast, np.where(known, x.baskets[safe], 0))

    def _candidates(self, fitted: Fitted, uidx: np.ndarray, exclude_purchased: bool | None,
                    extra: _Rows | None = None, groups: np.ndarray | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
        """Candidate (customer row, product) pairs with their features. ``extra``
        replaces the stored rows (customers given at request time)."""
        given = extra if extra is not None else self._rows(fitted, uidx)
        counts, last, vlast, n_baskets = given.counts, given.last, given.vlast, given.baskets
        n_items = counts.shape[1]
        k = self.n_candidates
        co_w = fitted.co.weights(last)
        co_recent = fitted.co.score(co_w)
        co_all = fitted.co.score(sp.csr_matrix((np.ones_like(last.data), last.indices, last.indptr), shape=last.shape))
        parts = [counts, _top_rows(co_recent, k)]
        view_co = None
        view_w = None
        if fitted.views is not None and vlast is not None:
            view_w = fitted.views.weights(vlast)
            view_co = fitted.views.score(view_w)
            parts.append(_top_rows(view_co, k // 2))
        factors = None
        if fitted.als is not None:
            factors = fitted.als.user_factors[np.maximum(uidx, 0)].copy()
            unseen = np.flatnonzero(uidx < 0)
            if len(unseen):  # customers the model never saw: one solve each from what they bought
                factors[unseen] = fitted.als.fold_in(counts[unseen])
            parts.append(fitted.als.top(factors, k))
        ease = None
        if fitted.ease is not None:
            bin_rows = counts.copy()
            bin_rows.data[:] = 1
            ease = fitted.ease.score(bin_rows)
            k_idx = np.argpartition(-ease, min(k, n_items) - 1, axis=1)[:, :k]
            vals = np.take_along_axis(ease, k_idx, axis=1)
            parts.append(sp.csr_matrix((np.maximum(vals.ravel(), 1e-6), (np.repeat(np.arange(len(uidx)), k_idx.shape[1]),
                                                                         k_idx.ravel())), shape=(len(uidx), n_items)))
        if groups is None and "group" in self.customers_:
            groups = self._group_of(pd.Index([]), uidx, None)
        pop_rows = _popular_rows(fitted.pop, len(uidx), n_items, k // 2, groups)
        parts.append(pop_rows)
        cand = parts[0].copy()
        cand.data[:] = 1
        for p in parts[1:]:
            b = p.copy()
            b.data[:] = 1
            cand = cand + b
        cand = cand.tocsr()
        cand.sort_indices()
        if exclude_purchased is not False:
            bought = counts.copy()
            bought.data[:] = 1
            if exclude_purchased is None:  # only in categories where customers do not buy again
                non_repeat = self._non_repeat_items(fitted)
                bought = bought @ sp.diags(non_repeat.astype(np.float32))
            cand = (cand - cand.multiply(bought)).tocsr()
            cand.eliminate_zeros()
        keys = _keys(cand)
        rows = (keys // n_items).astype(np.int64)
        cols = (keys % n_items).astype(np.int64)
        f: dict[str, np.ndarray] = {}
        h = _gather(counts, keys)
        lastday = _gather(last, keys)
        user_last = np.asarray(last.max(axis=1).todense()).ravel()
        n_items_u = np.diff(counts.indptr)
        f["h_count"] = h
        f["h_share"] = h / np.maximum(n_baskets[rows], 1)
        days = np.where(lastday > 0, fitted.x.now - lastday, np.nan)
        f["h_days"] = days
        f["h_due"] = days / fitted.history.interval[cols]
        last_b, first_b = _gather(given.last_basket, keys), _gather(given.first_basket, keys)
        f["h_since"] = np.where(last_b > 0, n_baskets[rows] - last_b, np.nan)  # baskets since the last purchase
        f["h_rate"] = np.where(first_b > 0, h / np.maximum(n_baskets[rows] - first_b + 1, 1), 0.0)
        f["co_recent"] = _gather(co_recent, keys)
        f["co_all"] = _gather(co_all, keys)
        f["view_co"] = _gather(view_co, keys) if view_co is not None else np.zeros(len(keys), np.float32)
        f["als"] = (np.einsum("ij,ij->i", factors[rows], fitted.als.item_factors[cols])
                    if factors is not None and fitted.als is not None else np.zeros(len(keys), np.float32))
        f["ease"] = ease[rows, cols] if ease is not None else np.zeros(len(keys), np.float32)
        profile = None
        if self.item_emb_ is not None:
            profile = np.asarray(co_w @ self.item_emb_)
            norm = np.linalg.norm(profile, axis=1, keepdims=True)
            profile = profile / np.where(norm > 0, norm, 1)
            f["content"] = np.einsum("ij,ij->i", profile[rows], self.item_emb_[cols])
        else:
            f["content"] = np.zeros(len(keys), np.float32)
        f["pop"] = fitted.pop.overall[cols]
        grouped = np.array([g is not None and str(g) in fitted.pop.groups for g in groups], dtype=bool) \
            if groups is not None else np.zeros(len(uidx), dtype=bool)
        f["group_pop"] = np.where(grouped[rows], _gather(pop_rows, keys), 0.0)
        f["aspect_fit"] = self._aspect_fit(uidx, rows, cols)
        f["u_baskets"] = n_baskets[rows].astype(np.float32)
        f["u_days"] = np.where(user_last[rows] > 0, fitted.x.now - user_last[rows], np.nan)
        f["u_items"] = n_items_u[rows].astype(np.float32)
        f["u_size"] = (np.asarray(counts.sum(axis=1)).ravel() / np.maximum(n_baskets, 1))[rows]
        f["i_repeat"] = fitted.history.repeat_rate[cols]
        f["i_interval"] = np.where(np.isfinite(fitted.history.interval[cols]), fitted.history.interval[cols], np.nan)
        for c in self.customers_.columns:
            if c in self.profile_features:  # unknown for a customer the fit never saw
                values = self.customers_[c].to_numpy(dtype=np.float64)[np.maximum(uidx, 0)]
                f[f"p_{c}"] = np.where(uidx >= 0, values, np.nan)[rows]
        frame = pd.DataFrame(f)
        frame.insert(0, "i", cols)
        frame.insert(0, "u", uidx[rows])
        frame.insert(0, "row", rows)
        return frame, {"co_w": co_w, "counts": counts, "view_w": view_w, "groups": groups}

    def _group_of(self, ids: pd.Index, uidx: np.ndarray, given: dict[str, str] | None) -> np.ndarray:
        """Each customer's group: the fitted one, else the one given at request time."""
        stored = self.customers_["group"].to_numpy() if "group" in self.customers_ else np.full(max(len(self.users_), 1), None)
        out = np.asarray(stored[np.maximum(uidx, 0)], dtype=object)
        out[uidx < 0] = None
        if given:
            for r in np.flatnonzero(uidx < 0):
                out[r] = given.get(str(ids[int(r)]))
        return out

    def _non_repeat_items(self, fitted: Fitted) -> np.ndarray:
        rate = pd.Series(self.categories_).map(fitted.history.category_repeat).fillna(0).to_numpy()
        return rate < self.non_repeat_threshold

    def _aspect_fit(self, uidx: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """How much the product's reviews praise what the customer complains about."""
        if self.item_aspects_ is None:
            return np.zeros(len(rows), np.float32)
        names = [c for c in self.customers_.columns if c.startswith("aspect.") and c in self.item_aspects_.columns]
        if not names:
            return np.zeros(len(rows), np.float32)
        cust = np.clip(-self.customers_[names].to_numpy(dtype=np.float64), 0, None)  # complaints only
        cust = np.nan_to_num(cust)[np.maximum(uidx, 0)] * (uidx >= 0)[:, None]  # none known for unseen customers
        cust = cust[rows]
        item = np.nan_to_num(self.item_aspects_[names].to_numpy(dtype=np.float64))[cols]
        return (cust * item).sum(axis=1)

    # ------------------------------------------------------------- recommend
    def recommend(self, customer_ids: Sequence[Any], n: int = 10, exclude_purchased: bool | None = None,
                  history: pd.DataFrame | None = None, groups: dict[str, str] | None = None,
                  batch_size: int | None = None) -> pd.DataFrame:
        """Top ``n`` per customer. ``exclude_purchased``: True drops everything bought,
        False keeps all, None (default) drops bought products in categories customers
        do not buy again. Customers unseen in ``fit`` are served from ``history`` (their
        purchases, given at request time: no retrain), else from the popularity of their
        ``groups`` entry (segment or demographic band), else from overall popularity; the
        ``source`` column says which fallback served them."""
        ids = pd.Index(customer_ids)
        uidx = self.users_.get_indexer(ids)
        out = []
        bs = batch_size or self._batch_size()
        for a in range(0, len(ids), bs):
            out.append(self._recommend_batch(ids[a:a + bs], uidx[a:a + bs], n, exclude_purchased, history, groups))
        cols = ["customer_id", "rank", "product_id", "score", "source", "reason", "reason_zh"]
        return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=cols)

    def _recommend_batch(self, ids: pd.Index, uidx: np.ndarray, n: int, exclude: bool | None,
                         history: pd.DataFrame | None, groups: dict[str, str] | None) -> pd.DataFrame:
        fitted = self.fitted_
        extra = None
        group = self._group_of(ids, uidx, groups)
        has_group = np.array([g is not None and str(g) in fitted.pop.groups for g in group], dtype=bool)
        served = np.where(uidx >= 0, "model", np.where(has_group, "fallback:segment", "fallback:popular"))
        if (uidx < 0).any() and history is not None and len(history):
            hist = normalise(history)
            hist = hist[hist["customer_id"].isin(ids[uidx < 0])]
            if len(hist):
                x = Interactions.build(hist, ids, self.items_, self.origin_, fitted.x.now)
                stored = self._rows(fitted, uidx)
                extra = _Rows((stored.counts + x.counts).tocsr(), (stored.last + x.last).tocsr(),
                              (stored.first_basket + x.first_basket).tocsr(),
                              (stored.last_basket + x.last_basket).tocsr(), stored.vlast, stored.baskets + x.baskets)
                served = np.where(np.diff(x.counts.indptr) > 0, "fallback:history", served)
                served = np.where(uidx >= 0, "model", served)
        frame, parts = self._candidates(fitted, uidx, exclude, extra, group)
        frame["row"] = frame["row"].to_numpy()
        cols = self._feature_names()
        bare = np.isin(served, ("fallback:segment", "fallback:popular"))[frame["row"].to_numpy()]
        if self.ranker_ is not None:
            frame["score"] = self.ranker_.predict(frame[cols])
            # nothing known about the customer: the fallback's own order, not the ranker's
            frame.loc[bare, "score"] = np.where(frame.loc[bare, "group_pop"] > 0, frame.loc[bare, "group_pop"],
                                                frame.loc[bare, "pop"])
        else:  # too little data to learn a blend: co-occurrence, then history, then popularity
            frame["score"] = frame["co_recent"] + frame["h_share"] + 0.1 * frame["pop"]
        frame = frame.sort_values(["row", "score"], ascending=[True, False], kind="stable")
        frame["rank"] = frame.groupby("row").cumcount() + 1
        top = frame[frame["rank"] <= n].reset_index(drop=True)
        return explain(self, top, ids, served, parts, fitted)



def _top_rows(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    from shoplens.recommend.sources import top_k_rows

    return top_k_rows(m, k)


def _popular_rows(pop: Popularity, n_rows: int, n_items: int, k: int, groups: np.ndarray | None) -> sp.csr_matrix:
    """Each row's top ``k`` popular products (its group's when it has one) as a sparse
    matrix of popularity values."""
    rows, cols, vals = [], [], []
    cache: dict[Any, tuple[np.ndarray, np.ndarray]] = {}
    for r in range(n_rows):
        g = None if groups is None else groups[r]
        key = g if g is not None and str(g) in pop.groups else None
        if key not in cache:
            idx = pop.top(k, None if key is None else str(key))
            table = pop.groups[str(key)] if key is not None else pop.overall
            cache[key] = (idx, table[idx])
        idx, v = cache[key]
        rows.append(np.full(len(idx), r))
        cols.append(idx)
        vals.append(np.maximum(v, 1e-6))
    if not rows:
        return sp.csr_matrix((n_rows, n_items), dtype=np.float32)
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_rows, n_items))
