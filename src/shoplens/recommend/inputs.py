"""The frames ``HybridRecommender.fit`` is given, made uniform: ids as text, times in
seconds, the catalogue completed with every product seen, customers aligned to the
fitted index, product embeddings normalised."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def normalise(frame: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({"customer_id": frame["customer_id"].astype(str), "product_id": frame["product_id"].astype(str)})
    ts = frame["ts"]
    if pd.api.types.is_datetime64_any_dtype(ts):
        out["ts"] = (ts.astype("datetime64[ns]").astype("int64") / 1e9).to_numpy()
    else:
        out["ts"] = pd.to_numeric(ts).astype(np.float64).to_numpy()
    out["quantity"] = pd.to_numeric(frame["quantity"]).to_numpy() if "quantity" in frame else 1.0
    return out


def products_frame(products: pd.DataFrame | None, inter: pd.DataFrame, views: pd.DataFrame | None) -> pd.DataFrame:
    seen = pd.unique(pd.concat([inter["product_id"]] + ([views["product_id"]] if views is not None else [])))
    if products is None:
        base = pd.DataFrame({"product_id": seen})
    else:
        base = products.copy()
        base["product_id"] = base["product_id"].astype(str)
        missing = pd.Index(seen).difference(pd.Index(base["product_id"]))
        base = pd.concat([base, pd.DataFrame({"product_id": missing.to_numpy()})], ignore_index=True)
    base = base.drop_duplicates("product_id").reset_index(drop=True)
    base["name"] = base["name"].fillna(base["product_id"]) if "name" in base else base["product_id"]
    base["category"] = base["category"].fillna("unknown").astype(str) if "category" in base else "unknown"
    return base


def customers_frame(customers: pd.DataFrame | None, users: pd.Index, profile: Sequence[str]) -> pd.DataFrame:
    if customers is None:
        return pd.DataFrame(index=range(len(users)))
    c = customers.copy()
    c["customer_id"] = c["customer_id"].astype(str)
    keep = [x for x in c.columns if x == "group" or x in profile or x.startswith("aspect.")]
    return c.set_index("customer_id")[keep].reindex(users).reset_index(drop=True)


def embeddings(products: pd.DataFrame) -> np.ndarray | None:
    if "embedding" not in products:
        return None
    vectors = [None if e is None or (isinstance(e, float) and np.isnan(e)) else np.asarray(e, np.float32)
               for e in products["embedding"]]
    dim = next((len(v) for v in vectors if v is not None), 0)
    if dim == 0:
        return None
    emb = np.stack([v if v is not None else np.zeros(dim, np.float32) for v in vectors])
    norm = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.where(norm > 0, norm, 1)


def aspects(products: pd.DataFrame) -> pd.DataFrame | None:
    cols = [c for c in products.columns if c.startswith("aspect.")]
    return products[cols].astype(float) if cols else None
