"""Segmentation of customers by behaviour (and, when present, text signals and
predictions) with quality metrics chosen by measurement.

K-Means (MiniBatchKMeans above 50k customers) by default, Gaussian mixture and HDBSCAN
as options, all from scikit-learn. k is chosen over a range by silhouette (on a
sample), with Davies-Bouldin and Calinski-Harabasz reported for the chosen k;
stability is the mean adjusted Rand index between the fitted labels and refits on
bootstrap samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from shoplens.models.btyd import ModelError

SEGMENT_FEATURES = (
    "recency_days", "n_orders", "total_spend", "aov", "discount_rate", "return_rate", "tenure_days",
    "n_events", "n_views", "n_cart_adds", "night_share", "weekend_share", "churn_risk", "clv", "mean_rating", "sentiment_mean", "age",
)
SKEWED = {"n_orders", "total_spend", "aov", "n_events", "n_views", "n_cart_adds", "clv", "recency_days", "tenure_days"}
MIN_CUSTOMERS = 20


@dataclass
class Design:
    """The scaling fitted on one set of customers, applied to any other: log1p for
    skewed counts and money, the fitted median for missing values, then the fitted mean
    and standard deviation. Columns that are constant or absent are left out."""

    columns: list[str]
    medians: dict[str, float]
    means: dict[str, float]
    stds: dict[str, float]

    @classmethod
    def fit(cls, frame: pd.DataFrame, columns: tuple[str, ...] = SEGMENT_FEATURES) -> Design:
        used = [c for c in columns if c in frame.columns and frame[c].notna().any()]
        X = _logged(frame, used)
        medians = X.median()
        X = X.fillna(medians)
        std = X.std(ddof=0)
        keep = [c for c in used if std[c] > 1e-12]
        mean = X[keep].mean()
        return cls(keep, {c: float(medians[c]) for c in keep}, {c: float(mean[c]) for c in keep},
                   {c: float(std[c]) for c in keep})

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        X = _logged(frame, self.columns).fillna(self.medians)
        return ((X[self.columns] - pd.Series(self.means)) / pd.Series(self.stds)).to_numpy()


def _logged(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    X = frame[columns].astype(float).copy()
    for c in columns:
        if c in SKEWED:
            X[c] = np.log1p(X[c].clip(lower=0))
    return X


def design_matrix(frame: pd.DataFrame, columns: tuple[str, ...] = SEGMENT_FEATURES) -> tuple[np.ndarray, list[str]]:
    """The scaled matrix of ``frame`` with the scaling fitted on it (``Design``)."""
    design = Design.fit(frame, columns)
    return design.transform(frame), design.columns


@dataclass
class SegmentationResult:
    labels: np.ndarray
    k: int
    method: str
    metrics: dict[str, float] = field(default_factory=dict)
    scores_by_k: dict[int, dict[str, float]] = field(default_factory=dict)


class Segmenter:
    """Choose k over ``k_range`` by silhouette and fit; estimator contract (``fit`` sets
    ``result_``)."""

    def __init__(self, method: Literal["kmeans", "gmm", "hdbscan"] = "kmeans", k_range: tuple[int, int] = (3, 8),
                 seed: int = 0, silhouette_sample: int = 10_000, bootstrap: int = 5) -> None:
        self.method = method
        self.k_range = k_range
        self.seed = seed
        self.silhouette_sample = silhouette_sample
        self.bootstrap = bootstrap

    def _model(self, k: int, n: int) -> Any:
        from sklearn.cluster import HDBSCAN, KMeans, MiniBatchKMeans
        from sklearn.mixture import GaussianMixture

        if self.method == "gmm":
            return GaussianMixture(n_components=k, random_state=self.seed, n_init=2)
        if self.method == "hdbscan":
            return HDBSCAN(min_cluster_size=max(10, n // 50))
        if n > 50_000:
            return MiniBatchKMeans(n_clusters=k, random_state=self.seed, n_init=3, batch_size=4096)
        return KMeans(n_clusters=k, random_state=self.seed, n_init=10)

    def _scores(self, X: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

        if len(np.unique(labels)) < 2:
            return {"silhouette": -1.0, "davies_bouldin": float("inf"), "calinski_harabasz": 0.0}
        size = min(self.silhouette_sample, len(X))
        return {
            "silhouette": float(silhouette_score(X, labels, sample_size=size, random_state=self.seed)),
            "davies_bouldin": float(davies_bouldin_score(X, labels)),
            "calinski_harabasz": float(calinski_harabasz_score(X, labels)),
        }

    def fit(self, X: np.ndarray) -> Segmenter:
        n = len(X)
        if n < MIN_CUSTOMERS:
            raise ModelError(f"segmentation needs at least {MIN_CUSTOMERS} customers, found {n}")
        scores: dict[int, dict[str, float]] = {}
        fits: dict[int, tuple[Any, np.ndarray]] = {}
        ks = [0] if self.method == "hdbscan" else list(range(self.k_range[0], min(self.k_range[1], n - 1) + 1))
        for k in ks:
            model = self._model(k, n)
            labels = np.asarray(model.fit_predict(X))
            fits[k], scores[k] = (model, labels), self._scores(X, labels)
        best = max(scores, key=lambda k: scores[k]["silhouette"])
        self.model_, labels = fits[best]
        found = sorted(set(labels.tolist()) - {-1})
        # where each segment sits: HDBSCAN has no predict(), new customers go to the nearest
        self.centres_ = np.array([X[labels == s].mean(axis=0) for s in found]) if found else np.empty((0, X.shape[1]))
        self.centre_ids_ = np.array(found, dtype=int)
        metrics = dict(scores[best])
        metrics["stability_ari"] = self._stability(X, labels, best)
        self.result_ = SegmentationResult(labels, int(len(np.unique(labels[labels >= 0]))), self.method, metrics, scores)
        return self

    def assign(self, X: np.ndarray) -> np.ndarray:
        """Segments for customers the fit did not see (a sample was fitted): the model's
        own ``predict`` (k-means: nearest centre, Gaussian mixture: most likely
        component); HDBSCAN's nearest segment centre."""
        if not hasattr(self, "model_"):
            raise ModelError("the segmenter is not fitted yet: call fit() first")
        if len(X) == 0:
            return np.empty(0, dtype=int)
        if hasattr(self.model_, "predict"):
            return np.asarray(self.model_.predict(X))
        if len(self.centre_ids_) == 0:
            return np.full(len(X), -1)
        d = ((X[:, None, :] - self.centres_[None, :, :]) ** 2).sum(axis=2)
        return self.centre_ids_[np.argmin(d, axis=1)]

    def _stability(self, X: np.ndarray, labels: np.ndarray, k: int) -> float:
        """Mean adjusted Rand index between the labels and refits on bootstrap samples."""
        from sklearn.metrics import adjusted_rand_score

        rng = np.random.default_rng(self.seed)
        aris = []
        for b in range(self.bootstrap):
            idx = rng.choice(len(X), size=min(len(X), 50_000), replace=True)
            model = self._model(k, len(idx))
            if hasattr(model, "random_state"):
                model.set_params(random_state=self.seed + b + 1)
            refit = np.asarray(model.fit(X[idx]).predict(X)) if hasattr(model, "predict") else np.asarray(model.fit_predict(X))
            aris.append(adjusted_rand_score(labels, refit))
        return float(np.mean(aris)) if aris else float("nan")
