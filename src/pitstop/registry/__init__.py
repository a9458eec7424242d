"""Model registry on MLflow: versions, aliases, lineage, and safe artifact loading.

Names are imported on first use: ``pitstop.registry.interval`` (numpy only, shared with the edge
agent) must not pull LightGBM or MLflow in through this package.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pitstop.registry.bundle import ModelBundle
    from pitstop.registry.mlflow_registry import LoadedModel, Registry

_WHERE = {"ModelBundle": "bundle", "LoadedModel": "mlflow_registry", "Registry": "mlflow_registry"}

__all__ = ["LoadedModel", "ModelBundle", "Registry"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'pitstop.registry' has no attribute {name!r}")
    value = getattr(import_module(f"pitstop.registry.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
