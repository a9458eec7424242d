from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import logging
import os
import sqlite3
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

from sqlalchemy.exc import SQLAlchemyError

from pitstop.errors import ArtifactIntegrityError, ModelError, PitstopError, first_line
from pitstop.registry.bundle import ModelBundle, manifest_digest, verify_files
from pitstop.registry.card import DatasetRef, model_card

log = logging.getLogger(__name__)
T = TypeVar("T")

EXPERIMENT = "pitstop-rul"
ARTIFACT_PATH = "model"
MANIFEST_TAG = "pitstop.manifest_sha256"
SIGNATURE_TAG = "pitstop.signature"  # HMAC-SHA256 of "<model name>\n<manifest sha256>"


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    bundle: ModelBundle


class _StoreFailure(Exception):
    """An MLflow error that is not "no such model, version or alias": the store itself failed."""


def _missing(exc: Exception) -> bool:
    """Whether an MlflowException only says that something does not exist; else the store failed
    (raised as ``_StoreFailure``, which the registry's boundary turns into one clear error)."""
    if getattr(exc, "error_code", None) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
        return True
    raise _StoreFailure(str(exc)) from exc


def _store_errors(method: Callable[..., T]) -> Callable[..., T]:
    """A registry call whose store is broken (``mlflow.db`` corrupted or unreadable, a full or
    read-only disk, a server down) raises one ``ModelError`` that says so, not a library traceback."""

    @functools.wraps(method)
    def call(self: Registry, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except PitstopError:
            raise
        except Exception as exc:
            artifacts = type(exc).__module__.startswith(("botocore.", "boto3.", "s3transfer."))
            if not (artifacts or isinstance(exc, SQLAlchemyError | sqlite3.Error | OSError | _StoreFailure)):
                raise
            if artifacts:
                where = self.artifacts_uri
                hint = "Check the bucket, s3_endpoint_url and the AWS_* keys"
            elif self.tracking_uri.startswith("sqlite"):
                where = self.tracking_uri
                hint = "If mlflow.db is damaged, restore the data dir from a backup (`pitstop restore`)"
            else:
                where = _redacted(self.tracking_uri)
                hint = "Check that the database server is up and reachable"
            raise ModelError(
                f"the model registry at {where} cannot be used: {first_line(exc)}. {hint}",
                code="registry_unavailable",
            ) from exc

    return call


class Registry:
    """MLflow tracking + model registry: a SQLite or PostgreSQL store (or a server), artifacts in a
    local folder or under ``s3://bucket/prefix``.

    No MLflow state is touched at import or construction: every call goes through this instance's
    client, which is made on first use, so a platform opens (and serves a cached model) while the
    registry is down. With artifacts on S3-compatible storage other than AWS, ``s3_endpoint_url``
    becomes ``MLFLOW_S3_ENDPOINT_URL`` (unless that is set) when the client is made: MLflow's S3
    client reads it from the environment. Keys and region come from the AWS_* variables.
    """

    def __init__(
        self,
        tracking_uri: str,
        artifacts: str | Path,
        model_name: str,
        signing_key: str | None = None,
        s3_endpoint_url: str = "",
    ) -> None:
        self.tracking_uri = tracking_uri
        text = str(artifacts)
        self.artifacts_uri = text if "://" in text else Path(text).absolute().as_uri()
        self.model_name = model_name
        self.signing_key = signing_key  # with a key, versions are signed and unsigned ones refused
        self.s3_endpoint_url = s3_endpoint_url
        self._client: Any = None
        self._client_lock = threading.Lock()

    @property
    def artifacts_dir(self) -> Path:
        """The local artifacts folder (artifacts on object storage have none)."""
        if not self.artifacts_uri.startswith("file://"):
            raise ModelError(f"the model artifacts are at {self.artifacts_uri}, not in a local folder")
        return Path(unquote(urlparse(self.artifacts_uri).path))

    def artifact_location(self, *parts: str) -> str:
        """A URI under the artifacts root for a new experiment (a local folder is made)."""
        if self.artifacts_uri.startswith("file://"):
            folder = self.artifacts_dir.joinpath(*parts)
            folder.mkdir(parents=True, exist_ok=True)
            return folder.as_uri()
        return "/".join([self.artifacts_uri.rstrip("/"), *parts])

    @property
    def client(self) -> Any:
        """The ``MlflowClient`` (made on first use: it connects to the store)."""
        with self._client_lock:
            if self._client is None:
                from mlflow.tracking import MlflowClient  # heavy import, kept off the import path

                if self.s3_endpoint_url and self.artifacts_uri.startswith("s3://"):
                    os.environ.setdefault("MLFLOW_S3_ENDPOINT_URL", self.s3_endpoint_url)
                self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
            return self._client

    def _experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(EXPERIMENT)
        if exp is not None:
            return str(exp.experiment_id)
        return str(self.client.create_experiment(EXPERIMENT, artifact_location=self.artifact_location()))

    @_store_errors
    def log_and_register(
        self,
        bundle: ModelBundle,
        *,
        lineage: dict[str, str],
        datasets: list[DatasetRef] | None = None,
        texts: dict[str, str] | None = None,
        run_name: str = "train",
        version_tags: dict[str, str] | None = None,
    ) -> str:
        """Log a training run (params, metrics, lineage tags, the lake table versions it read as
        dataset inputs, artifacts, the model card and ``texts``) and register a version."""
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.create_run(self._experiment_id(), run_name=run_name)
            run_id = run.info.run_id
            params = [Param(k, str(v)[:6000]) for k, v in sorted(bundle.params.items())]
            metrics = [Metric(k, float(v), 0, 0) for k, v in sorted(bundle.metrics.items())]
            tags = [RunTag(f"pitstop.{k}", str(v)) for k, v in sorted(lineage.items())]
            self.client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
            if datasets:
                self.client.log_inputs(run_id, datasets=[d.to_mlflow() for d in datasets])
            card = model_card(bundle, lineage)
            with tempfile.TemporaryDirectory() as tmp:
                manifest = bundle.save(Path(tmp))
                digest = manifest_digest(Path(tmp))
                self.client.log_artifacts(run_id, tmp, ARTIFACT_PATH)
                (Path(tmp) / "model_card.md").write_text(card)
                self.client.log_artifact(run_id, str(Path(tmp) / "model_card.md"))
            for name, text in (texts or {}).items():  # e.g. the tuning trials
                self.client.log_text(run_id, text, name)
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
                    # the trust anchor outside the artifact folder: checked on every load
                    MANIFEST_TAG: digest,
                    **({SIGNATURE_TAG: self._signature(digest)} if self.signing_key is not None else {}),
                    **(version_tags or {}),
                },
                description=card,
            )
        except MlflowException as exc:
            raise ModelError(
                f"could not log the model to MLflow at {_redacted(self.tracking_uri)}: {exc}"
            ) from exc
        return str(version.version)

    @_store_errors
    def set_alias(self, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(self.model_name, alias, version)

    @_store_errors
    def delete_alias(self, alias: str) -> None:
        self.client.delete_registered_model_alias(self.model_name, alias)

    @_store_errors
    def model_tag(self, key: str) -> str | None:
        """A tag of the registered model (not of a version), or None."""
        from mlflow.exceptions import MlflowException

        try:
            tags = self.client.get_registered_model(self.model_name).tags or {}
        except MlflowException as exc:
            _missing(exc)
            return None
        value = tags.get(key)
        return str(value) if value is not None else None

    @_store_errors
    def set_model_tag(self, key: str, value: str) -> None:
        self.client.set_registered_model_tag(self.model_name, key, value)

    @_store_errors
    def delete_model_tag(self, key: str) -> None:
        from mlflow.exceptions import MlflowException

        with contextlib.suppress(MlflowException):  # already gone
            self.client.delete_registered_model_tag(self.model_name, key)

    @_store_errors
    def version_tag(self, version: str, key: str) -> str | None:
        """A tag of one version, or None (also when the version does not exist)."""
        from mlflow.exceptions import MlflowException

        try:
            value = (self.client.get_model_version(self.model_name, version).tags or {}).get(key)
        except MlflowException as exc:
            _missing(exc)
            return None
        return str(value) if value is not None else None

    @_store_errors
    def set_version_tag(self, version: str, key: str, value: str) -> None:
        self.client.set_model_version_tag(self.model_name, version, key, value)

    @_store_errors
    def alias_version(self, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(self.model_name, alias).version)
        except MlflowException as exc:
            _missing(exc)
            return None

    @_store_errors
    def load(self, alias: str = "champion") -> LoadedModel:
        """Download and verify the version an alias points to."""
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version_by_alias(self.model_name, alias)
        except MlflowException as exc:
            raise ModelError(
                f"no {alias!r} version of model {self.model_name!r}: train one with `pitstop train`"
            ) from exc
        return self._load(mv, alias)

    @_store_errors
    def load_version(self, version: str) -> LoadedModel:
        """Download and verify one version."""
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version(self.model_name, version)
        except MlflowException as exc:
            raise ModelError(
                f"model {self.model_name!r} has no version {version}", code="model_not_found"
            ) from exc
        return self._load(mv, f"version {version}")

    def _load(self, mv: Any, label: str) -> LoadedModel:
        import mlflow.artifacts
        from mlflow.exceptions import MlflowException

        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=mv.source, dst_path=tmp, tracking_uri=self.tracking_uri
                )
            except MlflowException as exc:
                raise ModelError(f"cannot fetch artifacts of version {mv.version}: {exc}") from exc
            bundle = ModelBundle.load(Path(local), expected_manifest=self._anchor(mv, Path(local)))
        log.debug("loaded %s version %s (%s)", self.model_name, mv.version, label)
        return LoadedModel(self.model_name, str(mv.version), bundle)

    @_store_errors
    def download_version(self, version: str, folder: Path) -> str:
        """A version's registered files into ``folder`` (made), verified against the manifest
        sha256 the registry recorded (and signed, with a key) without loading them; returns that
        sha256. For serving the files on (the edge agent checks them again)."""
        import mlflow.artifacts
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version(self.model_name, version)
        except MlflowException as exc:
            raise ModelError(
                f"model {self.model_name!r} has no version {version}", code="model_not_found"
            ) from exc
        folder.mkdir(parents=True, exist_ok=True)
        try:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=mv.source, dst_path=str(folder), tracking_uri=self.tracking_uri
                )
            )
        except MlflowException as exc:
            raise ModelError(f"cannot fetch artifacts of version {mv.version}: {exc}") from exc
        digest = self._anchor(mv, local)
        if digest is None:
            raise ArtifactIntegrityError(
                f"version {mv.version} of {self.model_name} was registered before manifests were "
                "recorded: retrain it to serve it to agents"
            )
        verify_files(local, digest)
        if local != folder:  # the artifact path's own folder: its files up into ``folder``
            for path in local.iterdir():
                path.replace(folder / path.name)
        return digest

    def _signature(self, digest: str) -> str:
        key = (self.signing_key or "").encode()
        return hmac.new(key, f"{self.model_name}\n{digest}".encode(), hashlib.sha256).hexdigest()

    def _anchor(self, mv: Any, folder: Path) -> str | None:
        """The manifest sha256 recorded at registration (and signed, with a key), which the
        downloaded artifacts must match. Versions registered before the manifest was recorded
        are held to their ``model.txt`` hash."""
        tags = dict(mv.tags or {})
        digest = tags.get(MANIFEST_TAG)
        if self.signing_key is not None:
            signature = tags.get(SIGNATURE_TAG)
            if digest is None or signature is None:
                raise ArtifactIntegrityError(
                    f"version {mv.version} of {self.model_name} is not signed and a signing key is "
                    "set: refusing it (register it again with the key)",
                    code="model_unsigned",
                )
            if not hmac.compare_digest(str(signature), self._signature(str(digest))):
                raise ArtifactIntegrityError(
                    f"version {mv.version} of {self.model_name} has a signature the deployment key "
                    "did not make: refusing it",
                    code="model_signature_invalid",
                )
        if digest is not None:
            return str(digest)
        legacy = tags.get("pitstop.model_sha256")
        if legacy is None:
            raise ArtifactIntegrityError(
                f"version {mv.version} of {self.model_name} has no registered sha256: refusing it"
            )
        found = hashlib.sha256((folder / "model.txt").read_bytes()).hexdigest()
        if found != legacy:
            raise ArtifactIntegrityError(
                f"model.txt of version {mv.version} has sha256 {found[:12]}…, the registry recorded "
                f"{str(legacy)[:12]}…: the artifact was altered; refusing to load it"
            )
        return None

    @_store_errors
    def versions(self) -> list[dict[str, Any]]:
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.search_model_versions(f"name='{self.model_name}'")
            model = self.client.get_registered_model(self.model_name)
        except MlflowException as exc:
            _missing(exc)
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


def _redacted(uri: str) -> str:
    """A store URL without its password (``postgresql+psycopg://user:***@host/db``)."""
    parsed = urlparse(uri)
    if parsed.password is None:
        return uri
    return uri.replace(f":{parsed.password}@", ":***@", 1)
