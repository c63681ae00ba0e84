"""An unsupervised behaviour score whose threshold needs no guessed contamination rate.

Each feature is put on a log scale (``log1p``: counts and money are skewed) and
standardised robustly (median, and the MAD scaled to a standard deviation, or the IQR
when most customers share one value), so the outliers being looked for do not move the
yardstick. A customer's per-feature upper-tail p-value is the Gaussian tail of that robust
z-score (on the log scale the bulk of each feature is close to normal; Student's t with
5 degrees of freedom was tried and could not reach significance over a few thousand
customers even at z = 10); the caller combines them (Bonferroni over features, Benjamini-Hochberg over customers, ``detect``). The
z-scores are the per-feature attribution shown with each flag.

Written here rather than taken from PyOD: its detectors (IsolationForest, ECOD, COPOD)
rank well but turn scores into flags with a contamination share the user must guess
(pyod#144, #627), and ECOD's empirical tails cannot reach significance over a whole
customer base.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


class RobustScorer:
    def fit(self, x: pd.DataFrame) -> RobustScorer:
        v = self._transform(x)
        self.center_ = np.nanmedian(v, axis=0)
        mad = 1.4826 * np.nanmedian(np.abs(v - self.center_), axis=0)
        q75, q25 = np.nanpercentile(v, [75, 25], axis=0)
        spread = np.maximum(mad, (q75 - q25) / 1.349)
        fallback = np.nanstd(v, axis=0)
        self.scale_ = np.where(spread > 1e-9, spread, np.where(fallback > 1e-9, fallback, 1.0))
        self.typical_ = np.expm1(self.center_)
        return self

    @staticmethod
    def _transform(x: pd.DataFrame) -> np.ndarray:
        return np.log1p(np.clip(x.to_numpy(dtype=float), 0, None))

    def z(self, x: pd.DataFrame) -> np.ndarray:
        z = (self._transform(x) - self.center_) / self.scale_
        return np.nan_to_num(z, nan=0.0)

    def p_values(self, x: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Per customer and feature: the upper-tail p-value and the z-score."""
        z = self.z(x)
        return stats.norm.sf(z), z
