"""The build's prediction step: CLV, P(alive), propensity and churn with reasons, per
customer, written to ``snap_<id>.customer_predictions``.

- CLV: BG/NBD + Gamma-Gamma fitted on the snapshot's BTYD figures (weeks), grouped
  by distinct history on the engine (exact: the fit equals the per-customer one).
- Propensity: LightGBM trained on earlier cut-offs of the same store (labels = bought
  within the horizon after each cut-off, all ending before ``as_of``), applied at
  ``as_of``; churn risk = 1 - propensity. Reasons = the largest LightGBM contributions
  toward churn, phrased from ``rules/reasons.toml``.

Fitting happens here, on the driver, from aggregates and samples; scoring is
``Scorer`` applied to each batch of customers by the engine (on Spark, in the
executors). When the data cannot support a model (too few customers or too short a history), the
step records why in ``skipped`` and writes NULLs instead of failing the build.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from datetime import date, timedelta
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from shoplens.config import PredictionsConfig
from shoplens.engine.base import Snapshot
from shoplens.models.btyd import BGNBD, GammaGamma, ModelError, clv
from shoplens.models.propensity import (
    MODEL_FEATURES,
    PropensityModel,
    btyd_units,
    derive,
    fit_bgnbd,
    make_folds,
    rank_reference,
    sample_at,
    with_texts,
)

PREDICTION_COLUMNS = (
    "customer_id", "p_alive", "expected_purchases", "expected_spend", "clv", "purchase_propensity",
    "churn_risk", "churn_reasons", "churn_reasons_zh",
)


@dataclass
class PredictionResult:
    scorer: Scorer
    models: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def _phrases() -> dict[str, dict[str, str]]:
    text = resources.files("shoplens").joinpath("rules/reasons.toml").read_text("utf-8")
    return tomllib.loads(text)


def reasons(
    contrib: pd.DataFrame, values: pd.DataFrame, top: int = 3, min_contribution: float = 0.05
) -> tuple[list[list[str]], list[list[str]]]:
    """Top ``top`` features pushing each customer toward churn (negative contribution to
    buying by at least ``min_contribution`` log-odds), phrased in English and Chinese. A
    percentile feature speaks through its raw feature; features without a phrase in
    reasons.toml are not shown."""
    table = _phrases()
    en_all, zh_all = [], []
    arr = contrib.to_numpy()
    cols = [c.removeprefix("pct_") for c in contrib.columns]
    vals = values.to_numpy(dtype=float, na_value=np.nan)
    where = {c: k for k, c in enumerate(values.columns)}
    for i in range(len(contrib)):
        en: list[str] = []
        zh: list[str] = []
        used: set[str] = set()
        for j in np.argsort(arr[i]):
            if arr[i, j] > -min_contribution or len(en) == top:
                break
            feat = cols[j]
            if feat in used or feat not in table or feat not in where:
                continue
            value = float(vals[i, where[feat]])
            if np.isnan(value):
                continue
            used.add(feat)
            en.append(table[feat]["en"].format(value=value))
            zh.append(table[feat]["zh"].format(value=value))
        en_all.append(en)
        zh_all.append(zh)
    return en_all, zh_all


def backtest_cutoffs(first: date, as_of: date, horizon_days: int, n: int) -> list[date]:
    """Cut-offs one horizon apart, the last one a horizon before ``as_of``, none earlier
    than 2 horizons after the first purchase (too little history before)."""
    out = []
    for k in range(1, n + 1):
        c = as_of - timedelta(days=horizon_days * k)
        if c < first + timedelta(days=2 * horizon_days):
            break
        out.append(c)
    return sorted(out)


@dataclass
class Scorer:
    """Everything the build fitted, applied to one Arrow batch of customers (customer
    features and text features as of ``as_of``): on Spark this object is shipped to the
    executors, so no per-customer table ever reaches the driver. Non-buyers get NULLs."""

    cfg: PredictionsConfig
    bg: BGNBD | None = None
    gg: GammaGamma | None = None
    model: PropensityModel | None = None
    reference: dict[str, np.ndarray] | None = None  # percentile reference (``propensity.rank_reference``)

    def __call__(self, batch: pa.RecordBatch) -> pa.Table:
        df = batch.to_pandas().set_index("customer_id")
        out = pd.DataFrame(index=df.index, columns=list(PREDICTION_COLUMNS[1:]), dtype=object)
        buyers = df[df.n_orders.fillna(0) > 0]
        if len(buyers):
            self._score(buyers, out)
        out = out.reset_index(names="customer_id")
        floats = {c: "float64" for c in PREDICTION_COLUMNS[1:-2]}
        return pa.Table.from_pandas(out.astype(floats), preserve_index=False)

    def _score(self, buyers: pd.DataFrame, out: pd.DataFrame) -> None:
        cfg, bg, gg = self.cfg, self.bg, self.gg
        unit = cfg.time_unit_days
        x, t_x, T = btyd_units(buyers, unit)
        m = buyers.monetary_value.to_numpy(float)
        ids = buyers.index
        if bg is not None:
            out.loc[ids, "p_alive"] = bg.p_alive(x, t_x, T)
            out.loc[ids, "expected_purchases"] = bg.expected_purchases(cfg.horizon_days / unit, x, t_x, T)
            if gg is not None:
                out.loc[ids, "expected_spend"] = gg.expected_spend(x, m)
                out.loc[ids, "clv"] = clv(bg, gg, x, t_x, T, m, cfg.clv_months, unit, cfg.annual_discount)
        if self.model is not None:
            now = derive(buyers, bg, cfg.horizon_days, unit, self.reference)
            p = self.model.predict_proba(now)
            out.loc[ids, "purchase_propensity"] = p
            out.loc[ids, "churn_risk"] = 1 - p
            en, zh = reasons(self.model.contributions(now), now[MODEL_FEATURES])
            out.loc[ids, "churn_reasons"] = [json.dumps(r, ensure_ascii=False) for r in en]
            out.loc[ids, "churn_reasons_zh"] = [json.dumps(r, ensure_ascii=False) for r in zh]


def scoring_rows(engine: Any, snapshot: Snapshot) -> Any:
    """What ``Scorer`` reads: every customer of the snapshot with their features and
    their text features as of the snapshot's day (an Ibis table)."""
    feats = engine.table("customer_features", snapshot)
    people = engine.table("customers", snapshot).select("customer_id")
    rows = people.left_join(feats, people.customer_id == feats.customer_id).drop("customer_id_right")
    return with_texts(rows, engine.table("texts"), engine.table("text_analysis", snapshot), snapshot.as_of)


def predict(engine: Any, snapshot: Snapshot, cfg: PredictionsConfig, rules: Any = None) -> PredictionResult:
    """Fit the models of a snapshot; ``result.scorer`` then scores every customer.

    BG/NBD and Gamma-Gamma are fitted on grouped histories (``GROUP BY`` on the
    engine, exact); the propensity model on up to ``cfg.fit_sample`` buyers per
    cut-off, recorded in the snapshot's ``model_artifacts``. ``rules`` are the RFM rules
    the build used: the backtest cut-offs compute their features with them and with
    ``cfg.time_unit_days``, as the build did."""
    unit = cfg.time_unit_days
    result = PredictionResult(Scorer(cfg))
    feats = engine.table("customer_features", snapshot)
    buyers = feats.filter(feats.n_orders > 0)
    bg, n, why = fit_bgnbd(engine, buyers, unit)
    if n == 0:
        result.skipped["clv"] = result.skipped["propensity"] = "no customer has a paid order"
        return result
    if bg is None:
        result.skipped["bg_nbd"] = result.skipped["clv"] = why
    else:
        result.scorer.bg = bg
        result.models["bg_nbd"] = bg.params_.__dict__ | {"log_likelihood": bg.log_likelihood_, "at_bound": bg.at_bound_}
        repeat = buyers.filter((buyers.frequency > 0) & buyers.monetary_value.notnull())
        pairs = engine.collect(repeat.group_by("frequency", "monetary_value").agg(n=repeat.count())).to_pandas()
        try:
            gg = GammaGamma().fit(pairs.frequency, pairs.monetary_value, weights=pairs.n.to_numpy(float))
            result.scorer.gg = gg
            result.models["gamma_gamma"] = gg.params_.__dict__
        except ModelError as err:
            result.skipped["clv"] = str(err)
    try:
        _fit_propensity(engine, snapshot, cfg, rules, result)
    except ModelError as err:
        result.skipped["propensity"] = str(err)
    return result


def _fit_propensity(engine: Any, snapshot: Snapshot, cfg: PredictionsConfig, rules: Any, result: PredictionResult) -> None:
    orders = engine.table("orders")
    paid = orders.filter(orders.status == "paid")
    first = engine.collect(paid.agg(first=paid.order_ts.min())).column("first")[0].as_py().date()
    cutoffs = backtest_cutoffs(first, snapshot.as_of, cfg.horizon_days, cfg.backtests)
    if len(cutoffs) < 1:
        raise ModelError(
            f"propensity needs at least {3 * cfg.horizon_days} days of order history before {snapshot.as_of} "
            f"(3 x horizon_days = {cfg.horizon_days}); found {(snapshot.as_of - first).days}"
        )
    scored = engine.table("text_analysis", snapshot)  # the text stage runs before this one
    folds = make_folds(engine, cutoffs, cfg.horizon_days, scored, rules, cfg.time_unit_days, cfg.fit_sample)
    train = pd.concat([fold.frame for fold in folds])
    model = PropensityModel(cfg.horizon_days).fit(train)
    now = sample_at(engine, snapshot.as_of, cfg.horizon_days, computed=engine.table("customer_features", snapshot),
                    scored=scored, rules=rules, unit_days=cfg.time_unit_days, sample=cfg.fit_sample)
    result.scorer.model = model
    result.scorer.reference = rank_reference(now.frame)
    result.models["propensity"] = {
        "cutoffs": [str(c) for c in cutoffs], "threshold": model.threshold_, "training_rows": len(train),
        "fit_sample": cfg.fit_sample, "reference_rows": len(now.frame), "buyers": now.buyers,
        "lightgbm": model.model_.booster_.model_to_string()}
