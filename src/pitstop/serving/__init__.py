"""Scoring with the deployed model: streaming (processor) and the REST prediction API."""

from pitstop.serving.scorer import Score, Scorer

__all__ = ["Score", "Scorer"]
