"""The champion on the device: a ModelBundle's RUL ensemble, verified and evaluated in numpy.

``EdgeModel.load`` reads the files a bundle saved (``pitstop.registry.files``) from a folder,
checking them as ``ModelBundle.load`` does: no pickled file, the manifest's sha256 equal to the
digest the registry recorded when the version was registered, and every file it uses equal to
the manifest's sha256. ``predict`` gives the numbers ``ModelBundle.predict`` gives: the members'
mean, clipped at 0, with the interval's offsets.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pitstop.agent.trees import TreeEnsemble, parse_model
from pitstop.errors import ArtifactIntegrityError, ModelError
from pitstop.features.spec import FeatureSpec
from pitstop.maintenance.policy import RiskPolicy
from pitstop.registry.files import (
    MANIFEST_FILE,
    META_FILE,
    REFUSED_SUFFIXES,
    SPEC_FILE,
    member_files,
    sha256_file,
)
from pitstop.registry.interval import apply_interval


def needed_files(manifest: dict[str, str]) -> list[str]:
    """The files of a bundle the edge uses: the ensemble's members, the feature spec and the
    metadata (the drift profile and the component classifier stay on the server)."""
    return [*member_files(manifest), SPEC_FILE, META_FILE]


def refuse_pickles(names: list[str]) -> None:
    refused = [n for n in names if Path(n).suffix.lower() in REFUSED_SUFFIXES]
    if refused:
        raise ArtifactIntegrityError(f"refusing pickled model artifacts: {refused}")


def read_manifest(data: bytes, expected: str) -> dict[str, str]:
    """A manifest's content, once its sha256 is the one the registry recorded."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected:
        raise ArtifactIntegrityError(
            f"the model's manifest has sha256 {digest[:12]}…, the registry recorded {expected[:12]}…: "
            "the artifacts were altered; refusing to load them"
        )
    try:
        manifest = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactIntegrityError(f"the model's manifest is not JSON: {exc}") from exc
    if not isinstance(manifest, dict) or not all(isinstance(v, str) for v in manifest.values()):
        raise ArtifactIntegrityError("the model's manifest is not a map of file names to sha256")
    refuse_pickles(list(manifest))
    return manifest


@dataclass(frozen=True)
class EdgeModel:
    """A verified RUL ensemble for one machine type; ``policy`` is the type's risk policy (the
    server's, when fetched from it)."""

    version: str
    manifest_sha256: str
    spec: FeatureSpec
    interval: dict[str, Any]
    ensemble: TreeEnsemble = field(repr=False)
    policy: RiskPolicy = field(default_factory=RiskPolicy)
    machine_type: str = ""
    episode_start_us: int | None = None  # the machine's last reset event, as the server knows it

    @classmethod
    def load(
        cls,
        folder: Path,
        expected_manifest: str,
        version: str = "",
        policy: RiskPolicy | None = None,
        machine_type: str = "",
        episode_start_us: int | None = None,
    ) -> EdgeModel:
        """Load from a folder of bundle files, verified (see the module doc); ``expected_manifest``
        is the manifest sha256 the registry recorded."""
        refuse_pickles([p.name for p in folder.rglob("*")])
        try:
            manifest = read_manifest((folder / MANIFEST_FILE).read_bytes(), expected_manifest)
        except FileNotFoundError as exc:
            raise ArtifactIntegrityError(f"model folder {folder} has no manifest") from exc
        for name in needed_files(manifest):
            path = folder / name
            if not path.is_file():
                raise ArtifactIntegrityError(f"model artifact {name} is missing from {folder}")
            digest = sha256_file(path)
            if digest != manifest.get(name):
                raise ArtifactIntegrityError(
                    f"model artifact {name} has sha256 {digest[:12]}…, the manifest says "
                    f"{str(manifest.get(name))[:12]}…: the artifact was altered; refusing to load it"
                )
        meta = json.loads((folder / META_FILE).read_text())
        members = member_files(manifest)
        if int(meta.get("members", 1)) != len(members):
            raise ArtifactIntegrityError(
                f"the manifest lists {len(members)} model files, the metadata {meta.get('members')}"
            )
        spec = FeatureSpec.from_dict(json.loads((folder / SPEC_FILE).read_text()))
        models = [parse_model((folder / name).read_text()) for name in members]
        if any(m.feature_names != spec.names for m in models):
            raise ArtifactIntegrityError("the model's features do not match its feature spec")
        return cls(
            version=version,
            manifest_sha256=expected_manifest,
            spec=spec,
            interval=meta["interval"],
            ensemble=TreeEnsemble(models),
            policy=policy if policy is not None else RiskPolicy(),
            machine_type=machine_type,
            episode_start_us=episode_start_us,
        )

    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """RUL point estimate, lower and upper bound for each row of a feature matrix (rows of
        ``spec.names``, settled as ``OnlineFeatures.get`` gives them)."""
        x = np.atleast_2d(np.asarray(features, np.float64))
        if x.shape[1] != len(self.spec.names):
            raise ModelError(
                f"expected {len(self.spec.names)} features, got {x.shape[1]}", code="model_unsupported"
            )
        raw = np.array([self.ensemble.predict(row).sum() for row in x])
        rul = np.clip(raw / len(self.ensemble.models), 0.0, None)
        lower, upper = apply_interval(self.interval, rul)
        return rul, lower, upper
