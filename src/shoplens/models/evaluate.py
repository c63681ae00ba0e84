"""``shoplens evaluate predictions --dataset cdnow``: the validation tables on real data.

CDNOW here is the 2,357-customer sample used in the BTYD literature: 39-week
calibration from 1997-01-01, 39-week holdout. Printed: BG/NBD and Gamma-Gamma
parameters (ours vs published vs lifetimes when installed), the holdout table by
calibration frequency with the corrected model, and the propensity classifier's
cross-validated metrics next to two baselines.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shoplens.config import load_config
from shoplens.datasets.public import export_dataset
from shoplens.errors import NotFoundError
from shoplens.ingest import ingest
from shoplens.models.btyd import BGNBD, GammaGamma
from shoplens.models.corrected import CorrectedBGNBD
from shoplens.models.history import StoreHistory
from shoplens.models.propensity import (
    BEHAVIOUR_FEATURES,
    MODEL_FEATURES,
    cross_validate,
    make_folds,
)
from shoplens.store import Store

PUBLISHED = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426, "log_likelihood": -9582.43,
             "p": 6.25, "q": 3.74, "v": 15.44}
CAL_END, HOLD_END, WEEKS = date(1997, 10, 1), date(1998, 7, 1), 39.0
PROPENSITY_CUTOFFS = [date(1997, m, 1) for m in range(5, 13)] + [date(1998, m, 1) for m in range(1, 5)]
HORIZON_DAYS = 90


@dataclass
class Evaluation:
    params: pd.DataFrame
    holdout: pd.DataFrame
    totals: dict[str, float]
    classifier: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "params": self.params.reset_index().to_dict(orient="records"),
            "holdout_by_frequency": self.holdout.reset_index().to_dict(orient="records"),
            "totals": self.totals,
            "classifier": self.classifier.reset_index().to_dict(orient="records"),
            "notes": self.notes,
        }


def _reference_params(cal: pd.DataFrame) -> dict[str, float] | None:
    try:
        from lifetimes import BetaGeoFitter, GammaGammaFitter
    except ImportError:
        return None
    bg = BetaGeoFitter().fit(cal.frequency, cal.recency, cal["T"])
    rep = cal[cal.frequency > 0]
    gg = GammaGammaFitter().fit(rep.frequency, rep.monetary_value)
    out = {k: float(v) for k, v in bg.params_.items()}
    out["log_likelihood"] = float("nan")  # lifetimes reports a penalised, per-customer mean, not comparable
    out.update({k: float(v) for k, v in gg.params_.items()})
    return out


def evaluate_predictions(dataset: str = "cdnow", workdir: str | Path | None = None) -> Evaluation:
    """Run the CDNOW validation end to end (export, ingest, fit, backtest, cross-validate)."""
    if dataset not in ("cdnow", "cdnow-sample"):
        raise NotFoundError(f"evaluate predictions: unknown dataset '{dataset}': expected cdnow")
    tmp = tempfile.TemporaryDirectory() if workdir is None else None
    folder = Path(workdir or tmp.name) / "cdnow-sample"  # type: ignore[union-attr]
    export_dataset("cdnow-sample", folder)
    cfg = load_config(folder / "shoplens.toml")
    try:
        with Store.for_config(cfg) as store:
            ingest(cfg, store, create_key=True)
            history = StoreHistory(store, unit_days=7.0)
            cal = history.summary(CAL_END)
            actual = history.counts(CAL_END, HOLD_END).reindex(cal.index).fillna(0.0)
            bg = BGNBD().fit(cal.frequency, cal.recency, cal["T"])
            gg = GammaGamma().fit(cal.frequency, cal.monetary_value)
            corrected = CorrectedBGNBD().fit(history, CAL_END)
            folds = make_folds(store, PROPENSITY_CUTOFFS, HORIZON_DAYS)
    finally:
        if tmp is not None:
            tmp.cleanup()

    ours = {**bg.params_.__dict__, "log_likelihood": bg.log_likelihood_, **gg.params_.__dict__}
    ref = _reference_params(cal)
    params = pd.DataFrame({
        "ours": pd.Series(ours, dtype=float),
        "published": pd.Series(PUBLISHED, dtype=float),
        "lifetimes": pd.Series(ref, dtype=float) if ref else np.nan,
    }).loc[list(PUBLISHED)]
    params.index.name = "parameter"
    params["ours_vs_published_%"] = 100 * (params.ours / params.published - 1)

    base = bg.expected_purchases(WEEKS, cal.frequency, cal.recency, cal["T"])
    mean = corrected.predict(bg, cal, WEEKS)
    point = corrected.predict_point(bg, cal, WEEKS)
    frame = pd.DataFrame({"x": np.minimum(cal.frequency.to_numpy(), 7), "actual": actual.to_numpy(),
                          "bg_nbd": base, "corrected_mean": mean, "corrected_point": point})
    holdout = frame.groupby("x").agg(customers=("actual", "size"), actual=("actual", "mean"), bg_nbd=("bg_nbd", "mean"),
                                     corrected_mean=("corrected_mean", "mean"), corrected_point=("corrected_point", "mean"))
    holdout.index = [str(int(i)) if i < 7 else "7+" for i in holdout.index]
    holdout.index.name = "calibration repeat purchases"
    y = frame.actual.to_numpy()
    totals = {
        "actual": float(y.sum()),
        "bg_nbd": float(base.sum()), "corrected_mean": float(mean.sum()), "corrected_point": float(point.sum()),
        "mae_bg_nbd": float(np.abs(base - y).mean()), "mae_corrected_mean": float(np.abs(mean - y).mean()),
        "mae_corrected_point": float(np.abs(point - y).mean()),
        "corrected_point_tau": float(corrected.tau_),
    }
    cv = cross_validate(folds, HORIZON_DAYS)
    classifier = cv.groupby("model")[["roc_auc", "pr_auc", "recall", "f1", "brier"]].mean()
    notes = [
        f"data: CDNOW sample, {len(cal):,} customers; calibration 1997-01-01..1997-09-30, holdout ..1998-06-30 (39 weeks)",
        f"corrected model: BG/NBD x LightGBM trained on backtests at {', '.join(str(c) for c in corrected.cutoffs_)} (calibration data only)",
        f"classifier: buys within {HORIZON_DAYS} days; expanding-window CV over {cv.cutoff.nunique()} test cut-offs "
        f"({cv.cutoff.min()}..{cv.cutoff.max()}), means shown",
    ]
    if ref is None:
        notes.append("lifetimes is not installed: its column is empty (pip install lifetimes)")
    return Evaluation(params, holdout, totals, classifier, notes)


def _score_texts(store: Store) -> str:
    """Per-text sentiment of the stored (masked) texts, as the build's text step writes it
    (n-gram model: no embeddings needed); returns the temporary table's name."""
    from shoplens.text.sentiment import label, load_sentiment

    texts = store.con.execute("SELECT customer_id, created_at, text FROM texts").df()
    texts["sentiment"] = load_sentiment().predict_proba(texts["text"].tolist())
    texts["sentiment_label"] = [label(p) for p in texts["sentiment"]]
    store.con.register("_text_scores_df", texts.drop(columns="text"))
    store.con.execute("CREATE OR REPLACE TABLE _text_scores AS SELECT * FROM _text_scores_df")  # Ibis reads it
    store.con.unregister("_text_scores_df")
    return "_text_scores"


def evaluate_text_lift(workdir: str | Path | None = None, customers: int = 2000, seed: int = 42) -> pd.DataFrame:
    """Propensity on the demo shop with and without the text features (same folds): ratings,
    review/chat counts and the text step's sentiment.

    The demo is the only data set here that joins orders and customers' own texts.
    """
    from shoplens.datasets.demo import generate

    tmp = tempfile.TemporaryDirectory() if workdir is None else None
    folder = Path(workdir or tmp.name) / "demo"  # type: ignore[union-attr]
    generate(folder, customers=customers, seed=seed)
    cfg = load_config(folder / "shoplens.toml")
    try:
        with Store.for_config(cfg) as store:
            ingest(cfg, store, create_key=True)
            cutoffs = [date(2024, m, 1) for m in range(7, 13)] + [date(2025, m, 1) for m in range(1, 10)]
            folds = make_folds(store, cutoffs, HORIZON_DAYS, _score_texts(store))
    finally:
        if tmp is not None:
            tmp.cleanup()
    with_text = cross_validate(folds, HORIZON_DAYS, features=MODEL_FEATURES, label="LightGBM, behaviour + text")
    without = cross_validate(folds, HORIZON_DAYS, baselines=False, features=BEHAVIOUR_FEATURES, label="LightGBM, behaviour only")
    table = pd.concat([with_text, without]).groupby("model")[["roc_auc", "pr_auc", "recall", "f1", "brier"]].mean()
    table.loc["lift from text (AUC points)"] = table.loc["LightGBM, behaviour + text"] - table.loc["LightGBM, behaviour only"]
    return table
