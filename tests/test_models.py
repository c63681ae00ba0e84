"""Predictions: a real fit on CDNOW against published figures and lifetimes, the
improved holdout model, the classifier against baselines, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shoplens.models.btyd import BGNBD, GammaGamma, ModelError
from shoplens.models.evaluate import PUBLISHED, Evaluation, evaluate_predictions


@pytest.fixture(scope="module")
def cdnow(tmp_path_factory: pytest.TempPathFactory) -> Evaluation:
    return evaluate_predictions("cdnow", tmp_path_factory.mktemp("cdnow"))


def test_cdnow_parameters_within_2_percent_of_published(cdnow: Evaluation) -> None:
    p = cdnow.params
    for name in ("r", "alpha", "a", "b", "p", "q", "v"):
        assert abs(p.loc[name, "ours"] / PUBLISHED[name] - 1) < 0.02, name
    assert p.loc["log_likelihood", "ours"] == pytest.approx(PUBLISHED["log_likelihood"], abs=0.1)


def test_parameters_agree_with_lifetimes(cdnow: Evaluation) -> None:
    p = cdnow.params.dropna(subset=["lifetimes"])
    assert len(p) == 7
    assert np.allclose(p.ours, p.lifetimes, rtol=1e-3)


def test_corrected_model_beats_plain_bgnbd_on_the_holdout(cdnow: Evaluation) -> None:
    t = cdnow.totals
    assert t["actual"] == 1882
    assert abs(t["bg_nbd"] / t["actual"] - 1) > 0.10  # the known under-prediction
    assert abs(t["corrected_point"] / t["actual"] - 1) <= 0.05
    assert t["mae_corrected_point"] < t["mae_bg_nbd"]
    assert list(cdnow.holdout.index) == ["0", "1", "2", "3", "4", "5", "6", "7+"]


def test_propensity_beats_both_baselines_on_roc_auc(cdnow: Evaluation) -> None:
    auc = cdnow.classifier["roc_auc"]
    ours = auc["LightGBM (behaviour + BG/NBD)"]
    assert ours > auc["RFM score rule"] and ours > auc["BG/NBD expected purchases"] and ours > auc["BG/NBD P(alive)"]
    assert 0 < cdnow.classifier.loc["LightGBM (behaviour + BG/NBD)", "brier"] < 0.25


def test_clear_errors_for_data_models_cannot_use() -> None:
    with pytest.raises(ModelError, match="at least 3 customers"):
        BGNBD().fit(np.array([1.0]), np.array([2.0]), np.array([5.0]))
    with pytest.raises(ModelError, match="every customer bought only once"):
        BGNBD().fit(np.zeros(50), np.zeros(50), np.full(50, 10.0))
    with pytest.raises(ModelError, match="recency > T"):
        BGNBD().fit(np.array([1.0, 2, 3]), np.array([5.0, 6, 9]), np.array([4.0, 8, 10]))
    with pytest.raises(ModelError, match="positive spend"):
        GammaGamma().fit(np.array([1.0, 2, 3, 1]), np.array([10.0, -5, 3, 0]))
    with pytest.raises(ModelError, match="not fitted yet"):
        BGNBD().p_alive(np.array([1.0]), np.array([1.0]), np.array([2.0]))


def test_build_skips_predictions_with_a_reason_on_a_short_history(tmp_path: Path) -> None:
    from conftest import write_shop

    from shoplens.build import build
    from shoplens.ingest import ingest
    from shoplens.store import Store

    orders = "order_id,customer_id,order_ts,amount\n" + "".join(
        f"o{i},C{i % 3 + 1},2024-01-{i + 1:02d},10\n" for i in range(9)
    )
    cfg = write_shop(tmp_path, {"customers.csv": "customer_id\nC1\nC2\nC3\n", "orders.csv": orders},
                     '[[sources]]\ntable = "customers"\npath = "customers.csv"\n[[sources]]\ntable = "orders"\npath = "orders.csv"\n')
    with Store.for_config(cfg) as st:
        ingest(cfg, st)
        b = build(cfg, st)  # completes: predictions that cannot be made are NULL, with the reason saved
        skipped = dict(st.con.execute(f"SELECT name, payload FROM snap_{b.snapshot_id}.model_artifacts WHERE name LIKE 'skipped:%'").fetchall())
        assert "days of order history" in skipped["skipped:propensity"]
        assert "days of order history" in b.skipped["propensity"]  # also reported to the caller
        assert st.scalar(f"SELECT count(churn_risk) FROM snap_{b.snapshot_id}.customer_predictions") == 0


def test_saved_models_refuse_a_mismatched_fingerprint(demo_shop) -> None:
    from shoplens.models.artifacts import load_model
    from shoplens.store import Store

    with Store.open(demo_shop.folder / "shoplens.duckdb", read_only=True) as st:
        schema = f"snap_{demo_shop.build.snapshot_id}"
        saved = dict(zip(("config_hash", "last_ingest_id", "shoplens", "lightgbm"), [None] * 4, strict=True))
        import json

        meta = json.loads(st.scalar(f"SELECT fingerprint FROM {schema}.model_artifacts WHERE name = 'bg_nbd'"))
        assert set(meta) == set(saved)
        params = load_model(st, schema, "bg_nbd", meta)
        assert params["r"] > 0 and params["alpha"] > 0
        with pytest.raises(ModelError, match=r"refusing to load model 'bg_nbd'.*config_hash: saved"):
            load_model(st, schema, "bg_nbd", meta | {"config_hash": "something-else"})


def test_text_features_are_null_without_texts(demo_shop) -> None:
    from shoplens.models.propensity import TEXT_FEATURES, features_at
    from shoplens.store import Store

    with Store.open(demo_shop.folder / "shoplens.duckdb", read_only=True) as st:
        f = features_at(st, demo_shop.build.as_of, 90)
    assert set(TEXT_FEATURES) <= set(f.columns)
    wrote = f.n_reviews.notna()
    assert 0 < wrote.sum() < len(f)  # some buyers wrote, some did not: those stay NULL, not 0
    assert f.loc[wrote, "mean_rating"].between(1, 5).all()


def test_backtest_features_use_the_configured_rules_and_time_unit(demo_shop, monkeypatch) -> None:
    import shoplens.models.propensity as propensity
    from shoplens.features.rfm import load_rules
    from shoplens.store import Store

    rules = load_rules()

    def default_rules_used(*_a: object) -> None:
        raise AssertionError("the backtest fell back to the default RFM rules")

    seen: list[float] = []

    class Recording(propensity.BGNBD):  # type: ignore[misc, name-defined]
        def fit(self, x, t_x, T, weights=None):  # type: ignore[no-untyped-def]
            seen.append(float(np.max(T)))
            return super().fit(x, t_x, T, weights=weights)

    monkeypatch.setattr(propensity, "load_rules", default_rules_used)
    monkeypatch.setattr(propensity, "BGNBD", Recording)
    with Store.open(demo_shop.folder / "shoplens.duckdb", read_only=True) as st:
        cutoff = demo_shop.build.as_of
        propensity.features_at(st, cutoff, 90, rules=rules, unit_days=7.0)
        propensity.features_at(st, cutoff, 90, rules=rules, unit_days=1.0)
    assert len(seen) == 2 and seen[1] == pytest.approx(7 * seen[0])  # T in weeks, then in days
