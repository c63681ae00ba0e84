"""Personalised recommendations: ``HybridRecommender`` (scikit-learn conventions), its
candidate sources, reasons as data, the build stage and the evaluation."""

from shoplens.recommend.hybrid import HybridRecommender

__all__ = ["HybridRecommender"]
