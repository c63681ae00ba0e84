"""Real public data sets load through the validated ingest path with their known sizes."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shoplens.build import build
from shoplens.config import load_config
from shoplens.datasets.corpora import package_file
from shoplens.errors import NotFoundError
from shoplens.jobs import load_dataset
from shoplens.privacy import keys_for
from shoplens.store import Store


def test_cdnow_sample_matches_the_published_btyd_summary(tmp_path: Path) -> None:
    s = load_dataset("cdnow-sample", tmp_path / "cdnow")
    assert s.tables["customers"] == 2357 and s.tables["orders"] == 6919 and s.tables["quarantine"] == 0
    cfg = load_config(tmp_path / "cdnow" / "shoplens.toml")
    with Store.open(cfg.store_path) as st:
        b = build(cfg, st, as_of=date(1997, 10, 1))  # 39-week calibration: 1997-01-01 .. 1997-09-30
        ours = st.con.execute(f"SELECT customer_id, frequency, recency / 7 AS recency, T / 7 AS T "
                              f"FROM snap_{b.snapshot_id}.customer_features").df()
    keys = keys_for(cfg)
    # lifetimes ships the calibration summary of the same sample (weeks, BTYD convention)
    ref = pd.read_csv(package_file("lifetimes", "lifetimes/datasets/cdnow_customers_summary.csv"))
    ref["customer_id"] = [keys.pseudonym(f"{i:04d}") for i in ref["ID"]]
    both = ref.merge(ours, on="customer_id", suffixes=("_ref", ""))
    assert len(both) == 2357
    assert (both.frequency == both.frequency_ref).all()
    assert np.allclose(both.recency, both.recency_ref, atol=0.006)
    assert np.allclose(both["T"], both["T_ref"], atol=0.006)


def test_movielens(tmp_path: Path) -> None:
    s = load_dataset("movielens", tmp_path / "ml")
    assert (s.tables["customers"], s.tables["products"], s.tables["events"]) == (943, 1682, 100000)
    assert s.tables["quarantine"] == 0


def test_instacart(tmp_path: Path) -> None:
    s = load_dataset("instacart", tmp_path / "ic")
    assert s.tables["customers"] == 593 and s.tables["orders"] == 15183 and s.tables["quarantine"] == 0


def test_unknown_dataset(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="unknown data set 'yelp': expected one of cdnow, cdnow-sample, instacart, movielens"):
        load_dataset("yelp", tmp_path)
