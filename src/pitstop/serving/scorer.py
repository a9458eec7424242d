from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pitstop.errors import ArtifactIntegrityError, ModelError
from pitstop.registry import LoadedModel, ModelBundle, Registry
from pitstop.serving import matrix
from pitstop.serving.forest import forest_for, predict

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
            forest_for(cached.bundle)
            with self._lock:
                self._model, self.from_cache = cached, True
                self._pending, self._generation = None, self._generation + 1
            return cached
        self._keep(model)
        forest_for(model.bundle)  # built and compiled here, not on the first request
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
        forest_for(model.bundle)
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
        model, cached = self.model, self.from_cache
        rul, lower, upper = predict(model.bundle, features)
        arm = arm or self.alias
        return [
            Score(float(r), float(lo), float(hi), model.name, model.version, arm, cached)
            for r, lo, hi in zip(rul, lower, upper, strict=True)
        ]

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def matrix_from_rows(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """Build a feature matrix from ``{name: number}`` rows; a missing or non-finite value is a
        422."""
        spec = self.model.bundle.spec  # once: the model may be swapped meanwhile
        return matrix.from_rows(rows, spec.names, spec.name_set)

    def matrix_from_columns(self, columns: list[str], data: list[list[Any]]) -> np.ndarray:
        """Build a feature matrix from ``data`` rows of values in ``columns`` order."""
        spec = self.model.bundle.spec
        return matrix.from_columns(columns, data, spec.names, spec.name_set)

    def matrix_from_arrow(self, raw: bytes, max_rows: int) -> np.ndarray:
        """Build a feature matrix from an Arrow IPC stream of at most ``max_rows`` rows
        (``serving.matrix.from_arrow``)."""
        spec = self.model.bundle.spec
        return matrix.from_arrow(raw, spec.names, spec.name_set, max_rows)

    def score_dicts(self, features: np.ndarray) -> list[dict[str, Any]]:
        """``[s.to_dict() for s in score_matrix(features)]``, without a ``Score`` per row."""
        model, cached = self.model, self.from_cache
        rul, lower, upper = predict(model.bundle, features)
        tag: dict[str, Any] = {"name": model.name, "version": model.version, "arm": self.alias}
        if cached:
            tag["from_cache"] = True
        return [
            {"rul": r, "rul_lower": lo, "rul_upper": hi, "model": tag}
            for r, lo, hi in zip(round3(rul), round3(lower), round3(upper), strict=True)
        ]


_ROUND_BY_PYTHON = 16


def round3(values: np.ndarray) -> list[float]:
    """``[round(v, 3) for v in values]`` (Python's exact rounding, half to even), in bulk: numpy's
    ``x * 1000`` rounds, so it can differ only where that product lands next to a half; those
    few are rounded by Python."""
    x = np.asarray(values, np.float64)
    if x.size <= _ROUND_BY_PYTHON:  # a few values: numpy's per-call cost is more than the rounding
        return [round(v, 3) for v in x.tolist()]
    scaled = x * 1000.0
    out = (np.rint(scaled) / 1000.0).tolist()
    with np.errstate(invalid="ignore"):
        near_half = ~(np.abs(np.abs(scaled - np.floor(scaled)) - 0.5) > 1e-6) | ~(np.abs(scaled) < 2.0**50)
    for i in np.flatnonzero(near_half).tolist():
        out[i] = round(float(x[i]), 3)
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
