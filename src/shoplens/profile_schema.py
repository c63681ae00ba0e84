"""The profile document as typed models: the versioned contract of ``shoplens profile
--json`` and ``GET /profiles/{id}``. ``docs/profile.schema.json`` is generated from it
(``python -m shoplens.profile_schema``) and a test keeps the two equal."""

from __future__ import annotations

import json
import sys
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Demographics(_Doc):
    gender: str | None
    birth_year: int | None
    age: int | None
    city: str | None
    region: str | None
    country: str | None
    channel: str | None
    signup_at: str | None


class Category(_Doc):
    category: str | None
    spend: float | None
    share: float | None


class Sentiment(_Doc):
    mean: float | None  # mean P(positive) over the customer's texts
    label: str | None  # positive / neutral / negative of that mean
    trend_per_30d: float | None  # change in P(positive) per 30 days; null with texts on one day only
    negative_share: float | None


class Interests(_Doc):
    keywords: list[str]
    categories: list[str]  # category paths the keywords name


class Topic(_Doc):
    """A topic the customer writes about: its id, its label (top terms) and the share of
    the customer's texts in it."""

    id: int
    label: str
    share: float


class TextSignals(_Doc):
    n_texts: int
    mean_rating: float | None
    languages: list[str]
    sentiment: Sentiment | None = None
    aspects: dict[str, float] | None = None  # aspect -> mean polarity in [-1, 1] over its mentions
    interests: Interests | None = None
    topics: list[Topic] | None = None  # the customer's topics, largest share first


class Predictions(_Doc):
    p_alive: float | None
    expected_purchases: float | None
    expected_spend: float | None
    clv: float | None
    purchase_propensity: float | None
    churn_risk: float | None
    churn_reasons: list[str]
    churn_reasons_zh: list[str]
    models: str


class Tag(_Doc):
    tag: str
    tag_en: str
    reason: str
    reason_en: str


class Recommendation(_Doc):
    """One recommended product; ``source`` names what produced it (a ``fallback:...``
    first when a fallback served), ``reason``/``reason_zh`` the evidence."""

    rank: int
    product_id: str
    name: str | None
    category: str | None
    score: float
    source: str
    reason: str
    reason_zh: str


class RiskFact(_Doc):
    """One observation behind a flag; ``sentiment`` says whether it weighs for the flag
    (negative) or against it (positive)."""

    description: str
    description_zh: str
    sentiment: Literal["negative", "positive"]


class RiskFlag(_Doc):
    """A risk flag for a person to review, never a decision (docs/risk.md)."""

    type: Literal["return_abuse", "coupon_abuse", "linked_accounts", "review_manipulation", "unusual_behaviour"]
    level: Literal["LOW", "MEDIUM", "HIGH"]
    recommendation: str  # rules/risk.toml [levels]: ACCEPT, MONITOR, INVESTIGATE by default
    score: float
    facts: list[RiskFact]
    model_version: str


class Provenance(_Doc):
    snapshot_id: int
    built_at: str | None
    as_of: str
    config_hash: str | None
    last_ingest_id: int | None
    shoplens_version: str | None
    features: str


class ProfileDocument(_Doc):
    """Profile document version 0.1."""

    profile_version: str
    customer_id: str
    demographics: Demographics
    behaviour: dict[str, dict[str, Any]]
    categories: list[Category]
    text: TextSignals
    predictions: Predictions | None
    segment: Any = None
    tags: list[Tag]
    risk_flags: list[RiskFlag]
    recommendations: list[Recommendation]
    provenance: Provenance


def json_schema() -> dict[str, Any]:
    schema = ProfileDocument.model_json_schema()
    schema["$id"] = "https://shoplens.invalid/schemas/profile-0.1.json"
    return schema


if __name__ == "__main__":  # pragma: no cover
    json.dump(json_schema(), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
