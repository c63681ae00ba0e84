"""Why each product is on a customer's list: which sources made its score, and the
evidence inside the main one.

A source's part is what the ranker's score loses when that source's features are set
as if it had no evidence for the product (an occlusion: one extra prediction per
source; LightGBM's TreeSHAP ``pred_contrib`` measured 268 us a row against ~1.6 us for a
prediction, too slow for a million customers). The evidence is the source's own
decomposition of its score: the co-occurrence terms, ALS's per-product terms
(c_uj * y_j' A_u^-1 y_i, as in implicit's ``explain``), EASE's weights, the history
figures; each computed per source for all its rows at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from shoplens.recommend.reasons import Reasons
from shoplens.recommend.sources import Collaborative

if TYPE_CHECKING:
    from shoplens.recommend.hybrid import Fitted, HybridRecommender

# feature -> the source it belongs to ("context" describes the customer or product only)
FEATURES: dict[str, str] = {
    "h_count": "history", "h_share": "history", "h_days": "history", "h_due": "history",
    "h_since": "history", "h_rate": "history",
    "co_recent": "bought_together", "co_all": "bought_together",
    "view_co": "viewed_together", "als": "collaborative", "ease": "collaborative", "content": "content",
    "pop": "popular", "group_pop": "segment_popular", "aspect_fit": "aspect",
    "u_baskets": "context", "u_days": "context", "u_items": "context", "u_size": "context", "i_repeat": "context",
    "i_interval": "context",
}


def explain(model: HybridRecommender, top: pd.DataFrame, ids: pd.Index, served: np.ndarray, parts: dict[str, Any],
             fitted: Fitted) -> pd.DataFrame:
    """The ranked ``top`` rows as the recommender's answer: sources, reason, reason_zh."""
    cols = model._feature_names()
    sources = np.array([FEATURES.get(c, "profile") for c in cols])
    names = [s for s in dict.fromkeys(sources) if s not in ("context", "profile")]
    x = top[cols].to_numpy(dtype=np.float64)
    per_source = np.zeros((len(top), len(names)))
    for k, source in enumerate(names):  # what the score loses without the source's evidence
        mask = sources == source
        if model.ranker_ is None:
            per_source[:, k] = np.nan_to_num(x[:, mask]).sum(axis=1)
        elif len(top) and np.any(x[:, mask] != _absent(cols, mask)):
            without = x.copy()
            without[:, mask] = _absent(cols, mask)
            per_source[:, k] = top["score"].to_numpy() - model.ranker_.predict(pd.DataFrame(without, columns=cols))
    order = np.argsort(-per_source, axis=1)
    positive = np.take_along_axis(per_source, order, axis=1) > 0
    rows = top["row"].to_numpy()
    bare = np.isin(served[rows], ("fallback:segment", "fallback:popular"))  # ranked by popularity alone
    listed = [[names[o] for o, ok in zip(order[r], positive[r], strict=True) if ok] or ["popular"]
              for r in range(len(top))]
    grouped = top["group_pop"].to_numpy() > 0
    for r in np.flatnonzero(bare):
        listed[r] = ["segment_popular" if grouped[r] else "popular"]
    primary = np.array([p[0] for p in listed], dtype=object)
    found = evidence(model, primary, top, parts, fitted)
    reasons = model.reasons or Reasons.load()
    rendered = [reasons.render(p, e) for p, e in zip(primary, found, strict=True)]
    prefix = served[rows]
    text = pd.StringDtype("pyarrow")  # one buffer per column, not a Python object per cell (10M rows at 1M customers)
    return pd.DataFrame({
        "customer_id": pd.array(ids[rows].to_numpy(), dtype=text), "rank": top["rank"].to_numpy(),
        "product_id": pd.array(model.items_[top["i"].to_numpy()].to_numpy(), dtype=text),
        "score": top["score"].to_numpy(),
        "source": pd.array([",".join(([] if pre == "model" else [pre]) + lst)
                            for pre, lst in zip(prefix, listed, strict=True)], dtype=text),
        "reason": pd.array([en for en, _ in rendered], dtype=text),
        "reason_zh": pd.array([zh for _, zh in rendered], dtype=text)})

def evidence(model: HybridRecommender, primary: np.ndarray, top: pd.DataFrame, parts: dict[str, Any],
             fitted: Fitted) -> list[dict[str, Any]]:
    """Each row's evidence for its primary source, computed per source for all its
    rows at once: the terms of that source's own score, largest first."""
    name = model.names_
    out: list[dict[str, Any]] = [{} for _ in range(len(top))]
    rows, items = top["row"].to_numpy(), top["i"].to_numpy()

    def put(mask: np.ndarray, terms: sp.csr_matrix) -> None:
        picked = np.flatnonzero(mask)
        for k, js in zip(picked, _top_terms(terms, items[picked]), strict=True):
            out[k] = {"items": [str(name[j]) for j in js]}

    m = primary == "history"
    if m.any():
        interval = fitted.history.interval[items[m]]
        for k, c, iv in zip(np.flatnonzero(m), top["h_count"].to_numpy()[m], interval, strict=True):
            out[k] = {"count": int(c), "interval": int(round(iv)) if np.isfinite(iv) else None}
    m = primary == "bought_together"
    if m.any():
        put(m, parts["co_w"][rows[m]].multiply(fitted.co.by_target[items[m]]).tocsr())
    m = primary == "viewed_together"
    if m.any() and fitted.views is not None and parts["view_w"] is not None:
        put(m, parts["view_w"][rows[m]].multiply(fitted.views.by_target[items[m]]).tocsr())
    m = primary == "collaborative"
    if m.any():
        use_ease = (top["ease"].to_numpy() > np.abs(top["als"].to_numpy())) if fitted.ease is not None \
            else np.zeros(len(top), dtype=bool)
        if (m & use_ease).any() and fitted.ease is not None and fitted.ease.weights is not None:
            sel = m & use_ease
            bin_rows = parts["counts"][rows[sel]].copy()
            bin_rows.data[:] = 1
            put(sel, bin_rows.multiply(fitted.ease.weights[:, items[sel]].T).tocsr())
        if (m & ~use_ease).any() and fitted.als is not None:
            sel = m & ~use_ease
            put(sel, als_terms(fitted.als, parts["counts"], rows[sel], items[sel]))
    m = primary == "content"
    if m.any() and model.item_emb_ is not None:
        w = parts["co_w"][rows[m]].tocsr()
        r_of = np.repeat(np.arange(w.shape[0]), np.diff(w.indptr))
        data = w.data * np.einsum("ij,ij->i", model.item_emb_[w.indices], model.item_emb_[items[m]][r_of])
        put(m, sp.csr_matrix((data, w.indices, w.indptr), shape=w.shape))
    for k in np.flatnonzero(primary == "segment_popular"):
        out[k] = {"group": str(parts["groups"][rows[k]])}
    for k in np.flatnonzero(primary == "aspect"):
        out[k] = {"aspect": _aspect_of(model, top.iloc[k])}
    return out

def _aspect_of(model: HybridRecommender, row: Any) -> str:
    names = [c for c in model.customers_.columns if c.startswith("aspect.")]
    if not names or row.u < 0 or model.item_aspects_ is None:
        return ""
    cust = np.clip(-model.customers_[names].iloc[row.u].to_numpy(dtype=np.float64), 0, None)
    item = model.item_aspects_.reindex(columns=names).iloc[row.i].to_numpy(dtype=np.float64)
    return names[int(np.nanargmax(np.nan_to_num(cust * item)))].removeprefix("aspect.")


# a feature's value when its source has no evidence for the product (as for a product
# the source did not propose): no purchase yet means no days, intervals or baskets since
_NO_EVIDENCE = {"h_days": np.nan, "h_due": np.nan, "h_since": np.nan}


def _absent(cols: list[str], mask: np.ndarray) -> np.ndarray:
    return np.array([_NO_EVIDENCE.get(c, 0.0) for c, m in zip(cols, mask, strict=True) if m])


def als_terms(als: Collaborative, counts: sp.csr_matrix, user_rows: np.ndarray, items: np.ndarray,
               chunk: int = 4096) -> sp.csr_matrix:
    """ALS's score of product i for a customer is the sum over their products j of
    c_uj * y_j' A_u^-1 y_i, A_u = Y'Y + reg I + sum_j (c_uj - 1) y_j y_j' (implicit's
    ``explain``). One row of terms per (customer row of ``counts``, product) pair; A_u
    is inverted once per customer, in batches of padded matrix products."""
    conf = als._confidence(counts).tocsr()
    y = als.item_factors.astype(np.float64)
    f = y.shape[1]
    base = y.T @ y + als.regularization * np.eye(f)
    users, row_user = np.unique(user_rows, return_inverse=True)
    sub = conf[users]
    lengths = np.diff(sub.indptr)
    inv = np.empty((len(users), f, f))
    order = np.argsort(lengths, kind="stable")  # similar lengths together: little padding
    for a in range(0, len(users), 512):
        part = order[a:a + 512]
        width = max(int(lengths[part].max(initial=0)), 1)
        padded_y = np.zeros((len(part), width, f))
        weight = np.zeros((len(part), width))
        for k, u in enumerate(part):
            lo, hi = sub.indptr[u], sub.indptr[u + 1]
            padded_y[k, : hi - lo] = y[sub.indices[lo:hi]]
            weight[k, : hi - lo] = sub.data[lo:hi] - 1
        mats = base + np.matmul((padded_y * weight[..., None]).transpose(0, 2, 1), padded_y)
        inv[part] = np.linalg.inv(mats)
    z = np.empty((len(items), f))
    for a in range(0, len(items), chunk):
        z[a:a + chunk] = np.einsum("rfg,rg->rf", inv[row_user[a:a + chunk]], y[items[a:a + chunk]])
    terms = sub[row_user].tocsr()
    r_of = np.repeat(np.arange(terms.shape[0]), np.diff(terms.indptr))
    terms.data = terms.data * np.einsum("nf,nf->n", y[terms.indices], z[r_of])
    return terms


def _top_terms(terms: sp.csr_matrix, items: np.ndarray, top: int = 2) -> list[list[int]]:
    """Per row the columns of its ``top`` largest positive terms, the row's own product
    left out (not "X, because of X")."""
    terms = terms.tocsr()
    r_of = np.repeat(np.arange(terms.shape[0]), np.diff(terms.indptr))
    keep = (terms.data > 0) & (terms.indices != items[r_of])
    r_of, cols, vals = r_of[keep], terms.indices[keep], terms.data[keep]
    order = np.lexsort((-vals, r_of))
    r_of, cols = r_of[order], cols[order]
    start = np.searchsorted(r_of, np.arange(terms.shape[0]))
    end = np.searchsorted(r_of, np.arange(terms.shape[0]), side="right")
    return [cols[s:min(e, s + top)].tolist() for s, e in zip(start, end, strict=True)]
