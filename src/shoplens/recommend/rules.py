"""Business rules over ranked lists, from ``[rules]`` in ``recommend.toml`` (data, not
code): drop excluded, inactive and out-of-stock products, move boosted products up and
buried ones to the end, and cap each category's share of a list for diversity (products
over the cap go after the others rather than away)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def apply_rules(recs: pd.DataFrame, products: pd.DataFrame, rules: dict[str, Any], keep: int) -> pd.DataFrame:
    """``recs``: customer_id, rank, product_id, ... ranked lists; returns them re-ranked,
    at most ``keep`` per customer."""
    p = products.assign(product_id=products["product_id"].astype(str)).set_index("product_id")
    drop = set(map(str, rules.get("exclude", [])))
    if rules.get("exclude_inactive", True) and "active" in p:
        drop |= set(p.index[p["active"].astype(str).str.lower().isin(("false", "0", "no", "inactive"))])
    if rules.get("exclude_out_of_stock", True) and "stock" in p:
        drop |= set(p.index[pd.to_numeric(p["stock"], errors="coerce") <= 0])
    out = recs[~recs["product_id"].astype(str).isin(drop)].copy()
    out = out.sort_values(["customer_id", "rank"], kind="stable")
    pos = out.groupby("customer_id").cumcount().to_numpy(dtype=float)
    pos -= np.where(out["product_id"].isin(set(map(str, rules.get("boost", [])))), float(rules.get("boost_places", 3)) + 0.5, 0)
    pos += np.where(out["product_id"].isin(set(map(str, rules.get("bury", [])))), 1e6, 0)
    cap = int(rules.get("max_per_category", 0))
    if cap > 0 and "category" in p:
        category = out["product_id"].map(p["category"]).fillna("unknown")
        out["_key"] = pos
        out = out.sort_values(["customer_id", "_key"], kind="stable")
        nth = out.groupby([out["customer_id"], category.loc[out.index]]).cumcount().to_numpy()
        pos = out["_key"].to_numpy() + np.where(nth >= cap, 1e5, 0)
        out = out.drop(columns="_key")
    out["_key"] = pos
    out = out.sort_values(["customer_id", "_key"], kind="stable").drop(columns="_key")
    out["rank"] = out.groupby("customer_id").cumcount() + 1
    return out[out["rank"] <= keep].reset_index(drop=True)
