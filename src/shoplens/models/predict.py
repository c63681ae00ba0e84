"""The build's prediction step: CLV, P(alive), propensity and churn with reasons, per
customer, written to ``snap_<id>.customer_predictions``.

- CLV: BG/NBD + Gamma-Gamma fitted on the snapshot's BTYD figures (weeks).
- Propensity: LightGBM trained on earlier cut-offs of the same store (labels = bought
  within the horizon after each cut-off, all ending before ``as_of``), applied at
  ``as_of``; churn risk = 1 - propensity. Reasons = the largest LightGBM contributions
  toward churn, phrased from ``rules/reasons.toml``.

When the data cannot support a model (too few customers or too short a history), the
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

from shoplens.config import PredictionsConfig
from shoplens.models.btyd import BGNBD, GammaGamma, ModelError, clv
from shoplens.models.propensity import MODEL_FEATURES, PropensityModel, features_at, make_folds
from shoplens.store import Store

PREDICTION_COLUMNS = (
    "customer_id", "p_alive", "expected_purchases", "expected_spend", "clv", "purchase_propensity",
    "churn_risk", "churn_reasons", "churn_reasons_zh",
)


@dataclass
class PredictionResult:
    frame: pd.DataFrame
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


def predict(store: Store, schema: str, as_of: date, cfg: PredictionsConfig, rules: Any = None) -> PredictionResult:
    """Predictions for every buyer in ``schema``'s features; non-buyers get NULLs.

    ``rules`` are the RFM rules the build used: the backtest cut-offs compute their
    features with them and with ``cfg.time_unit_days``, as the build did."""
    unit = cfg.time_unit_days
    f = store.con.execute(
        f"SELECT customer_id, frequency, recency, T, monetary_value FROM {schema}.customer_features WHERE n_orders > 0"
    ).df().set_index("customer_id")
    out = pd.DataFrame(index=f.index, columns=list(PREDICTION_COLUMNS[1:]), dtype=object)
    result = PredictionResult(out)
    if f.empty:
        result.skipped["clv"] = result.skipped["propensity"] = "no customer has a paid order"
        return result
    x, t_x, T = f.frequency.to_numpy(float), f.recency.to_numpy(float) / unit, np.maximum(f["T"].to_numpy(float) / unit, 1e-6)
    horizon = cfg.horizon_days / unit
    try:
        bg = BGNBD().fit(x, t_x, T)
        out["p_alive"] = bg.p_alive(x, t_x, T)
        out["expected_purchases"] = bg.expected_purchases(horizon, x, t_x, T)
        result.models["bg_nbd"] = bg.params_.__dict__ | {"log_likelihood": bg.log_likelihood_, "at_bound": bg.at_bound_}
        try:
            gg = GammaGamma().fit(x, f.monetary_value.to_numpy(float))
            out["expected_spend"] = gg.expected_spend(x, f.monetary_value.to_numpy(float))
            out["clv"] = clv(bg, gg, x, t_x, T, f.monetary_value.to_numpy(float), cfg.clv_months, unit, cfg.annual_discount)
            result.models["gamma_gamma"] = gg.params_.__dict__
        except ModelError as err:
            result.skipped["clv"] = str(err)
    except ModelError as err:
        result.skipped["bg_nbd"] = result.skipped["clv"] = str(err)
    try:
        first = store.scalar("SELECT min(order_ts) FROM orders WHERE status = 'paid'").date()
        cutoffs = backtest_cutoffs(first, as_of, cfg.horizon_days, cfg.backtests)
        if len(cutoffs) < 1:
            raise ModelError(
                f"propensity needs at least {3 * cfg.horizon_days} days of order history before {as_of} "
                f"(3 x horizon_days = {cfg.horizon_days}); found {(as_of - first).days}"
            )
        scored = f"{schema}.text_analysis"  # the text step runs before this one
        train = pd.concat([fold.frame for fold in make_folds(store, cutoffs, cfg.horizon_days, scored, rules, unit)])
        model = PropensityModel(cfg.horizon_days).fit(train)
        now = features_at(store, as_of, cfg.horizon_days, computed=f"{schema}.customer_features",
                          scored=scored, rules=rules, unit_days=unit).reindex(f.index)
        p = model.predict_proba(now)
        out["purchase_propensity"] = p
        out["churn_risk"] = 1 - p
        en, zh = reasons(model.contributions(now), now[MODEL_FEATURES])
        out["churn_reasons"] = [json.dumps(r, ensure_ascii=False) for r in en]
        out["churn_reasons_zh"] = [json.dumps(r, ensure_ascii=False) for r in zh]
        result.models["propensity"] = {"cutoffs": [str(c) for c in cutoffs], "threshold": model.threshold_,
                                       "training_rows": len(train), "lightgbm": model.model_.booster_.model_to_string()}
    except ModelError as err:
        result.skipped["propensity"] = str(err)
    return result
