"""Model registry on MLflow: versions, aliases, lineage, and safe artifact loading."""

from pitstop.registry.bundle import ModelBundle
from pitstop.registry.mlflow_registry import LoadedModel, Registry

__all__ = ["LoadedModel", "ModelBundle", "Registry"]
