"""The build's stages, in one list: a new stage (recommendations, insight, risk) is one
``register`` call; the runner orders stages by what they read, not by this list."""

from __future__ import annotations

from shoplens.pipeline.stage import Stage

_EXTRA: list[Stage] = []


def register(stage: Stage) -> None:
    """Add a stage to every build (a stage of the same name is replaced)."""
    _EXTRA[:] = [s for s in _EXTRA if s.name != stage.name] + [stage]


def default_stages() -> list[Stage]:
    from shoplens.consent import ConsentStage
    from shoplens.features.stage import CustomersStage, FeaturesStage
    from shoplens.insight.stage import DemandStage, InsightStage
    from shoplens.models.stages import PredictionsStage, SegmentsStage
    from shoplens.recommend.stage import RecommendStage
    from shoplens.risk.stage import RiskStage
    from shoplens.text.stage import TextStage

    core: list[Stage] = [ConsentStage(), CustomersStage(), FeaturesStage(), TextStage(), PredictionsStage(),
                         SegmentsStage(), RecommendStage(), RiskStage(), InsightStage(),
                         DemandStage()]
    names = {s.name for s in _EXTRA}
    return [s for s in core if s.name not in names] + list(_EXTRA)
