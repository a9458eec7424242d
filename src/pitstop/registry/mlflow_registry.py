from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pitstop.errors import ModelError
from pitstop.registry.bundle import ModelBundle

log = logging.getLogger(__name__)

EXPERIMENT = "pitstop-rul"
ARTIFACT_PATH = "model"


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    bundle: ModelBundle


class Registry:
    """MLflow tracking + model registry with a SQLite store and local artifacts (or a server).

    No global MLflow state is touched: every call goes through this instance's client.
    """

    def __init__(self, tracking_uri: str, artifacts_dir: Path, model_name: str) -> None:
        from mlflow.tracking import MlflowClient  # heavy import, kept off the import path

        self.tracking_uri = tracking_uri
        self.artifacts_dir = Path(artifacts_dir)
        self.model_name = model_name
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def _experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(EXPERIMENT)
        if exp is not None:
            return str(exp.experiment_id)
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        return str(self.client.create_experiment(EXPERIMENT, artifact_location=self.artifacts_dir.as_uri()))

    def log_and_register(
        self, bundle: ModelBundle, *, lineage: dict[str, str], run_name: str = "train"
    ) -> str:
        """Log a training run (params, metrics, lineage tags, artifacts) and register a version."""
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.create_run(self._experiment_id(), run_name=run_name)
            run_id = run.info.run_id
            params = [Param(k, str(v)[:6000]) for k, v in sorted(bundle.params.items())]
            metrics = [Metric(k, float(v), 0, 0) for k, v in sorted(bundle.metrics.items())]
            tags = [RunTag(f"pitstop.{k}", str(v)) for k, v in sorted(lineage.items())]
            self.client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
            with tempfile.TemporaryDirectory() as tmp:
                manifest = bundle.save(Path(tmp))
                self.client.log_artifacts(run_id, tmp, ARTIFACT_PATH)
            self.client.set_terminated(run_id)
            if not self.client.search_registered_models(f"name='{self.model_name}'"):
                self.client.create_registered_model(self.model_name)
            version = self.client.create_model_version(
                self.model_name,
                source=f"{run.info.artifact_uri}/{ARTIFACT_PATH}",
                run_id=run_id,
                tags={
                    **{f"pitstop.{k}": str(v) for k, v in lineage.items()},
                    "pitstop.model_sha256": manifest["model.txt"],
                },
                description=_model_card(bundle, lineage),
            )
        except MlflowException as exc:
            raise ModelError(f"could not log the model to MLflow at {self.tracking_uri}: {exc}") from exc
        return str(version.version)

    def set_alias(self, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(self.model_name, alias, version)

    def alias_version(self, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(self.model_name, alias).version)
        except MlflowException:
            return None

    def load(self, alias: str = "champion") -> LoadedModel:
        """Download and verify the version an alias points to."""
        import mlflow.artifacts
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version_by_alias(self.model_name, alias)
        except MlflowException as exc:
            raise ModelError(
                f"no {alias!r} version of model {self.model_name!r}: train one with `pitstop train`"
            ) from exc
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=mv.source, dst_path=tmp, tracking_uri=self.tracking_uri
                )
            except MlflowException as exc:
                raise ModelError(f"cannot fetch artifacts of version {mv.version}: {exc}") from exc
            bundle = ModelBundle.load(Path(local))
        log.debug("loaded %s version %s (%s)", self.model_name, mv.version, alias)
        return LoadedModel(self.model_name, str(mv.version), bundle)

    def versions(self) -> list[dict[str, Any]]:
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.search_model_versions(f"name='{self.model_name}'")
            model = self.client.get_registered_model(self.model_name)
        except MlflowException:
            return []
        aliases: dict[str, list[str]] = {}
        for alias, version in (model.aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        return [
            {
                "name": mv.name,
                "version": str(mv.version),
                "aliases": sorted(aliases.get(str(mv.version), [])),
                "created_at": mv.creation_timestamp,
                "run_id": mv.run_id,
                "tags": dict(mv.tags or {}),
            }
            for mv in sorted(found, key=lambda m: int(m.version), reverse=True)
        ]


def _model_card(bundle: ModelBundle, lineage: dict[str, str]) -> str:
    lines = [
        "Pitstop RUL model (LightGBM regressor on rolling features).",
        f"Data: lake telemetry version {lineage.get('lake_version')}, feature spec {bundle.spec.hash}.",
        "Metrics (grouped cross-validation by machine): "
        + ", ".join(f"{k}={v:.3f}" for k, v in sorted(bundle.metrics.items())),
        f"Interval: nominal {bundle.interval.get('coverage', 0):.0%}, residual offsets "
        f"[{bundle.interval['lower']:+.1f}, {bundle.interval['upper']:+.1f}].",
        "Limits: trained on machines run to failure only (censored machines left out); "
        f"RUL target capped at {bundle.rul_cap}.",
    ]
    return "\n".join(lines)
