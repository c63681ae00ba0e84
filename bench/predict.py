"""Benchmark: CLV (BG/NBD + Gamma-Gamma fit and score) at 10k, 100k and 1M customers,
ShopLens vs lifetimes and PyMC-Marketing (MAP) on the same data, in one process; then
ShopLens' propensity model at the same sizes.

    .venv/bin/pip install 'pymc-marketing==0.19.2'     # or: pip install -e '.[bench]'
    .venv/bin/python bench/predict.py                   # ~5 min
    .venv/bin/python bench/predict.py --sizes 10000 100000

Data: histories simulated from a BG/NBD process with CDNOW's parameters (weeks, T from
13 to 78 weeks) and Gamma-Gamma spend. "fit + score" = fit both models, then expected
purchases in 39 weeks, P(alive) and 12-month CLV for every customer. Each library's
fitted parameters are printed next to ours; the ratio is library time / ours.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import PeakRss, sizes_arguments  # noqa: E402

from shoplens.models.btyd import BGNBD, GammaGamma, clv  # noqa: E402

TRUE = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426, "p": 6.25, "q": 3.74, "v": 15.44}


def simulate(n: int, seed: int = 0) -> pd.DataFrame:
    """(frequency, recency, T, monetary_value) of n customers from BG/NBD + Gamma-Gamma."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(TRUE["r"], 1 / TRUE["alpha"], n)
    p = rng.beta(TRUE["a"], TRUE["b"], n)
    T = rng.integers(13 * 7, 78 * 7, n) / 7.0
    t = np.zeros(n)
    x = np.zeros(n, dtype=np.int64)
    last = np.zeros(n)
    alive = np.ones(n, dtype=bool)
    for _ in range(400):  # purchases happen, after each one the customer may drop out
        if not alive.any():
            break
        t = t + rng.exponential(1 / np.maximum(lam, 1e-12))
        buys = alive & (t <= T)
        x[buys] += 1
        last[buys] = t[buys]
        alive = buys & (rng.random(n) >= p)
    nu = rng.gamma(TRUE["q"], 1 / TRUE["v"], n)
    spend = np.array([rng.gamma(TRUE["p"], 1 / v, k).mean() if k else np.nan for v, k in zip(nu, np.minimum(x, 50), strict=True)]) if n <= 100_000 \
        else np.where(x > 0, rng.gamma(TRUE["p"] * np.maximum(x, 1), 1 / nu) / np.maximum(x, 1), np.nan)
    # histories are recorded in whole days, as the store records them
    return pd.DataFrame({"customer_id": np.arange(n), "frequency": x, "recency": np.round(last * 7) / 7,
                         "T": np.round(T * 7) / 7, "monetary_value": np.round(spend, 2)})


def ours(d: pd.DataFrame) -> dict[str, float]:
    x, r, T, m = d.frequency.to_numpy(float), d.recency.to_numpy(float), d["T"].to_numpy(float), d.monetary_value.to_numpy(float)
    bg = BGNBD().fit(x, r, T)
    gg = GammaGamma().fit(x, m)
    bg.expected_purchases(39, x, r, T)
    bg.p_alive(x, r, T)
    clv(bg, gg, x, r, T, m, months=12)
    return {**bg.params_.__dict__, **gg.params_.__dict__}


def lifetimes_run(d: pd.DataFrame) -> dict[str, float]:
    from lifetimes import BetaGeoFitter, GammaGammaFitter

    bg = BetaGeoFitter().fit(d.frequency, d.recency, d["T"])
    rep = d[d.frequency > 0]
    gg = GammaGammaFitter().fit(rep.frequency, rep.monetary_value)
    bg.conditional_expected_number_of_purchases_up_to_time(39, d.frequency, d.recency, d["T"])
    bg.conditional_probability_alive(d.frequency, d.recency, d["T"])
    gg.customer_lifetime_value(bg, d.frequency, d.recency, d["T"], d.monetary_value.fillna(0), time=12, freq="W")
    return {**dict(bg.params_), **dict(gg.params_)}


def pymc_run(d: pd.DataFrame) -> dict[str, float]:
    from pymc_marketing.clv import BetaGeoModel, GammaGammaModel

    data = d[["customer_id", "frequency", "recency", "T"]]
    bg = BetaGeoModel(data=data)
    bg.fit(method="map", progressbar=False)
    bg.expected_purchases(future_t=39)
    bg.expected_probability_alive()
    rep = d[d.frequency > 0][["customer_id", "frequency", "recency", "T", "monetary_value"]]
    gg = GammaGammaModel(data=rep[["customer_id", "frequency", "monetary_value"]])
    gg.fit(method="map", progressbar=False)
    gg.expected_customer_lifetime_value(transaction_model=bg, data=rep, future_t=12, discount_rate=0.01, time_unit="W")
    post = {k: float(bg.fit_result[k].mean()) for k in ("r", "alpha", "a", "b")}
    post.update({k: float(gg.fit_result[k].mean()) for k in ("p", "q", "v")})
    return post


def propensity_run(n: int) -> None:
    from shoplens.models.propensity import MODEL_FEATURES, PropensityModel

    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.normal(size=(n, len(MODEL_FEATURES))), columns=MODEL_FEATURES)
    X["label"] = (X.iloc[:, 0] + 0.5 * X.iloc[:, 3] + rng.normal(size=n) > 1).astype(int)
    with PeakRss() as mem:
        t0 = time.perf_counter()
        m = PropensityModel().fit(X)
        m.predict_proba(X)
        m.contributions(X.head(10_000))
        s = time.perf_counter() - t0
    print(f"  propensity (LightGBM, {len(MODEL_FEATURES)} features): fit + score {s:7.2f} s, RSS +{mem.grew / 2**20:,.0f} MiB")


def timed(name: str, fn, d: pd.DataFrame) -> float | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with PeakRss() as mem:
                t0 = time.perf_counter()
                params = fn(d)
                s = time.perf_counter() - t0
    except ImportError as err:
        print(f"  {name:<16} not installed ({err.name})")
        return None
    shown = ", ".join(f"{k}={params[k]:.4f}" for k in TRUE)
    print(f"  {name:<16} {s:7.2f} s   RSS +{mem.grew / 2**20:7,.0f} MiB (peak {mem.peak / 2**30:.2f} GiB)   {shown}")
    return s


def main() -> None:
    args = sizes_arguments(__doc__)
    ratios = []
    for n in args.sizes:
        d = simulate(n)
        print(f"{n:,} customers ({(d.frequency > 0).mean():.0%} repeat buyers), CLV fit + score:")
        t_ours = timed("shoplens", ours, d)
        t_lt = timed("lifetimes", lifetimes_run, d)
        t_pm = timed("pymc-marketing", pymc_run, d)
        propensity_run(n)
        assert t_ours is not None
        ratios.append((n, t_lt / t_ours if t_lt else float("nan"), t_pm / t_ours if t_pm else float("nan")))
    for n, lt, pm in ratios:
        print(f"ratio at {n:,}: lifetimes / shoplens {lt:.2f}x, pymc-marketing / shoplens {pm:.2f}x")


if __name__ == "__main__":
    main()
