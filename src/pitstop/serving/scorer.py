from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pitstop.errors import ArtifactIntegrityError, ModelError, ValidationError
from pitstop.registry import LoadedModel, ModelBundle, Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Score:
    rul: float
    lower: float
    upper: float
    model_name: str
    model_version: str
    arm: str
    from_cache: bool = False

    def to_dict(self) -> dict[str, Any]:
        model = {"name": self.model_name, "version": self.model_version, "arm": self.arm}
        return {
            "rul": round(self.rul, 3),
            "rul_lower": round(self.lower, 3),
            "rul_upper": round(self.upper, 3),
            "model": model | ({"from_cache": True} if self.from_cache else {}),
        }


@dataclass(frozen=True)
class _Found:
    """What ``Scorer.poll`` found, waiting for ``adopt``."""

    model: LoadedModel | None = None
    confirmed: bool = False
    unreachable: bool = False
    problem: str | None = None


class Scorer:
    """Holds the serving model (the registry's ``champion``) and scores feature matrices.

    The model is swapped atomically by ``reload``; callers never see a half-loaded model. Every
    version loaded from the registry is also kept, verified, under ``cache_dir``: when the
    registry cannot be reached, ``reload`` serves the alias's last known version from there, and
    its scores say ``from_cache`` until the registry confirms the alias again.
    """

    def __init__(self, registry: Registry, alias: str = "champion", cache_dir: Path | None = None) -> None:
        self.registry = registry
        self.alias = alias
        self.cache_dir = cache_dir
        self.from_cache = False
        self._model: LoadedModel | None = None
        self._refused: str | None = None  # a version poll could not load
        self._withdrawn: str | None = None  # a version the guard took out
        self._pending: _Found | None = None
        self._generation = 0  # bumped by reload, so a poll begun before it is dropped
        self._lock = threading.Lock()

    def reload(self) -> LoadedModel:
        try:
            model = self.registry.load(self.alias)
        except ArtifactIntegrityError:
            raise
        except Exception as exc:
            cached = self._cached()
            if cached is None:
                raise
            log.warning(
                "registry unavailable (%s): serving cached %s version %s", exc, self.alias, cached.version
            )
            with self._lock:
                self._model, self.from_cache = cached, True
                self._pending, self._generation = None, self._generation + 1
            return cached
        self._keep(model)
        with self._lock:
            self._model, self.from_cache = model, False
            self._pending, self._generation = None, self._generation + 1
        return model

    def _keep(self, model: LoadedModel) -> None:
        """Save a loaded version under the cache and point the alias at it (atomic renames)."""
        if self.cache_dir is None:
            return
        folder = self.cache_dir / f"{model.name}-{model.version}"
        if not (folder / "manifest.json").exists():
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=self.cache_dir))
            model.bundle.save(tmp)
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
        pointer = self.cache_dir / f"{self.alias}.json"
        tmp_pointer = pointer.with_suffix(".tmp")
        tmp_pointer.write_text(
            json.dumps({"name": model.name, "version": model.version, "folder": folder.name})
        )
        os.replace(tmp_pointer, pointer)

    def _cached(self) -> LoadedModel | None:
        """The alias's last version from the cache (its files verified), if there is one."""
        if self.cache_dir is None:
            return None
        pointer = self.cache_dir / f"{self.alias}.json"
        if not pointer.exists():
            return None
        meta = json.loads(pointer.read_text())
        bundle = ModelBundle.load(self.cache_dir / meta["folder"])  # refuses altered files
        return LoadedModel(meta["name"], meta["version"], bundle)

    def refresh(self) -> str | None:
        """Follow the alias if it moved: ``poll`` then ``adopt``. Returns the problem, if any."""
        self.poll()
        return self.adopt()

    def poll(self) -> None:
        """The slow half of following the alias, safe on a background thread: ask the registry
        where the alias points and, if it moved, load and verify that version. What it found
        waits for ``adopt``. A version that cannot be loaded (missing, altered) is refused once,
        and not tried again until the alias moves; so is a version the guard ``withdraw``-ed."""
        current, generation = self._model, self._generation
        try:
            version = self.registry.alias_version(self.alias)
        except Exception as exc:  # the registry is unreachable: keep serving what we have, tagged
            self._found(generation, _Found(problem=f"registry unreachable: {exc}", unreachable=True))
            return
        if version is None or version in (self._refused, self._withdrawn):
            return
        if current is not None and current.version == version:
            self._found(generation, _Found(confirmed=True))
            return
        try:
            model = self.registry.load_version(version)
        except ModelError as exc:
            self._refused = version
            self._found(generation, _Found(problem=f"version {version} refused: {exc.message}"))
            return
        self._keep(model)
        self._found(generation, _Found(model=LoadedModel(model.name, model.version, model.bundle)))

    def _found(self, generation: int, found: _Found) -> None:
        with self._lock:
            if generation == self._generation:  # else a reload came between: this is stale
                self._pending = found

    @property
    def has_pending(self) -> bool:
        """Whether a ``poll`` found something that ``adopt`` has not applied yet."""
        return self._pending is not None

    def adopt(self) -> str | None:
        """The fast half, between batches: apply what the last ``poll`` found (a new version, a
        confirmation, or the registry being unreachable). Returns the problem, if any."""
        with self._lock:
            found, self._pending = self._pending, None
            if found is None:
                return None
            if found.model is not None:
                self._model, self.from_cache = found.model, False
                self._refused = None
            elif found.confirmed:
                self.from_cache = False
            elif found.unreachable:
                self.from_cache = self._model is not None
        return found.problem

    def withdraw(self) -> str | None:
        """Stop serving the current version (the guard's call): unloaded, and not loaded again by
        ``poll`` until the alias points elsewhere. Returns the version withdrawn."""
        with self._lock:
            version = self._model.version if self._model is not None else None
            self._model, self._withdrawn = None, version
        return version

    @property
    def model(self) -> LoadedModel:
        model = self._model
        if model is None:
            raise ModelError(f"no model is loaded: set the {self.alias!r} alias with `pitstop train`")
        return model

    @property
    def feature_names(self) -> list[str]:
        return self.model.bundle.feature_names

    def score_matrix(self, features: np.ndarray, arm: str | None = None) -> list[Score]:
        model = self.model
        rul, lower, upper = model.bundle.predict(features)
        arm = arm or self.alias
        cached = self.from_cache
        return [
            Score(float(r), float(lo), float(hi), model.name, model.version, arm, cached)
            for r, lo, hi in zip(rul, lower, upper, strict=True)
        ]

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def matrix_from_rows(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """Build a feature matrix from ``{name: number}`` rows; a missing or non-finite value is a 422."""
        spec = self.model.bundle.spec  # once: the model may be swapped meanwhile
        names, expected = spec.names, spec.name_set
        if all(row.keys() == expected for row in rows):  # the usual case, checked in bulk
            values = [list(map(row.__getitem__, names)) for row in rows]
            if {type(v) for vs in values for v in vs} <= {float, int}:  # no bools, strings, nulls
                out = np.array(values, dtype=np.float64)
                if np.isfinite(out).all():
                    return out
        return self._matrix_or_problems(rows, names)

    def _matrix_or_problems(self, rows: list[dict[str, Any]], names: list[str]) -> np.ndarray:
        """The row-by-row path: the matrix, or a 422 naming every problem."""
        out = np.empty((len(rows), len(names)))
        problems = []
        for i, row in enumerate(rows):
            missing = [n for n in names if n not in row]
            unknown = sorted(set(row) - set(names))
            bad = [
                n
                for n in names
                if n in row
                and (
                    isinstance(row[n], bool)
                    or not isinstance(row[n], int | float)
                    or not math.isfinite(row[n])
                )
            ]
            if missing or unknown or bad:
                problems.append(
                    {
                        "index": i,
                        "missing": missing[:10],
                        "missing_count": len(missing),
                        "unknown": unknown,
                        "invalid": bad,
                    }
                )
                continue
            out[i] = [row[n] for n in names]
        if problems:
            raise ValidationError(
                "feature rows do not match the model's inputs; GET /api/v1/models/serving lists them",
                code="invalid_features",
                details=problems,
            )
        return out


def invalid_outputs(rul: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Which outputs the serving guard refuses: not finite, negative, or outside their own interval."""
    rul, lower, upper = (np.asarray(a, np.float64) for a in (rul, lower, upper))
    finite = np.isfinite(rul) & np.isfinite(lower) & np.isfinite(upper)
    with np.errstate(invalid="ignore"):
        return ~finite | (rul < 0) | ~((lower <= rul) & (rul <= upper))


def bucket(machine_id: str) -> int:
    """A machine's stable bucket in 0..99 (sha256 of its id): the same in every process and run."""
    return int(hashlib.sha256(machine_id.encode()).hexdigest()[:8], 16) % 100
