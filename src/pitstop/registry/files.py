"""A model bundle's files on disk, in the standard library only (the edge agent checks them too):
their names, the manifest of their sha256, and the suffixes refused as pickles."""

from __future__ import annotations

import hashlib
from pathlib import Path

MODEL_FILE = "model.txt"
MEMBER_FILE = "model_fold{}.txt"
SPEC_FILE = "feature_spec.json"
META_FILE = "model_meta.json"
REFERENCE_FILE = "reference_stats.json"
MANIFEST_FILE = "manifest.json"
COMPONENT_FILE = "component_model.txt"
REFUSED_SUFFIXES = (".pkl", ".pickle", ".joblib", ".cloudpickle")


def file_names(members: int, component: bool = False) -> list[str]:
    """A bundle's files: the first model, the other members, then the JSON files (and the
    component classifier when there is one)."""
    return [
        MODEL_FILE,
        *(MEMBER_FILE.format(k) for k in range(1, members)),
        SPEC_FILE,
        META_FILE,
        REFERENCE_FILE,
        *([COMPONENT_FILE] if component else []),
    ]


def member_files(manifest: dict[str, str]) -> list[str]:
    """The model files of an ensemble a manifest lists, first member first."""
    k = 1
    while MEMBER_FILE.format(k) in manifest:
        k += 1
    return [MODEL_FILE, *(MEMBER_FILE.format(i) for i in range(1, k))]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
