"""Run the behavioural features on Apache Spark (the ``[spark]`` extra).

The expressions are the same Ibis expressions the DuckDB build uses; only the backend
changes. Tables come from Parquet files (or any Spark table/view already registered).

    >>> from shoplens.features.spark import spark_backend, spark_features  # doctest: +SKIP
    >>> backend = spark_backend()                                          # doctest: +SKIP
    >>> feats, cats = spark_features(backend, {"orders": "s3://.../orders.parquet", ...}, as_of)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

import ibis.expr.types as ir

from shoplens.errors import ConfigError, require
from shoplens.features.behaviour import Tables, behaviour_features
from shoplens.features.rfm import RfmRule, load_rules

TABLE_NAMES = ("customers", "orders", "order_items", "products", "events")


def spark_backend(session: Any = None, master: str = "local[2]") -> Any:
    """An Ibis PySpark backend; creates a session (UTC, quiet) when none is given."""
    require("pyspark", "spark")
    import ibis

    if session is None:
        from pyspark.sql import SparkSession

        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        session = (
            SparkSession.builder.master(master)
            .appName("shoplens")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .getOrCreate()
        )
    return ibis.pyspark.connect(session)


def spark_features(
    backend: Any, sources: dict[str, str], as_of: datetime, rules: list[RfmRule] | None = None
) -> tuple[ir.Table, ir.Table]:
    """Feature expressions over Spark tables: ``sources`` maps each canonical table to a
    Parquet path, or to the name of a table/view Spark already knows."""
    missing = [n for n in TABLE_NAMES if n not in sources]
    if missing:
        raise ConfigError(f"spark_features: no source for table(s) {missing}; expected all of {list(TABLE_NAMES)}")
    tables = {}
    for name in TABLE_NAMES:
        src = sources[name]
        tables[name] = backend.read_parquet(src, table_name=f"shoplens_{name}") if src.endswith(".parquet") else backend.table(src)
    return behaviour_features(Tables(**tables), as_of, rules or load_rules())
