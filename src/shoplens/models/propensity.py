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

import ibis
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


def as_engine(source: Any) -> Any:
    """An engine for a store (the DuckDB engine over it); an engine as it is."""
    from shoplens.engine.duckdb import DuckDBEngine

    return DuckDBEngine(source) if isinstance(source, Store) else source


def fit_bgnbd(engine: Any, buyers: Any, unit_days: float) -> tuple[BGNBD | None, int, str]:
    """BG/NBD fitted on the grouped ``(frequency, recency, T)`` histories of ``buyers``
    (an Ibis table of BTYD figures in days): ``GROUP BY`` runs on the engine and only
    the distinct histories, a few thousand rows at any scale, reach this process. The
    fit equals the one on every customer's row. Returns (the model, or None with the
    reason when the data cannot support one; the number of buyers)."""
    grouped = engine.collect(buyers.group_by("frequency", "recency", "T").agg(n=buyers.count())).to_pandas()
    n = int(grouped.n.sum()) if len(grouped) else 0
    try:
        x, t_x, T = btyd_units(grouped, unit_days)
        return BGNBD().fit(x, t_x, T, weights=grouped.n.to_numpy(float)), n, ""
    except ModelError as err:  # e.g. all one-time buyers yet: callers do without
        return None, n, str(err)


def btyd_units(frame: pd.DataFrame, unit_days: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, t_x, T) in the model's time unit; T > 0 for buyers of the last day."""
    return (frame.frequency.to_numpy(float), frame.recency.to_numpy(float) / unit_days,
            np.maximum(frame["T"].to_numpy(float) / unit_days, 1e-6))


def text_counts(texts: Any, cutoff: date) -> Any:
    """Per customer, what they wrote before ``cutoff`` (an Ibis table keyed ``cid``)."""
    t = texts.filter(texts.created_at < _dt(cutoff))
    review, chat = (t.kind == "review"), (t.kind == "chat")
    negative = (t.rating <= 2).ifelse(1.0, t.rating.notnull().ifelse(0.0, ibis.null("float64")))
    return t.group_by(cid=t.customer_id).agg(
        n_reviews=review.ifelse(1, 0).sum().cast("float64"), mean_rating=t.rating.cast("float64").mean(),
        negative_review_share=negative.mean(), n_chats=chat.ifelse(1, 0).sum().cast("float64"))


def text_sentiment(scored: Any, cutoff: date) -> Any:
    """Per customer, the mean sentiment of their texts before ``cutoff`` and the share
    labelled negative (the text step's per-text results, keyed ``cid``)."""
    t = scored.filter(scored.created_at < _dt(cutoff))
    negative = (t.sentiment_label == "negative").ifelse(1.0, t.sentiment.notnull().ifelse(0.0, ibis.null("float64")))
    return t.group_by(cid=t.customer_id).agg(sentiment_mean=t.sentiment.cast("float64").mean(),
                                             negative_text_share=negative.mean())


def with_texts(rows: Any, texts: Any, scored: Any, cutoff: date) -> Any:
    """``rows`` (keyed ``customer_id``) with the text features as of ``cutoff``; NULL (not
    0) for customers without texts, and for sentiment without the text step."""
    for agg in (text_counts(texts, cutoff), *(() if scored is None else (text_sentiment(scored, cutoff),))):
        rows = rows.left_join(agg, rows.customer_id == agg.cid).drop("cid")
    if scored is None:
        rows = rows.mutate(sentiment_mean=ibis.null("float64"), negative_text_share=ibis.null("float64"))
    return rows


def rank_reference(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The sorted values the percentile features are ranked against."""
    return {c: np.sort(frame[c].dropna().to_numpy(float)) for c in RANKED}


def percentile(values: np.ndarray, sorted_ref: np.ndarray) -> np.ndarray:
    """Each value's percentile rank among ``sorted_ref`` with ties averaged: against the
    column itself this is ``Series.rank(pct=True)``, so a sample's reference ranks any
    customer (in an executor) as the whole base would, up to the sample's error.

    >>> percentile(np.array([1.0, 2.0, 2.0, np.nan]), np.array([1.0, 2.0, 2.0])).tolist()
    [0.3333333333333333, 0.8333333333333334, 0.8333333333333334, nan]
    """
    if len(sorted_ref) == 0:
        return np.full(len(values), np.nan)
    left = np.searchsorted(sorted_ref, values, side="left")
    right = np.searchsorted(sorted_ref, values, side="right")
    out = (left + right + 1) / 2 / len(sorted_ref)
    return np.where(np.isnan(values), np.nan, out)


def derive(df: pd.DataFrame, bg: BGNBD | None, horizon_days: int, unit_days: float,
           reference: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """The model's features computed from one row alone (plus the fitted BG/NBD and the
    percentile reference; ``None``: rank within ``df``): the same function trains on the
    cut-off samples and scores every customer in the executors."""
    df = df.copy()
    df["gap_ratio"] = df.recency_days / df.mean_interpurchase_days
    if bg is None or df.empty:
        df["p_alive"] = np.nan
        df["expected_purchases"] = np.nan
    else:
        x, t_x, T = btyd_units(df, unit_days)
        df["p_alive"] = bg.p_alive(x, t_x, T)
        df["expected_purchases"] = bg.expected_purchases(horizon_days / unit_days, x, t_x, T)
    ref = reference if reference is not None else rank_reference(df)
    for c in RANKED:
        df[f"pct_{c}"] = percentile(df[c].to_numpy(float), ref[c])
    df["rfm_sum"] = df.r_score + df.f_score + df.m_score
    for c in TEXT_FEATURES:
        df[c] = df[c].astype(float)
    return df


@dataclass
class CutoffSample:
    """The model's features at one cut-off for a sample of its buyers."""

    frame: pd.DataFrame  # index customer_id (sorted); MODEL_FEATURES and the raw features
    bg: BGNBD | None  # BG/NBD fitted on every buyer's history at the cut-off
    buyers: int  # how many buyers there were (the sample is at most ``sample`` of them)


def sample_at(source: Any, cutoff: date, horizon_days: int, computed: Any = None, scored: Any = None,
              rules: Any = None, unit_days: float = 7.0, sample: int | None = None,
              label: bool = False) -> CutoffSample:
    """Buyers' features as of ``cutoff`` for (up to) ``sample`` of them: the first by
    pseudonym, which is a keyed hash, so a uniform sample that every engine draws alike.

    ``source``: a store or an engine. ``computed``: an Ibis table already holding the
    features for this cut-off (the snapshot's ``customer_features``). ``scored``: an
    Ibis table of per-text sentiment (the snapshot's ``text_analysis``); only texts
    written before the cut-off count. ``rules``/``unit_days``: the shop's RFM rules
    and the BG/NBD time unit, as configured for the build. ``label``: add whether each
    customer bought in the horizon after the cut-off (training rows).
    """
    engine = as_engine(source)
    if computed is None:
        tables = Tables(*(engine.table(n) for n in ("customers", "orders", "order_items", "products", "events")))
        computed, _ = behaviour_features(tables, _dt(cutoff), rules if rules is not None else load_rules())
    buyers = computed.filter(computed.n_orders > 0)
    bg, n, _ = fit_bgnbd(engine, buyers, unit_days)
    if n < MIN_CUSTOMERS:
        raise ModelError(f"propensity needs at least {MIN_CUSTOMERS} customers with a purchase before {cutoff}, found {n}")
    rows = buyers.order_by("customer_id").limit(sample) if sample and n > sample else buyers
    rows = with_texts(rows, engine.table("texts"), scored, cutoff)
    if label:
        o = engine.table("orders")
        end = cutoff + timedelta(days=horizon_days)
        bought = o.filter((o.status == "paid") & (o.order_ts >= _dt(cutoff)) & (o.order_ts < _dt(end)))
        bought = bought.select(cid=bought.customer_id).distinct()
        rows = rows.left_join(bought, rows.customer_id == bought.cid)
        rows = rows.mutate(label=rows.cid.notnull().ifelse(1, 0)).drop("cid")
    df = engine.collect(rows).to_pandas().set_index("customer_id").sort_index()
    return CutoffSample(derive(df, bg, horizon_days, unit_days), bg, n)


def features_at(source: Any, cutoff: date, horizon_days: int, computed: Any = None,
                scored: Any = None, rules: Any = None, unit_days: float = 7.0) -> pd.DataFrame:
    """Every buyer's features as of ``cutoff`` (``sample_at`` without a sample)."""
    return sample_at(source, cutoff, horizon_days, computed, scored, rules, unit_days).frame


@dataclass
class Fold:
    cutoff: date
    frame: pd.DataFrame  # features + 'label'


def make_folds(source: Any, cutoffs: list[date], horizon_days: int, scored: Any = None,
               rules: Any = None, unit_days: float = 7.0, sample: int | None = None) -> list[Fold]:
    """Training rows at each cut-off (a sample of ``sample`` buyers each, when given).
    ``scored``: the per-text sentiment table, by name or as an Ibis table."""
    engine = as_engine(source)
    if isinstance(scored, str):
        schema, _, name = scored.rpartition(".")
        scored = engine.ibis().table(name, database=schema or None)
    return [Fold(c, sample_at(engine, c, horizon_days, scored=scored, rules=rules, unit_days=unit_days,
                              sample=sample, label=True).frame) for c in cutoffs]


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
