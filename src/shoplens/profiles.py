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
from shoplens.privacy import Keys, candidate_pseudonyms
from shoplens.store import Store

PROFILE_VERSION = "0.2"  # 0.2: topics by label, risk flags filled

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


def _text(row: dict[str, Any]) -> dict[str, Any]:
    """The text slot: counts from the store, signals from the text step (null when absent)."""
    from shoplens.text.sentiment import label

    mean = _clean(row.get("sentiment_mean"))
    aspects = {k[len("aspect_"):]: _clean(v) for k, v in row.items() if k.startswith("aspect_") and v is not None}
    return {
        "n_texts": int(row.get("n_texts") or 0),
        "mean_rating": _clean(None if row.get("mean_rating") is None else float(row["mean_rating"])),
        "languages": sorted(x for x in (row.get("languages") or []) if x),
        "sentiment": None if mean is None else {
            "mean": mean, "label": label(mean), "trend_per_30d": _clean(row.get("sentiment_trend")),
            "negative_share": _clean(row.get("negative_share")),
        },
        "aspects": aspects or None,
        "interests": None if row.get("top_keywords") is None else {
            "keywords": list(row["top_keywords"]), "categories": list(row.get("interests") or []),
        },
        # each topic by its label (its top terms), not its id: a reader sees what the customer writes about
        "topics": [{"id": int(t["id"]), "label": t["label"], "share": _clean(t["share"])} for t in row["topics"]]
        if row.get("topics") else None,
    }


def resolve_customer(store: Store, ref: str, keys: Keys | None) -> str:
    """Accept a pseudonym (``c_...``) or, with the secret key, the shop's own id."""
    snap = store.require_snapshot()
    for cid in candidate_pseudonyms(ref, keys):
        if store.scalar(f"SELECT 1 FROM snap_{snap}.customer_features WHERE customer_id = ?", [cid]):
            return cid
    hint = "" if keys is not None else " (no secret key available, so only pseudonymised ids c_... can be looked up)"
    raise NotFoundError(f"customer '{ref}' not found in snapshot {snap}{hint}")


PROFILE_RECOMMENDATIONS = 10  # products in the profile's ``recommendations`` slot
OTHER_TOPIC = "其他 other"  # texts the topic model left unassigned (topic -1)


RISK_TYPES = ("return_abuse", "coupon_abuse", "linked_accounts", "review_manipulation", "unusual_behaviour")
_RISK_RANK = "CASE level WHEN 'HIGH' THEN 3 WHEN 'MEDIUM' THEN 2 ELSE 1 END"


def _risk_query(schema: str, built: bool) -> str:
    """Per customer the flags (most severe first), the highest level, and each type's level."""
    per_type = ", ".join(f"max_by(level, {_RISK_RANK}) FILTER (WHERE type = '{t}') AS risk_{t}" for t in RISK_TYPES)
    if not built:
        nulls = ", ".join(f"NULL AS risk_{t}" for t in RISK_TYPES)
        return f"(SELECT NULL AS customer_id, NULL AS risk_flags, NULL AS risk_level, {nulls} WHERE false)"
    return f"""(SELECT customer_id, list({{'type': type, 'level': level, 'recommendation': recommendation,
        'score': score, 'facts': facts, 'model_version': model_version}} ORDER BY {_RISK_RANK} DESC, score DESC) AS risk_flags,
        max_by(level, {_RISK_RANK}) AS risk_level, {per_type} FROM {schema}.risk_flags GROUP BY customer_id)"""


def profile_query(schema: str, where: str = "", recommendations: bool = True, risk: bool = True) -> str:
    """One row per customer with everything a profile document needs (set-based, so the
    same query serves one id or a whole snapshot). ``recommendations``, ``risk``: whether
    the snapshot has those tables (snapshots built before their stage do not)."""
    recs = f"""(SELECT customer_id, list({{'rank': rank, 'product_id': product_id, 'name': name, 'category': category,
        'score': round(score, 4), 'source': source, 'reason': reason, 'reason_zh': reason_zh}} ORDER BY rank)
        AS recommendations FROM {schema}.recommendations WHERE rank <= {PROFILE_RECOMMENDATIONS} GROUP BY customer_id)""" \
        if recommendations else "(SELECT NULL AS customer_id, NULL AS recommendations WHERE false)"
    return f"""
WITH recs AS {recs}, risk AS {_risk_query(schema, risk)},
tops AS (
    SELECT customer_id, list({{'id': e.key, 'label': COALESCE(tt.label, '{OTHER_TOPIC}'), 'share': round(e.value, 4)}}
                             ORDER BY e.value DESC, e.key) AS topics
    FROM (SELECT customer_id, unnest(map_entries(topic_shares)) AS e FROM {schema}.customer_text_features
          WHERE topic_shares IS NOT NULL)
    LEFT JOIN {schema}.text_topics tt ON tt.topic_id = e.key GROUP BY customer_id),
cats AS (
    SELECT customer_id, list({{'category': category, 'spend': spend, 'share': share}} ORDER BY rank) AS categories
    FROM {schema}.customer_category_shares WHERE rank < 5 GROUP BY customer_id),
txt AS (
    SELECT customer_id, count(*) AS n_texts, avg(rating) AS mean_rating, list(DISTINCT language) AS languages
    FROM texts GROUP BY customer_id)
SELECT f.*, d.gender, d.birth_year, d.city, d.region, d.country, d.channel, d.signup_at,
       p.p_alive, p.expected_purchases, p.expected_spend, p.clv, p.purchase_propensity, p.churn_risk,
       p.churn_reasons, p.churn_reasons_zh, cats.categories, txt.n_texts, txt.mean_rating, txt.languages,
       cs.segment_id, sg.name AS segment_name,
       ctf.sentiment_mean, ctf.sentiment_trend, ctf.negative_share, ctf.top_keywords, ctf.interests,
       tops.topics, COLUMNS('^aspect_'), recs.recommendations, COLUMNS('^risk_')
FROM {schema}.customer_features f
JOIN {schema}.customers d USING (customer_id)
LEFT JOIN {schema}.customer_predictions p USING (customer_id)
LEFT JOIN cats USING (customer_id)
LEFT JOIN txt USING (customer_id)
LEFT JOIN {schema}.customer_text_features ctf USING (customer_id)
LEFT JOIN {schema}.customer_segments cs USING (customer_id)
LEFT JOIN {schema}.segments sg USING (segment_id)
LEFT JOIN recs USING (customer_id)
LEFT JOIN risk USING (customer_id)
LEFT JOIN tops USING (customer_id)
{where}"""


def snapshot_meta(store: Store, snap: int) -> dict[str, Any]:
    return store.record(
        "SELECT snapshot_id, finished_at AS built_at, as_of, config_hash, last_ingest_id, version AS shoplens_version "
        "FROM snapshots WHERE snapshot_id = ?",
        [snap],
    )


def document(row: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """The profile document of one customer from a ``profile_query`` row."""
    as_of: date = meta["as_of"]
    birth = row.get("birth_year")
    return {
        "profile_version": PROFILE_VERSION,
        "customer_id": row["customer_id"],
        "demographics": {
            "gender": row.get("gender"),
            "birth_year": birth,
            "age": None if birth is None else as_of.year - int(birth),
            "city": row.get("city"),
            "region": row.get("region"),
            "country": row.get("country"),
            "channel": row.get("channel"),
            "signup_at": _clean(row.get("signup_at")),
        },
        "behaviour": {g: {k: _clean(row[k]) for k in cols} for g, cols in _GROUPS.items()},
        "categories": [{k: _clean(v) for k, v in c.items()} for c in (row.get("categories") or [])],
        "text": _text(row),
        "predictions": _predictions(row),
        "segment": None if row.get("segment_id") is None else {"id": int(row["segment_id"]), "name": row.get("segment_name")},
        "tags": row.get("tags") or [],
        "risk_flags": [{**flag, "facts": json.loads(flag["facts"])} for flag in (row.get("risk_flags") or [])],
        "recommendations": [{k: _clean(v) for k, v in r.items()} for r in (row.get("recommendations") or [])],
        "provenance": {
            **{k: _clean(v) for k, v in meta.items()},
            "features": "behaviour (Ibis on DuckDB)",
        },
    }


def get_profile(store: Store, ref: str, keys: Keys | None = None) -> dict[str, Any]:
    """The profile document of one customer from the current snapshot.

    Raises ``NotFoundError`` (HTTP 404) for an unknown id.
    """
    cid = resolve_customer(store, ref, keys)
    snap = store.require_snapshot()
    row = store.record(profile_query(f"snap_{snap}", "WHERE f.customer_id = ?", store.has_snapshot_table(snap, "recommendations"),
                                     store.has_snapshot_table(snap, "risk_flags")), [cid])
    return document(row, snapshot_meta(store, snap))
