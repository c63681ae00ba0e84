"""What is known about one customer, assembled from the current snapshot.

The profile is a nested document with typed slots that later stages fill
(``predictions``, ``segment``, ``text``, ``tags``); empty slots are explicit nulls.
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime
from typing import Any

from shoplens.errors import NotFoundError
from shoplens.privacy import PSEUDONYM_PREFIX, Keys
from shoplens.store import Store

PROFILE_VERSION = "0.1"

_GROUPS: dict[str, tuple[str, ...]] = {
    "rfm": ("recency_days", "n_orders", "total_spend", "r_score", "f_score", "m_score", "rfm_score",
            "rfm_segment", "rfm_segment_zh"),
    "btyd": ("frequency", "recency", "T", "monetary_value"),
    "orders": ("n_orders_all", "aov", "first_order_at", "last_order_at", "mean_interpurchase_days",
               "orders_last_90d", "spend_last_90d", "discount_rate", "discount_order_share",
               "discounted_spend_share", "cancel_rate", "return_rate", "n_categories", "top_category",
               "top_category_share"),
    "engagement": ("tenure_days", "n_events", "n_views", "n_searches", "n_cart_adds", "n_favorites",
                   "n_sessions", "events_last_30d", "view_to_buy_rate", "cart_to_order_rate"),
    "rhythm": ("peak_hour", "peak_weekday", "weekend_share", "night_share"),
}


def _clean(v: Any) -> Any:
    if isinstance(v, float):
        return None if math.isnan(v) else round(v, 4)
    if isinstance(v, datetime | date):
        return v.isoformat()
    return v


def _predictions(row: dict[str, Any]) -> dict[str, Any] | None:
    if not row or all(row.get(k) is None for k in ("clv", "churn_risk", "p_alive")):
        return None
    return {
        "p_alive": _clean(row.get("p_alive")),
        "expected_purchases": _clean(row.get("expected_purchases")),
        "expected_spend": _clean(row.get("expected_spend")),
        "clv": _clean(row.get("clv")),
        "purchase_propensity": _clean(row.get("purchase_propensity")),
        "churn_risk": _clean(row.get("churn_risk")),
        "churn_reasons": json.loads(row["churn_reasons"]) if row.get("churn_reasons") else [],
        "churn_reasons_zh": json.loads(row["churn_reasons_zh"]) if row.get("churn_reasons_zh") else [],
        "models": "BG/NBD + Gamma-Gamma (CLV), LightGBM on behaviour + BG/NBD (propensity)",
    }


def resolve_customer(store: Store, ref: str, keys: Keys | None) -> str:
    """Accept a pseudonym (``c_...``) or, with the secret key, the shop's own id."""
    snap = store.require_snapshot()
    candidates = [ref] if ref.startswith(PSEUDONYM_PREFIX) else []
    if keys is not None:
        candidates.append(keys.pseudonym(ref))
    for cid in candidates:
        if store.scalar(f"SELECT 1 FROM snap_{snap}.customer_features WHERE customer_id = ?", [cid]):
            return cid
    hint = "" if keys is not None else " (no secret key available, so only pseudonymised ids c_... can be looked up)"
    raise NotFoundError(f"customer '{ref}' not found in snapshot {snap}{hint}")


def get_profile(store: Store, ref: str, keys: Keys | None = None) -> dict[str, Any]:
    """The profile document of one customer from the current snapshot.

    Raises ``NotFoundError`` (HTTP 404) for an unknown id.
    """
    cid = resolve_customer(store, ref, keys)
    snap = store.require_snapshot()
    s = f"snap_{snap}"
    row = store.record(f"SELECT * FROM {s}.customer_features WHERE customer_id = ?", [cid])
    demo = store.record(f"SELECT * FROM {s}.customers WHERE customer_id = ?", [cid])
    meta = store.one(
        "SELECT snapshot_id, finished_at, as_of, config_hash, last_ingest_id, version FROM snapshots WHERE snapshot_id = ?",
        [snap],
    )
    assert meta is not None
    as_of: date = meta[2]
    cats = store.con.execute(
        f"SELECT category, spend, share FROM {s}.customer_category_shares WHERE customer_id = ? ORDER BY rank LIMIT 5",
        [cid],
    ).fetchall()
    texts = store.one(
        "SELECT count(*), avg(rating), list(DISTINCT language) FROM texts WHERE customer_id = ?", [cid]
    )
    assert texts is not None
    pred = store.record(f"SELECT * FROM {s}.customer_predictions WHERE customer_id = ?", [cid])
    birth = demo.get("birth_year")
    return {
        "profile_version": PROFILE_VERSION,
        "customer_id": cid,
        "demographics": {
            "gender": demo.get("gender"),
            "birth_year": birth,
            "age": None if birth is None else as_of.year - int(birth),
            "city": demo.get("city"),
            "region": demo.get("region"),
            "country": demo.get("country"),
            "channel": demo.get("channel"),
            "signup_at": _clean(demo.get("signup_at")),
        },
        "behaviour": {g: {k: _clean(row[k]) for k in cols} for g, cols in _GROUPS.items()},
        "categories": [{"category": c, "spend": _clean(sp), "share": _clean(sh)} for c, sp, sh in cats],
        "text": {
            "n_texts": int(texts[0]),
            "mean_rating": _clean(None if texts[1] is None else float(texts[1])),
            "languages": sorted(x for x in (texts[2] or []) if x),
            "sentiment": None,
            "aspects": None,
            "interests": None,
        },
        "predictions": _predictions(pred),
        "segment": None,
        "tags": [],
        "risk_flags": [],
        "recommendations": [],
        "provenance": {
            "snapshot_id": meta[0],
            "built_at": _clean(meta[1]),
            "as_of": _clean(as_of),
            "config_hash": meta[3],
            "last_ingest_id": meta[4],
            "shoplens_version": meta[5],
            "features": "behaviour (Ibis on DuckDB)",
        },
    }
