"""Purchase propensity (and churn = 1 - propensity) with a time-based split.

Training rows are (customer, cut-off) pairs: the behavioural features as of the cut-off
(the same Ibis expressions as the build) plus BG/NBD's P(alive) and expected purchases
fitted on the data before it; the label is whether the customer bought in the horizon
after it. A model is only ever evaluated on a cut-off whose training labels all ended
before it. Reasons are LightGBM's per-feature contributions (``pred_contrib``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from shoplens.errors import require
from shoplens.features.behaviour import FEATURE_COLUMNS, Tables, behaviour_features
from shoplens.features.rfm import load_rules
from shoplens.models.btyd import BGNBD, ModelError
from shoplens.store import Store

NON_FEATURES = {"customer_id", "first_order_at", "last_order_at", "rfm_score", "rfm_segment",
                "rfm_segment_zh", "top_category", "r_score", "f_score", "m_score"}
RANKED = ("recency_days", "total_spend", "n_orders", "expected_purchases", "p_alive", "T")
# what customers wrote, as of the cut-off: NULL (not 0) for customers without texts. The
# last two come from the text step's per-text sentiment (``scored``), NULL without it.
TEXT_FEATURES = ["n_reviews", "mean_rating", "negative_review_share", "n_chats", "sentiment_mean", "negative_text_share"]
MODEL_FEATURES = (
    [c for c in FEATURE_COLUMNS if c not in NON_FEATURES]
    + ["gap_ratio", "p_alive", "expected_purchases"]
    + [f"pct_{c}" for c in RANKED]  # percentile within the cut-off: stable as the base ages
    + ["r_score", "f_score", "m_score", "rfm_sum"]
    + TEXT_FEATURES
)
BEHAVIOUR_FEATURES = [c for c in MODEL_FEATURES if c not in TEXT_FEATURES]
MIN_CUSTOMERS = 20


def _dt(d: date) -> datetime:
    return datetime(d.year, d.month, d.day)


def features_at(store: Store, cutoff: date, horizon_days: int, computed: str | None = None,
                scored: str | None = None, rules: Any = None, unit_days: float = 7.0) -> pd.DataFrame:
    """Behavioural features of buyers as of ``cutoff`` plus BG/NBD outputs for the horizon.

    ``computed`` names a table that already holds the features for this cutoff (the
    snapshot's ``customer_features``), so the build does not compute them twice.
    ``scored`` names a table of per-text sentiment (``customer_id, created_at,
    sentiment, sentiment_label``: the snapshot's ``text_analysis``); only texts written
    before the cut-off count, and a text's sentiment depends on nothing but the text.
    ``rules`` are the shop's RFM rules (``features.rfm.load_rules``; default rules when
    None) and ``unit_days`` the BG/NBD time unit, as configured for the build.
    """
    if computed is not None:
        df = store.con.execute(f"SELECT * FROM {computed}").df().set_index("customer_id").sort_index()
    else:
        backend = store.ibis()
        tables = Tables(*(backend.table(n) for n in ("customers", "orders", "order_items", "products", "events")))
        feats, _ = behaviour_features(tables, _dt(cutoff), rules if rules is not None else load_rules())
        df = store.con.execute(backend.compile(feats)).df().set_index("customer_id").sort_index()
    df = df[df.n_orders > 0].copy()
    if len(df) < MIN_CUSTOMERS:
        raise ModelError(f"propensity needs at least {MIN_CUSTOMERS} customers with a purchase before {cutoff}, found {len(df)}")
    df["gap_ratio"] = df.recency_days / df.mean_interpurchase_days
    x, t_x, T = df.frequency.to_numpy(float), df.recency.to_numpy(float) / unit_days, df["T"].to_numpy(float) / unit_days
    try:
        bg = BGNBD().fit(x, t_x, np.maximum(T, 1e-6))
        df["p_alive"] = bg.p_alive(x, t_x, np.maximum(T, 1e-6))
        df["expected_purchases"] = bg.expected_purchases(horizon_days / unit_days, x, t_x, np.maximum(T, 1e-6))
    except ModelError:  # e.g. all one-time buyers yet: the classifier does without
        df["p_alive"] = np.nan
        df["expected_purchases"] = np.nan
    for c in RANKED:
        df[f"pct_{c}"] = df[c].rank(pct=True)
    df["rfm_sum"] = df.r_score + df.f_score + df.m_score
    text = store.con.execute(
        "SELECT customer_id, count(*) FILTER (WHERE kind = 'review') AS n_reviews, avg(rating) AS mean_rating, "
        "avg(CASE WHEN rating <= 2 THEN 1.0 WHEN rating IS NOT NULL THEN 0.0 END) AS negative_review_share, "
        "count(*) FILTER (WHERE kind = 'chat') AS n_chats FROM texts WHERE created_at < ? GROUP BY 1",
        [_dt(cutoff)],
    ).df().set_index("customer_id")
    df = df.join(text.astype(float), how="left")
    if scored is not None:
        sent = store.con.execute(
            f"SELECT customer_id, avg(sentiment) AS sentiment_mean, "
            f"avg(CASE WHEN sentiment_label = 'negative' THEN 1.0 WHEN sentiment IS NOT NULL THEN 0.0 END) AS negative_text_share "
            f"FROM {scored} WHERE created_at < ? GROUP BY 1",
            [_dt(cutoff)],
        ).df().set_index("customer_id")
        return df.join(sent.astype(float), how="left")
    df["sentiment_mean"] = np.nan
    df["negative_text_share"] = np.nan
    return df


def labels_after(store: Store, cutoff: date, horizon_days: int) -> pd.Series:
    end = cutoff + timedelta(days=horizon_days)
    rows = store.con.execute(
        "SELECT DISTINCT customer_id FROM orders WHERE status = 'paid' AND order_ts >= ? AND order_ts < ?",
        [_dt(cutoff), _dt(end)],
    ).fetchall()
    return pd.Series(1, index=[r[0] for r in rows], dtype=int)


@dataclass
class Fold:
    cutoff: date
    frame: pd.DataFrame  # features + 'label'


def make_folds(store: Store, cutoffs: list[date], horizon_days: int, scored: str | None = None,
               rules: Any = None, unit_days: float = 7.0) -> list[Fold]:
    folds = []
    for c in cutoffs:
        df = features_at(store, c, horizon_days, scored=scored, rules=rules, unit_days=unit_days)
        df["label"] = labels_after(store, c, horizon_days).reindex(df.index).fillna(0).astype(int)
        folds.append(Fold(c, df))
    return folds


class PropensityModel:
    """LightGBM classifier of 'buys within the horizon' on behavioural + BG/NBD features."""

    def __init__(self, horizon_days: int = 90, seed: int = 0, features: list[str] | None = None) -> None:
        self.horizon_days = horizon_days
        self.seed = seed
        self.features = features or MODEL_FEATURES

    def fit(self, frame: pd.DataFrame) -> PropensityModel:
        lgb = require("lightgbm", "models")
        y = frame["label"].to_numpy()
        if len(np.unique(y)) < 2:
            raise ModelError("propensity training data has only one class (everyone or no one bought in the horizon)")
        self.model_ = lgb.LGBMClassifier(
            n_estimators=300, learning_rate=0.02, num_leaves=4, min_child_samples=100, reg_lambda=10.0,
            random_state=self.seed, verbose=-1, deterministic=True, force_row_wise=True, n_jobs=1,
        )
        self.model_.fit(frame[self.features], y)
        p = self.model_.predict_proba(frame[self.features])[:, 1]
        self.threshold_ = best_f1_threshold(y, p)
        return self

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        if not hasattr(self, "model_"):
            raise ModelError("the propensity model is not fitted yet: call fit() first")
        return self.model_.predict_proba(frame[self.features])[:, 1]

    def contributions(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Per-customer, per-feature contributions to the log-odds of buying."""
        raw = self.model_.predict_proba(frame[self.features], pred_contrib=True)
        return pd.DataFrame(raw[:, :-1], index=frame.index, columns=self.features)


def best_f1_threshold(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import precision_recall_curve

    prec, rec, thr = precision_recall_curve(y, p)
    f1 = 2 * prec * rec / np.maximum(prec + rec, 1e-12)
    return float(thr[int(np.argmax(f1[:-1]))]) if len(thr) else 0.5


def classifier_metrics(y: np.ndarray, score: np.ndarray, prob: np.ndarray | None, threshold: float) -> dict[str, float]:
    from sklearn.metrics import (
        average_precision_score,
        brier_score_loss,
        f1_score,
        recall_score,
        roc_auc_score,
    )

    pred = (score >= threshold).astype(int)
    return {
        "roc_auc": float(roc_auc_score(y, score)),
        "pr_auc": float(average_precision_score(y, score)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "brier": float(brier_score_loss(y, prob)) if prob is not None else float("nan"),
    }


def rfm_rule_score(frame: pd.DataFrame) -> np.ndarray:
    """Baseline: the classic RFM sum (higher = more likely to buy again)."""
    return frame.rfm_sum.to_numpy(float)


def cross_validate(folds: list[Fold], horizon_days: int, baselines: bool = True,
                   features: list[str] | None = None, label: str = "LightGBM (behaviour + BG/NBD)") -> pd.DataFrame:
    """Expanding-window CV: for each test cut-off, train on earlier cut-offs whose label
    windows ended before it; evaluate the model and both baselines on the test cut-off."""
    rows = []
    for i, test in enumerate(folds):
        train = [f for f in folds[:i] if f.cutoff + timedelta(days=horizon_days) <= test.cutoff]
        if not train:
            continue
        tr = pd.concat([f.frame for f in train])
        model = PropensityModel(horizon_days, features=features).fit(tr)
        te = test.frame
        y = te["label"].to_numpy()
        if len(np.unique(y)) < 2:
            continue
        p = model.predict_proba(te)
        rows.append({"cutoff": test.cutoff, "model": label, **classifier_metrics(y, p, p, model.threshold_)})
        if not baselines:
            continue
        # RFM rule: probability = training purchase rate per RFM sum
        tr_score, te_score = rfm_rule_score(tr), rfm_rule_score(te)
        rate = pd.Series(tr["label"].to_numpy()).groupby(tr_score).mean()
        prob = pd.Series(te_score).map(rate).fillna(tr["label"].mean()).to_numpy()
        rows.append({"cutoff": test.cutoff, "model": "RFM score rule", **classifier_metrics(y, te_score, prob, best_f1_threshold(tr["label"].to_numpy(), tr_score))})
        # BG/NBD: P(at least one purchase) ~ 1 - exp(-E[purchases in horizon])
        e_tr, e_te = tr.expected_purchases.fillna(0).to_numpy(), te.expected_purchases.fillna(0).to_numpy()
        rows.append({"cutoff": test.cutoff, "model": "BG/NBD expected purchases", **classifier_metrics(y, e_te, 1 - np.exp(-e_te), best_f1_threshold(tr["label"].to_numpy(), e_tr))})
        rows.append({"cutoff": test.cutoff, "model": "BG/NBD P(alive)", **classifier_metrics(y, te.p_alive.fillna(0).to_numpy(), None, best_f1_threshold(tr["label"].to_numpy(), tr.p_alive.fillna(0).to_numpy()))})
    if not rows:
        raise ModelError("cross-validation needs at least two cut-offs a full horizon apart; the history is too short")
    return pd.DataFrame(rows)
