"""What customers say about each product, category and brand, aspect by aspect, and
what to fix first.

From the text step's aspect mentions (``text_aspects``: polarity and evidence span per
clause) joined to the reviewed product, for the last ``period_days`` before the build
and the period before it:

- per product, category and brand x aspect: mentions, distinct customers, the negative
  share with a Wilson 95% interval, its change against the previous period, the
  difference against the category's other products, the product's return rate against
  its category's, the period's revenue and the revenue at risk: the revenue times the
  excess negative share over the category (when the interval's lower bound is above
  it) plus the revenue times the excess return rate;
- a fix-first rank by revenue at risk among rows with enough evidence;
- nothing under ``min_customers`` distinct customers is shown as a number (the row is
  kept with ``shown = false`` and NULL figures, so a reader sees that it exists);
- negative evidence spans with near-duplicate complaints grouped (character n-gram
  TF-IDF, cosine >= ``group_similarity``, graph components) and labelled with the words
  at least two customers of the group used, never one customer's words alone.

Wilson intervals and the ranking are a few lines of arithmetic; the grouping uses
scikit-learn and scipy as the risk stage's copy detection does.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse.csgraph import connected_components

Z95 = 1.959964
LEVELS = ("product", "category", "brand")


def wilson(k: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score 95% interval of k successes in n (NaN where n = 0).

    >>> lo, hi = wilson(np.array([3]), np.array([10]))
    >>> round(float(lo[0]), 3), round(float(hi[0]), 3)
    (0.108, 0.603)
    """
    n = n.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1 + Z95**2 / n
        centre = (p + Z95**2 / (2 * n)) / denom
        half = Z95 * np.sqrt(p * (1 - p) / n + Z95**2 / (4 * n**2)) / denom
    return centre - half, centre + half


def top_category(category: pd.Series) -> pd.Series:
    return category.fillna("").astype(str).str.split(r"\s*[/>]\s*", regex=True).str[0]


def _stats(m: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    g = m.groupby(keys)
    out = g.agg(mentions=("neg", "size"), negative=("neg", "sum"), customers=("customer_id", "nunique"))
    out["complainers"] = m[m["neg"]].groupby(keys)["customer_id"].nunique().reindex(out.index).fillna(0).astype(int)
    return out


def aspect_table(mentions: pd.DataFrame, sales: pd.DataFrame, products: pd.DataFrame, as_of: datetime,
                 period_days: int, min_customers: int) -> pd.DataFrame:
    """One row per level (product, category, brand) x key x aspect for the current period.

    ``mentions``: text_id, customer_id, product_id, aspect, polarity, created_at;
    ``sales``: product_id, order_ts, status, revenue; ``products``: product_id, name,
    category, brand."""
    start, prev = as_of - timedelta(days=period_days), as_of - timedelta(days=2 * period_days)
    p = products.assign(top=top_category(products["category"]), brand=products["brand"].fillna("").astype(str))
    m = mentions.merge(p[["product_id", "top", "brand"]], on="product_id", how="inner")
    m = m.assign(neg=m["polarity"] == "negative")
    cur, before = m[(m["created_at"] >= start) & (m["created_at"] < as_of)], m[(m["created_at"] >= prev) & (m["created_at"] < start)]
    s = sales.merge(p[["product_id", "top", "brand"]], on="product_id", how="inner")
    s = s[(s["order_ts"] >= start) & (s["order_ts"] < as_of) & (s["status"] != "cancelled")]
    s = s.assign(returned=s["status"] == "returned")
    frames = []
    for level, key in (("product", "product_id"), ("category", "top"), ("brand", "brand")):
        now = _stats(cur, [key, "aspect"])
        if now.empty:
            continue
        old = _stats(before, [key, "aspect"])
        rows = now.reset_index().rename(columns={key: "key"})
        rows["level"] = level
        rows["negative_share"] = rows["negative"] / rows["mentions"]
        rows["ci_low"], rows["ci_high"] = wilson(rows["negative"].to_numpy(), rows["mentions"].to_numpy())
        prev_share = (old["negative"] / old["mentions"]).rename("prev_negative_share").reset_index().rename(columns={key: "key"})
        rows = rows.merge(prev_share, on=["key", "aspect"], how="left")
        rows["change"] = rows["negative_share"] - rows["prev_negative_share"]
        sold = s.groupby(key).agg(lines=("returned", "size"), returns=("returned", "sum"), revenue=("revenue", "sum"))
        rows = rows.merge(sold.reset_index().rename(columns={key: "key"}), on="key", how="left")
        rows["return_rate"] = rows["returns"] / rows["lines"]
        if level == "product":  # against the category's other products
            rows = rows.merge(p[["product_id", "name", "top"]].rename(columns={"product_id": "key", "top": "category"}),
                              on="key", how="left")
            rows = _against_category(rows, cur, s)
        else:
            rows["name"], rows["category"] = rows["key"], rows["key"] if level == "category" else None
        frames.append(rows)
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    out = pd.concat(frames, ignore_index=True)
    for col in ("category_negative_share", "difference", "category_return_rate", "revenue_at_risk"):
        if col not in out:
            out[col] = np.nan
    out["revenue"] = out["revenue"].fillna(0.0)
    out["shown"] = out["customers"] >= min_customers
    hidden = ~out["shown"]
    figures = ["negative_share", "ci_low", "ci_high", "prev_negative_share", "change", "difference", "return_rate",
               "revenue_at_risk"]
    out.loc[hidden, figures] = np.nan  # under the evidence threshold: no number is shown
    out["fix_rank"] = np.nan
    ranked = out[(out["level"] == "product") & out["shown"] & (out["revenue_at_risk"] > 0)]
    order = ranked.sort_values(["revenue_at_risk", "key"], ascending=[False, True]).index
    out.loc[order, "fix_rank"] = np.arange(1, len(order) + 1)
    return out[COLUMNS].sort_values(["level", "key", "aspect"], ignore_index=True)


COLUMNS = ["level", "key", "name", "category", "aspect", "mentions", "customers", "complainers", "negative_share",
           "ci_low", "ci_high", "prev_negative_share", "change", "category_negative_share", "difference",
           "return_rate", "category_return_rate", "revenue", "revenue_at_risk", "fix_rank", "shown"]


def _against_category(rows: pd.DataFrame, cur: pd.DataFrame, s: pd.DataFrame) -> pd.DataFrame:
    """The category's other products: negative share per aspect and return rate, each
    without the product itself; and the revenue at risk."""
    cat_m = cur.groupby(["top", "aspect"]).agg(c_mentions=("neg", "size"), c_negative=("neg", "sum")).reset_index()
    rows = rows.merge(cat_m.rename(columns={"top": "category"}), on=["category", "aspect"], how="left")
    other_m = rows["c_mentions"] - rows["mentions"]
    rows["category_negative_share"] = np.where(other_m > 0, (rows["c_negative"] - rows["negative"]) / other_m.where(other_m > 0), np.nan)
    rows["difference"] = rows["negative_share"] - rows["category_negative_share"]
    cat_s = s.groupby("top").agg(c_lines=("returned", "size"), c_returns=("returned", "sum")).reset_index()
    rows = rows.merge(cat_s.rename(columns={"top": "category"}), on="category", how="left")
    other_l = rows["c_lines"] - rows["lines"].fillna(0)
    rows["category_return_rate"] = np.where(other_l > 0, (rows["c_returns"] - rows["returns"].fillna(0)) / other_l.where(other_l > 0), np.nan)
    excess_neg = np.where(rows["ci_low"] > rows["category_negative_share"], rows["negative_share"] - rows["category_negative_share"], 0.0)
    excess_ret = np.clip((rows["return_rate"] - rows["category_return_rate"]).fillna(0.0), 0, None)
    rows["revenue_at_risk"] = rows["revenue"].fillna(0.0) * (np.nan_to_num(excess_neg) + excess_ret)
    return rows


def complaint_groups(quotes: pd.DataFrame, similarity: float, tokenize: Any) -> pd.DataFrame:
    """Negative evidence spans grouped by near-duplicate wording within each product x
    aspect: adds ``group_id``, ``group_size`` (distinct customers) and ``group_label``
    (up to three words that at least two customers of the group used; else empty)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    if quotes.empty:
        return quotes.assign(group_id=pd.Series(dtype=str), group_size=pd.Series(dtype=int), group_label=pd.Series(dtype=str))
    parts = []
    for (pid, aspect), grp in quotes.groupby(["product_id", "aspect"], sort=True):
        grp = grp.sort_values("text_id")
        norm = grp["evidence"].fillna("").str.lower()
        if len(grp) > 1 and norm.str.len().max() > 0:
            x = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 3)).fit_transform(norm)
            sim = (x @ x.T).tocoo()
            keep = sim.data >= similarity
            adj = sparse.coo_matrix((np.ones(keep.sum()), (sim.row[keep], sim.col[keep])), shape=sim.shape)
            _, label = connected_components(adj, directed=False)
        else:
            label = np.zeros(len(grp), dtype=int)
        g = grp.assign(group_id=[f"{pid}/{aspect}/{k}" for k in label])
        for _gid, members in g.groupby("group_id"):
            words: Counter[str] = Counter()
            for _cid, texts in members.groupby("customer_id")["evidence"]:
                words.update({w for t in texts for w in tokenize(str(t)) if len(w) > 1})
            common = [w for w, n in words.most_common() if n >= 2][:3]
            g.loc[members.index, "group_size"] = members["customer_id"].nunique()
            g.loc[members.index, "group_label"] = " ".join(common)
        parts.append(g)
    out = pd.concat(parts, ignore_index=True)
    out["group_size"] = out["group_size"].astype(int)
    return out
