from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from pitstop.errors import ArtifactIntegrityError
from pitstop.features.spec import FeatureSpec

MODEL_FILE = "model.txt"
SPEC_FILE = "feature_spec.json"
META_FILE = "model_meta.json"
REFERENCE_FILE = "reference_stats.json"
MANIFEST_FILE = "manifest.json"
_FILES = (MODEL_FILE, SPEC_FILE, META_FILE, REFERENCE_FILE)
_REFUSED_SUFFIXES = (".pkl", ".pickle", ".joblib", ".cloudpickle")


@dataclass
class ModelBundle:
    """A trained RUL model and everything needed to use it, in plain text formats only.

    ``interval`` holds the residual offsets (``lower``, ``upper``) added to the point prediction
    for the nominal ``coverage``.
    """

    booster: lgb.Booster
    spec: FeatureSpec
    interval: dict[str, float]
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, dict[str, float]] = field(default_factory=dict)
    rul_cap: float | None = None

    @property
    def feature_names(self) -> list[str]:
        return self.spec.names

    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """RUL point estimate, lower and upper bound for each row of a feature matrix."""
        rul = np.clip(self.booster.predict(features, num_threads=1), 0.0, None)
        lower = np.clip(rul + self.interval["lower"], 0.0, None)
        upper = rul + self.interval["upper"]
        return rul, lower, upper

    def save(self, folder: Path) -> dict[str, str]:
        """Write the bundle's files and a manifest of their sha256; returns the manifest."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MODEL_FILE).write_text(self.booster.model_to_string())
        (folder / SPEC_FILE).write_text(json.dumps(self.spec.to_dict(), indent=2, sort_keys=True))
        meta = {
            "interval": self.interval,
            "metrics": self.metrics,
            "params": self.params,
            "feature_names": self.feature_names,
            "rul_cap": self.rul_cap,
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        (folder / REFERENCE_FILE).write_text(json.dumps(self.reference, indent=2, sort_keys=True))
        manifest = {name: _sha256(folder / name) for name in _FILES}
        (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        return manifest

    @classmethod
    def load(cls, folder: Path) -> ModelBundle:
        """Load a bundle, refusing pickled files and any file whose sha256 is not the manifest's."""
        refused = [p.name for p in folder.rglob("*") if p.suffix.lower() in _REFUSED_SUFFIXES]
        if refused:
            raise ArtifactIntegrityError(f"refusing to load pickled artifacts: {refused}")
        try:
            manifest = json.loads((folder / MANIFEST_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError) as exc:
            raise ArtifactIntegrityError(f"model folder {folder} has no valid manifest: {exc}") from exc
        for name in _FILES:
            path = folder / name
            if not path.exists():
                raise ArtifactIntegrityError(f"model artifact {name} is missing from {folder}")
            digest = _sha256(path)
            if digest != manifest.get(name):
                raise ArtifactIntegrityError(
                    f"model artifact {name} has sha256 {digest[:12]}…, the manifest says "
                    f"{str(manifest.get(name))[:12]}…: the artifact was altered; refusing to load it"
                )
        meta = json.loads((folder / META_FILE).read_text())
        spec = FeatureSpec.from_dict(json.loads((folder / SPEC_FILE).read_text()))
        booster = lgb.Booster(model_str=(folder / MODEL_FILE).read_text())
        if booster.feature_name() != spec.names:
            raise ArtifactIntegrityError("the model's features do not match its feature spec")
        return cls(
            booster=booster,
            spec=spec,
            interval=meta["interval"],
            metrics=meta.get("metrics", {}),
            params=meta.get("params", {}),
            reference=json.loads((folder / REFERENCE_FILE).read_text()),
            rul_cap=meta.get("rul_cap"),
        )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
