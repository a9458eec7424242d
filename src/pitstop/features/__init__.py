"""Features defined once: a spec, an offline builder (Polars) and online per-machine state.

Names are imported on first use: the spec alone (for the fleet schema) needs neither Polars nor
numpy.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from pitstop.features.spec import FeatureSpec, Regimes

if TYPE_CHECKING:
    from pitstop.features.offline import build_features, fit_regimes
    from pitstop.features.online import OnlineFeatures

_WHERE = {"build_features": "offline", "fit_regimes": "offline", "OnlineFeatures": "online"}

__all__ = ["FeatureSpec", "OnlineFeatures", "Regimes", "build_features", "fit_regimes"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'pitstop.features' has no attribute {name!r}")
    value = getattr(import_module(f"pitstop.features.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
