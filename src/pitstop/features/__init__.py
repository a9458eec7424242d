"""Features defined once: a spec, an offline builder (Polars) and online per-machine state."""

from pitstop.features.offline import build_features
from pitstop.features.online import OnlineFeatures
from pitstop.features.spec import FeatureSpec

__all__ = ["FeatureSpec", "OnlineFeatures", "build_features"]
