"""Emerging complaints: a weekly spike test per product x aspect with the false
discovery rate controlled.

For each product, aspect and week: ``texts`` (the product's reviews that week) and
``complaints`` (those with a negative mention of the aspect). The baseline is the
product's complaint share over the ``baseline_weeks`` before, shrunk toward the
category's share for the aspect with a prior worth ``prior_texts`` reviews (a product
with little history borrows its category's). The p-value is the binomial upper tail of
the week's complaints given its texts and that baseline; a week is tested only when at
least ``min_customers`` distinct customers complained in it (fewer is never shown), and
the Benjamini-Hochberg procedure over every tested week keeps the expected share of
false alerts at ``fdr``. Klaviyo's monthly change tests and Amazon's Voice of the
Customer compare against history the same way; no library runs this test per product.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from shoplens.insight.aspects import top_category

COLUMNS = ["product_id", "name", "category", "aspect", "week", "complaints", "customers", "texts", "share",
           "baseline_share", "p_value", "q_value"]


def weekly_alerts(texts: pd.DataFrame, mentions: pd.DataFrame, products: pd.DataFrame, baseline_weeks: int,
                  prior_texts: float, min_customers: int, fdr: float) -> pd.DataFrame:
    """``texts``: text_id, customer_id, product_id, created_at; ``mentions``: text_id,
    aspect, polarity. Returns the alerts (q <= fdr), most significant first."""
    if texts.empty or mentions.empty:
        return pd.DataFrame(columns=COLUMNS)
    t = texts[texts["product_id"].notna()].copy()
    t["week"] = t["created_at"].dt.to_period("W-SUN").dt.start_time
    cat = products.set_index("product_id")["category"]
    t["top"] = top_category(t["product_id"].map(cat))
    neg = mentions[mentions["polarity"] == "negative"][["text_id", "aspect"]].drop_duplicates()
    c = neg.merge(t, on="text_id")
    n_week = t.groupby(["product_id", "week"]).size().rename("texts")
    cells = c.groupby(["product_id", "aspect", "week"]).agg(complaints=("text_id", "size"),
                                                           customers=("customer_id", "nunique")).reset_index()
    cells = cells.join(n_week, on=["product_id", "week"])
    tested = cells[cells["customers"] >= min_customers].copy()
    if tested.empty:
        return pd.DataFrame(columns=COLUMNS)
    # the category's complaint share per aspect over all weeks: the prior
    cat_texts = t.groupby("top").size()
    cat_share = (c.groupby(["top", "aspect"]).size() / cat_texts.reindex(c.groupby(["top", "aspect"]).size().index,
                                                                         level="top").to_numpy()).rename("cat_share")
    base = []
    for pid, aspect, week in zip(tested["product_id"], tested["aspect"], tested["week"], strict=True):
        lo = pd.Timestamp(week) - pd.Timedelta(weeks=baseline_weeks)
        mask = (t["product_id"] == pid) & (t["week"] >= lo) & (t["week"] < week)
        n_b = int(mask.sum())
        k_b = int(((c["product_id"] == pid) & (c["aspect"] == aspect) & (c["week"] >= lo) & (c["week"] < week)).sum())
        top = t.loc[t["product_id"] == pid, "top"].iloc[0]
        prior = float(cat_share.get((top, aspect), 0.0))
        base.append((k_b + prior_texts * prior) / (n_b + prior_texts))
    tested["baseline_share"] = np.clip(base, 1e-6, 1 - 1e-6)
    tested["share"] = tested["complaints"] / tested["texts"]
    tested["p_value"] = stats.binom.sf(tested["complaints"] - 1, tested["texts"], tested["baseline_share"])
    tested["q_value"] = stats.false_discovery_control(tested["p_value"].to_numpy())
    alerts = tested[tested["q_value"] <= fdr].copy()
    names = products.set_index("product_id")
    alerts["name"] = alerts["product_id"].map(names["name"])
    alerts["category"] = alerts["product_id"].map(names["category"])
    return alerts.sort_values(["q_value", "product_id", "aspect", "week"], ignore_index=True)[COLUMNS]
