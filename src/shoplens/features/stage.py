"""Build stages for the customer dimension and the behaviour features (set-based: Ibis
expressions the engine compiles, DuckDB SQL or Spark SQL)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from shoplens.config import Config
from shoplens.engine.base import Snapshot
from shoplens.features.behaviour import FEATURE_COLUMNS, Tables, behaviour_features
from shoplens.pipeline.stage import BaseStage, BuildContext, StageReport, TableSpec

_S, _D, _I, _T = pa.string(), pa.float64(), pa.int64(), pa.timestamp("us")
CUSTOMERS = pa.schema([("customer_id", _S), ("signup_at", _T), ("gender", _S), ("birth_year", _I), ("city", _S),
                       ("region", _S), ("country", _S), ("channel", _S)])
_FEATURE_TYPES: dict[str, pa.DataType] = {
    **dict.fromkeys(("n_orders", "n_orders_all", "frequency", "orders_last_90d", "r_score", "f_score", "m_score",
                     "n_categories", "n_events", "n_views", "n_searches", "n_cart_adds", "n_favorites",
                     "n_sessions", "events_last_30d"), _I),
    **dict.fromkeys(("customer_id", "rfm_score", "rfm_segment", "rfm_segment_zh", "top_category"), _S),
    **dict.fromkeys(("first_order_at", "last_order_at"), _T),
    **dict.fromkeys(("peak_hour", "peak_weekday"), pa.int32()),
}
FEATURES = pa.schema([(c, _FEATURE_TYPES.get(c, _D)) for c in FEATURE_COLUMNS])
CATEGORY_SHARES = pa.schema([("customer_id", _S), ("category", _S), ("spend", _D), ("share", _D), ("rank", _I)])


def rules_settings(cfg: Config) -> str:
    """The RFM rules as their content (a rules file edited in place is a new setting)."""
    src = cfg.features.rfm_rules
    return src if src == "default" else cfg.resolve(src).read_text("utf-8")


class CustomersStage(BaseStage):
    """The customer dimension as of the build (demographics; no PII: ingest keeps none)."""

    name = "customers"
    needs = ("customers",)
    makes = (TableSpec("customers", CUSTOMERS),)

    def run(self, ctx: BuildContext) -> StageReport:
        ctx.write(self.makes[0], ctx.engine.table("customers").select(*CUSTOMERS.names))
        return StageReport()


class FeaturesStage(BaseStage):
    """Behaviour, RFM, category shares, rhythm and engagement at the build's cut-off."""

    name = "features"
    needs = ("customers", "orders", "order_items", "products", "events")
    makes = (TableSpec("customer_features", FEATURES, index=True),
             TableSpec("customer_category_shares", CATEGORY_SHARES, ("customer_id", "category")))

    def settings(self, cfg: Config, snapshot: Snapshot) -> dict[str, Any]:
        return {"as_of": snapshot.as_of, "rfm_rules": rules_settings(cfg)}

    def run(self, ctx: BuildContext) -> StageReport:
        tables = Tables(*(ctx.engine.table(n) for n in self.needs))
        features, categories = behaviour_features(tables, ctx.snapshot.cutoff, ctx.rules)
        ctx.write(self.makes[0], features)
        ctx.write(self.makes[1], categories)
        return StageReport()
