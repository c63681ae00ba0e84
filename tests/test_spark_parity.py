"""The same Ibis feature expressions on a real local PySpark session give the same
results as on DuckDB (one ``local[2]`` session per test run)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from test_features import assert_same_features

from shoplens.features.rfm import load_rules
from shoplens.features.spark import TABLE_NAMES as TABLES
from shoplens.features.spark import spark_backend, spark_features
from shoplens.jobs import Summary
from shoplens.store import Store


def _pyspark():
    try:
        import pyspark  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("pyspark is not installed but CI must run the parity test: pip install -e '.[spark]'")
        pytest.skip("pyspark not installed (pip install -e '.[spark]')")


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    _pyspark()
    from pyspark.sql import SparkSession

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    session = (
        SparkSession.builder.master("local[2]")
        .appName("shoplens-tests")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.mark.spark
def test_features_on_spark_equal_duckdb(demo_shop: Summary, spark: object, tmp_path: Path) -> None:
    backend = spark_backend(spark)
    parquet = {}
    with Store.open(demo_shop.folder / "shoplens.duckdb", read_only=True) as st:
        duck = st.con.execute(f"SELECT * FROM snap_{demo_shop.build.snapshot_id}.customer_features").df()
        for name in TABLES:  # the canonical tables, exported as Parquet for Spark to read
            parquet[name] = str(tmp_path / f"{name}.parquet")
            st.con.execute(f"COPY (SELECT * EXCLUDE (_ingest_id, _line, _row_hash) FROM {name}) TO '{parquet[name]}' (FORMAT parquet)")
    as_of = pd.Timestamp(demo_shop.build.as_of).to_pydatetime()
    features, categories = spark_features(backend, parquet, as_of, load_rules())
    on_spark = backend.execute(features)
    assert len(on_spark) == demo_shop.build.n_customers
    assert_same_features(duck, on_spark)
    assert backend.execute(categories.count()) > 0
