"""Build stages for the models: predictions (CLV, P(alive), propensity, churn with
reasons) and segments with personas."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa

from shoplens import __version__
from shoplens.config import Config
from shoplens.engine.base import Snapshot
from shoplens.features.stage import rules_settings
from shoplens.models.artifacts import ARTIFACTS, artifacts_table, fingerprint
from shoplens.pipeline.stage import BaseStage, BuildContext, StageReport, TableSpec
from shoplens.store import segments_dir

_S, _D = pa.string(), pa.float64()
PREDICTIONS = pa.schema([("customer_id", _S), ("p_alive", _D), ("expected_purchases", _D), ("expected_spend", _D),
                         ("clv", _D), ("purchase_propensity", _D), ("churn_risk", _D), ("churn_reasons", _S),
                         ("churn_reasons_zh", _S)])
SEGMENTS = pa.schema([("segment_id", pa.int32()), ("name", _S), ("persona", _S), ("actions", _S), ("source", _S),
                      ("problems", _S), ("size", pa.int64()), ("share", _D), ("zscores", _S), ("categories", _S),
                      ("metrics", _S), ("praise", _S), ("complaints", _S)])
CUSTOMER_SEGMENTS = pa.schema([("customer_id", _S), ("segment_id", pa.int32())])
# the propensity backtests recompute behaviour features at earlier cut-offs
_CANONICAL = ("customers", "orders", "order_items", "products", "events")


class PredictionsStage(BaseStage):
    """BG/NBD + Gamma-Gamma CLV and LightGBM propensity; a model the data cannot support
    is skipped with its reason (NULLs, never a failed build)."""

    name = "predictions"
    version = 2  # 2: fitted on grouped histories and samples, scored in batches on the engine
    needs = ("customer_features", "text_analysis", "texts", *_CANONICAL)  # backtests count reviews and ratings
    makes = (TableSpec("customer_predictions", PREDICTIONS), TableSpec("model_artifacts", ARTIFACTS, ("name",)))

    def skip_reason(self, cfg: Config) -> str | None:
        return None if cfg.predictions.enabled else "disabled in [predictions]"

    def settings(self, cfg: Config, snapshot: Snapshot) -> dict[str, Any]:
        return cfg.predictions.model_dump(exclude={"enabled"}) | {"as_of": snapshot.as_of,
                                                                  "rfm_rules": rules_settings(cfg)}

    def run(self, ctx: BuildContext) -> StageReport:
        from shoplens.models.predict import predict, scoring_rows

        engine, snap = ctx.engine, ctx.snapshot
        result = predict(engine, snap, ctx.cfg.predictions, ctx.rules)
        engine.map_batches(snap, self.makes[0].name, scoring_rows(engine, snap), result.scorer, PREDICTIONS,
                           batch_rows=20_000)
        last_ingest = engine.store.scalar("SELECT last_ingest_id FROM snapshots WHERE snapshot_id = ?", [snap.snapshot_id])
        meta = fingerprint(ctx.cfg.fingerprint(), last_ingest, __version__)
        ctx.write(self.makes[1], artifacts_table(result.models, result.skipped, meta))
        return StageReport(skipped=result.skipped)


class SegmentsStage(BaseStage):
    """Clusters over behaviour, value and text signals, each described by a persona."""

    name = "segments"
    version = 2  # 2: fitted on a sample, customers assigned in batches on the engine
    needs = ("customers", "customer_features", "customer_predictions", "customer_text_features", "texts")
    makes = (TableSpec("segments", SEGMENTS, ("segment_id",)), TableSpec("customer_segments", CUSTOMER_SEGMENTS))

    def skip_reason(self, cfg: Config) -> str | None:
        return None if cfg.segments.enabled else "disabled in [segments]"

    def settings(self, cfg: Config, snapshot: Snapshot) -> dict[str, Any]:
        from shoplens.models.personas import _words

        # the phrase table names the segments and writes the template personas
        return cfg.segments.model_dump(exclude={"enabled"}) | {
            "as_of_year": snapshot.as_of.year, "llm": cfg.llm.model_dump(exclude={"cache", "timeout_s", "max_retries"}),
            "words": _words()}

    def run(self, ctx: BuildContext) -> StageReport:
        from shoplens.models.segment_step import segment_snapshot

        return StageReport(skipped=segment_snapshot(ctx, *self.makes))

    def on_reuse(self, ctx: BuildContext, source: Snapshot) -> None:
        """The segment map files go with the reused tables."""
        folder = segments_dir(Path(ctx.engine.store.path))
        for path in folder.glob(f"{source.schema}-map.*"):
            shutil.copyfile(path, folder / path.name.replace(source.schema, ctx.snapshot.schema, 1))


