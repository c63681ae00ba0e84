"""Per-customer features: behaviour (Ibis on DuckDB or Spark) and, later, text."""

from shoplens.features.behaviour import (
    CATEGORY_COLUMNS,
    FEATURE_COLUMNS,
    Tables,
    behaviour_features,
)

__all__ = ["CATEGORY_COLUMNS", "FEATURE_COLUMNS", "Tables", "behaviour_features"]
