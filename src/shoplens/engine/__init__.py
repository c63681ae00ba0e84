"""Compute engines a build runs on (``base.Engine``): DuckDB, Spark."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shoplens.config import Config
    from shoplens.engine.base import Engine
    from shoplens.store import Store


def engine_for(cfg: Config, store: Store) -> Engine:
    """The engine ``[engine] type`` names, over ``store``."""
    if cfg.engine.type == "spark":
        from shoplens.engine.spark import SparkEngine

        return SparkEngine(store, cfg)
    from shoplens.engine.duckdb import DuckDBEngine

    return DuckDBEngine(store)
