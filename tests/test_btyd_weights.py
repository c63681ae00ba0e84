"""BG/NBD and Gamma-Gamma fitted on grouped histories with counts as weights (what the
Spark engine does after ``GROUP BY x, t_x, T``) give the fit on one row per customer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shoplens.datasets.corpora import package_file
from shoplens.models.btyd import BGNBD, GammaGamma, ModelError, grouped_histories


@pytest.fixture(scope="module")
def cdnow() -> pd.DataFrame:
    """CDNOW calibration summary (2,357 customers, weeks) with mean spend ``m``."""
    d = pd.read_csv(package_file("lifetimes", "lifetimes/datasets/cdnow_customers_summary_with_transactions.csv"))
    return d.rename(columns={"zbar": "m"})[["x", "t_x", "T", "m"]].astype(float)


@pytest.fixture(scope="module")
def synthetic() -> pd.DataFrame:
    """20,000 customers from a BG/NBD + Gamma-Gamma process, recorded in whole days: many
    customers share a history, as in a real shop."""
    rng = np.random.default_rng(7)
    n = 20_000
    lam, drop = rng.gamma(0.24, 1 / 4.4, n), rng.beta(0.8, 2.4, n)
    T = rng.integers(13 * 7, 52 * 7, n) / 7.0
    t, last, x = np.zeros(n), np.zeros(n), np.zeros(n)
    alive = np.ones(n, dtype=bool)
    while alive.any():
        t = t + rng.exponential(1 / np.maximum(lam, 1e-12))
        buys = alive & (t <= T)
        x[buys] += 1
        last[buys] = t[buys]
        alive = buys & (rng.random(n) >= drop)
    m = np.where(x > 0, np.round(rng.gamma(6.0, 2.5, n), 0), np.nan)  # whole currency units
    return pd.DataFrame({"x": x, "t_x": np.round(last * 7) / 7, "T": np.round(T * 7) / 7, "m": m})


def params(model: BGNBD | GammaGamma) -> np.ndarray:
    return np.array(list(model.params_.__dict__.values()), dtype=float)


def group_by(d: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """``SELECT cols, count(*) AS n ... GROUP BY cols`` in an arbitrary (here shuffled) order."""
    g = d.groupby(cols, dropna=False).size().rename("n").reset_index()
    return g.sample(frac=1.0, random_state=3).reset_index(drop=True)


def assert_same_bgnbd(a: BGNBD, b: BGNBD) -> None:
    np.testing.assert_allclose(params(a), params(b), rtol=1e-9)
    np.testing.assert_allclose(a.log_likelihood_, b.log_likelihood_, rtol=1e-12)
    assert a.n_customers_ == b.n_customers_


@pytest.mark.parametrize("data", ["cdnow", "synthetic"])
def test_bgnbd_on_grouped_histories_with_counts_equals_the_fit_per_customer(
    data: str, request: pytest.FixtureRequest,
) -> None:
    d: pd.DataFrame = request.getfixturevalue(data)
    expanded = BGNBD().fit(d.x, d.t_x, d["T"])
    g = group_by(d, ["x", "t_x", "T"])
    assert len(g) < len(d)
    grouped = BGNBD().fit(g.x, g.t_x, g["T"], weights=g.n)
    assert_same_bgnbd(grouped, expanded)
    assert expanded.n_customers_ == len(d) and isinstance(grouped.n_customers_, int)
    # the public grouping gives the same
    x, t_x, T, counts = grouped_histories(d.x, d.t_x, d["T"])
    assert len(x) == len(g) and counts.sum() == len(d)
    assert_same_bgnbd(BGNBD().fit(x, t_x, T, weights=counts), expanded)


def test_bgnbd_row_order_does_not_change_the_fit(cdnow: pd.DataFrame) -> None:
    a = BGNBD().fit(cdnow.x, cdnow.t_x, cdnow["T"])
    s = cdnow.sample(frac=1.0, random_state=0)
    b = BGNBD().fit(s.x, s.t_x, s["T"])
    assert params(a).tolist() == params(b).tolist() and a.log_likelihood_ == b.log_likelihood_


def test_integer_weights_equal_repeated_rows(synthetic: pd.DataFrame) -> None:
    rng = np.random.default_rng(1)
    d = synthetic.drop_duplicates(["x", "t_x", "T"]).reset_index(drop=True)
    w = rng.integers(0, 6, len(d))
    rep = d.loc[np.repeat(d.index.to_numpy(), w)]
    assert_same_bgnbd(BGNBD().fit(d.x, d.t_x, d["T"], weights=w), BGNBD().fit(rep.x, rep.t_x, rep["T"]))
    # duplicate rows in a weighted input merge, their weights summed
    both = pd.concat([d, d])
    assert_same_bgnbd(BGNBD().fit(both.x, both.t_x, both["T"], weights=np.concatenate([w, w])),
                      BGNBD().fit(d.x, d.t_x, d["T"], weights=2 * w))


def test_zero_weights_drop_rows(cdnow: pd.DataFrame) -> None:
    base = BGNBD().fit(cdnow.x, cdnow.t_x, cdnow["T"])
    assert_same_bgnbd(BGNBD().fit(cdnow.x, cdnow.t_x, cdnow["T"], weights=np.ones(len(cdnow))), base)
    # an extra row that would be refused (recency > T) counts as no customer at weight 0
    x, t_x, T = (np.append(cdnow[c].to_numpy(), v) for c, v in (("x", 3.0), ("t_x", 50.0), ("T", 10.0)))
    w = np.append(np.ones(len(cdnow)), 0.0)
    assert_same_bgnbd(BGNBD().fit(x, t_x, T, weights=w), base)
    with pytest.raises(ModelError, match="recency > T"):
        BGNBD().fit(x, t_x, T)
    gx, gt, _, gn = grouped_histories(x, t_x, T, weights=w)
    assert gn.sum() == len(cdnow) and not np.any((gx == 3) & (gt == 50))


def test_minimum_customers_counts_weights_not_rows(synthetic: pd.DataFrame) -> None:
    x, t_x, T, counts = grouped_histories(synthetic.x, synthetic.t_x, synthetic["T"])
    m = BGNBD(min_customers=len(x) + 1).fit(x, t_x, T, weights=counts)
    assert m.n_customers_ == len(synthetic)
    with pytest.raises(ModelError, match=f"at least {len(x) + 1} customers .*found {len(x)}$"):
        BGNBD(min_customers=len(x) + 1).fit(x, t_x, T)
    with pytest.raises(ModelError, match="at least 3 customers .*found 2$"):
        BGNBD().fit([1.0, 2, 0], [2.0, 3, 0], [5.0, 5, 5], weights=[1, 1, 0])


@pytest.mark.parametrize(("weights", "message"), [
    ([1, -1, 1], r"BG/NBD weights must be finite customer counts >= 0; received 1 negative or non-finite "
                 r"\(first: -1.0 at row 1\)"),
    ([1, np.nan, 1], r"finite customer counts >= 0; received 1 negative or non-finite \(first: nan at row 1\)"),
    ([1, 1], r"BG/NBD weights must have one value per row: expected 3 weights, received 2"),
    ([[1, 1, 1]], r"one value per row: expected 3 weights, received an array of shape \(1, 3\)"),
])
def test_bad_weights_are_refused_with_a_clear_message(weights: list[float], message: str) -> None:
    with pytest.raises(ModelError, match=message):
        BGNBD().fit([1.0, 2, 0], [2.0, 3, 0], [5.0, 5, 5], weights=weights)
    with pytest.raises(ModelError, match=message.replace("BG/NBD", "Gamma-Gamma")):
        GammaGamma().fit([1.0, 2, 3], [5.0, 6, 7], weights=weights)
    with pytest.raises(ModelError, match=message):
        grouped_histories([1.0, 2, 0], [2.0, 3, 0], [5.0, 5, 5], weights=weights)


@pytest.mark.parametrize("data", ["cdnow", "synthetic"])
def test_gamma_gamma_on_grouped_pairs_with_counts_equals_the_fit_per_customer(
    data: str, request: pytest.FixtureRequest,
) -> None:
    d: pd.DataFrame = request.getfixturevalue(data)
    expanded = GammaGamma().fit(d.x, d.m)
    g = group_by(d, ["x", "m"])  # one-time buyers (x = 0, m missing) group too and are skipped
    assert len(g) < len(d)
    grouped = GammaGamma().fit(g.x, g.m, weights=g.n)
    np.testing.assert_allclose(params(grouped), params(expanded), rtol=1e-9)
    np.testing.assert_allclose(grouped.log_likelihood_, expanded.log_likelihood_, rtol=1e-12)
    assert grouped.n_customers_ == expanded.n_customers_ == int((d.x > 0).sum())


def test_gamma_gamma_row_order_does_not_change_the_fit(cdnow: pd.DataFrame) -> None:
    a = GammaGamma().fit(cdnow.x, cdnow.m)
    s = cdnow.sample(frac=1.0, random_state=0)  # this order once stopped at 'ABNORMAL' and raised
    b = GammaGamma().fit(s.x, s.m)
    assert params(a).tolist() == params(b).tolist() and a.log_likelihood_ == b.log_likelihood_


def test_gamma_gamma_weights_drop_rows_and_count_customers(cdnow: pd.DataFrame) -> None:
    base = GammaGamma().fit(cdnow.x, cdnow.m)
    x, m = np.append(cdnow.x.to_numpy(), 2.0), np.append(cdnow.m.to_numpy(), -4.0)
    w = np.append(np.ones(len(cdnow)), 0.0)
    zero = GammaGamma().fit(x, m, weights=w)  # the negative spend counts as no customer
    np.testing.assert_allclose(params(zero), params(base), rtol=1e-9)
    with pytest.raises(ModelError, match="positive spend per purchase.* for 5 repeat buyers"):
        GammaGamma().fit(x, m, weights=np.append(np.ones(len(cdnow)), 5.0))
    with pytest.raises(ModelError, match="at least 3 repeat buyers, found 2$"):
        GammaGamma().fit([1.0, 2, 3], [5.0, 6, 7], weights=[1, 1, 0])
    g = group_by(cdnow, ["x", "m"])
    GammaGamma(min_customers=len(g) + 1).fit(g.x, g.m, weights=g.n)
    with pytest.raises(ModelError, match=f"at least {len(g) + 1} repeat buyers"):
        GammaGamma(min_customers=len(g) + 1).fit(g.x, g.m)


def test_grouped_histories_is_sorted_and_sums_weights(cdnow: pd.DataFrame) -> None:
    x, t_x, T, n = grouped_histories([2, 0, 2, 1], [10, 0, 10, 4], [39, 39, 39, 20], weights=[1, 4, 2.5, 0])
    assert (x.tolist(), t_x.tolist(), T.tolist(), n.tolist()) == ([0.0, 2.0], [0.0, 10.0], [39.0, 39.0], [4.0, 3.5])
    # fractional weights (e.g. sampling weights) fit too; the customer count is then a float
    half = BGNBD().fit(cdnow.x, cdnow.t_x, cdnow["T"], weights=np.full(len(cdnow), 0.5))
    assert half.n_customers_ == len(cdnow) / 2 and isinstance(half.n_customers_, float)
    np.testing.assert_allclose(params(half), params(BGNBD().fit(cdnow.x, cdnow.t_x, cdnow["T"])), rtol=1e-6)
