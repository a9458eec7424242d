from __future__ import annotations

import bisect
import ctypes
import json
import logging
import re
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from pitstop.errors import ArtifactIntegrityError
from pitstop.features.spec import FeatureSpec
from pitstop.registry.check_model import check_in_child
from pitstop.registry.files import (
    COMPONENT_FILE,
    MANIFEST_FILE,
    MEMBER_FILE,
    META_FILE,
    MODEL_FILE,
    REFERENCE_FILE,
    REFUSED_SUFFIXES,
    SPEC_FILE,
    file_names,
    sha256_file,
)
from pitstop.registry.interval import apply_interval, interval_arrays

log = logging.getLogger(__name__)


class SingleRowPredictor:
    """LightGBM's fast single-row prediction (``LGBM_BoosterPredictForMatSingleRowFast``) over
    every member of an ensemble: the sum of their predictions for one row.

    ``Booster.predict`` spends about 70 µs per call on Python-side checks and buffers that do not
    change between calls; the fast path sets them up once per booster (and takes a shared lock on
    it in LightGBM), so one row costs what the trees cost. A lock serialises callers, because a
    fast-config handle's buffers are per handle. Freed with the predictor.
    """

    def __init__(self, handles: list[ctypes.c_void_p], ncol: int, lib: Any, check: Any) -> None:
        self._handles = handles
        self._ncol = ncol
        self._lib = lib
        self._check = check
        self._out = np.empty(1, np.float64)
        self._out_ptr = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
        self._out_len = ctypes.c_int64()
        self._lock = threading.Lock()
        weakref.finalize(self, _free_fast_configs, lib, list(handles))

    @classmethod
    def create(cls, boosters: list[lgb.Booster], ncol: int) -> SingleRowPredictor | None:
        """The predictor, or None (``Booster.predict`` then serves single rows too) when this
        LightGBM build does not offer the fast API."""
        try:
            from lightgbm.basic import _LIB, _safe_call

            handles = []
            for booster in boosters:
                handle = ctypes.c_void_p()
                _safe_call(
                    _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                        booster._handle,
                        ctypes.c_int(0),  # C_API_PREDICT_NORMAL
                        ctypes.c_int(0),  # from the first iteration
                        ctypes.c_int(-1),  # to the last
                        ctypes.c_int(1),  # C_API_DTYPE_FLOAT64
                        ctypes.c_int32(ncol),
                        ctypes.c_char_p(b"num_threads=1"),
                        ctypes.byref(handle),
                    )
                )
                handles.append(handle)
        except Exception as exc:  # an older or newer LightGBM without it: the slow path is correct
            log.debug("LightGBM fast single-row prediction unavailable: %s", exc)
            return None
        return cls(handles, ncol, _LIB, _safe_call)

    def predict(self, row: np.ndarray) -> float:
        """The sum of the members' predictions for one row of ``ncol`` values."""
        data = np.ascontiguousarray(row, np.float64)
        if data.shape != (self._ncol,):
            raise ValueError(f"expected one row of {self._ncol} values, got shape {row.shape}")
        pointer = data.ctypes.data_as(ctypes.c_void_p)
        total = 0.0
        with self._lock:
            for handle in self._handles:
                self._check(
                    self._lib.LGBM_BoosterPredictForMatSingleRowFast(
                        handle, pointer, ctypes.byref(self._out_len), self._out_ptr
                    )
                )
                total += float(self._out[0])
        return total


def _clip0(x: float) -> float:
    """``np.clip(x, 0.0, None)`` of one float: NaN stays NaN, -0.0 becomes 0.0."""
    return 0.0 if x <= 0.0 else x


def _one_from_raw(
    raw: float, members: int, edges: list[float], lows: list[float], ups: list[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``ModelBundle.from_raw`` of one row in floats: IEEE doubles give numpy's results bit for bit
    (``tests/test_forest.py``), NaN and negative zero included."""
    rul = _clip0(raw / members)
    band = bisect.bisect_right(edges, rul)  # searchsorted(side="right"); NaN past the last edge
    return np.array([rul]), np.array([_clip0(rul + lows[band])]), np.array([rul + ups[band]])


def _free_fast_configs(lib: Any, handles: list[ctypes.c_void_p]) -> None:
    for handle in handles:
        lib.LGBM_FastConfigFree(handle)


@dataclass
class ModelBundle:
    """A trained RUL model and everything needed to use it, in plain text formats only.

    ``boosters`` are averaged: the model fit on all rows first, then the cross-validation fold
    models. ``interval`` holds the offsets (``lower``, ``upper``, per band of prediction between
    ``edges``) added to the point prediction for the nominal ``coverage``.
    """

    boosters: list[lgb.Booster]
    spec: FeatureSpec
    interval: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, dict[str, Any]] = field(default_factory=dict)  # training profile (drift)
    rul_cap: float | None = None
    # which component the coming failure is in: a multiclass LightGBM over the same features,
    # trained on readings before failures that named their component; classes in this order
    component_model: lgb.Booster | None = None
    components: list[str] = field(default_factory=list)

    _single_row: SingleRowPredictor | None = field(default=None, init=False, repr=False, compare=False)
    # the interval as floats for one row at a time (None: numpy's path), with the dict they came from
    _bands: tuple[dict[str, Any], tuple[list[float], list[float], list[float]] | None] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self._single_row = SingleRowPredictor.create(self.boosters, len(self.spec.names))

    @property
    def booster(self) -> lgb.Booster:
        """The model fit on every training row (the first member)."""
        return self.boosters[0]

    @property
    def feature_names(self) -> list[str]:
        return self.spec.names

    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """RUL point estimate, lower and upper bound for each row of a feature matrix."""
        if features.shape[0] == 1 and self._single_row is not None:  # the API's usual request
            raw = np.array([self._single_row.predict(features[0])])
        else:
            raw = np.asarray(self.boosters[0].predict(features, num_threads=1), np.float64)
            for booster in self.boosters[1:]:
                raw = raw + np.asarray(booster.predict(features, num_threads=1), np.float64)
        return self.from_raw(raw)

    def from_raw(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``predict``'s last step, from the members' summed raw predictions (serving's compiled
        forest computes the same sums): the average, clipped at 0, and its interval."""
        if raw.shape == (1,) and raw.dtype == np.float64:  # the API's usual request
            bands = self._one_row_bands()
            if bands is not None:  # the same arithmetic in floats, without numpy's per-call cost
                return _one_from_raw(float(raw[0]), len(self.boosters), *bands)
        rul = np.clip(raw / len(self.boosters), 0.0, None)
        lower, upper = apply_interval(self.interval, rul)
        return rul, lower, upper

    def _one_row_bands(self) -> tuple[list[float], list[float], list[float]] | None:
        """The interval's edges and offsets as floats, read once per interval dict; None when the
        edges are not a plain ascending list of numbers (numpy's path then handles them)."""
        cached = self._bands
        if cached is None or cached[0] is not self.interval:
            edges, lower, upper = interval_arrays(self.interval)
            usable = (
                edges.ndim == 1
                and bool(np.all(np.diff(edges) >= 0))
                and not np.isnan(edges).any()
                and len(lower) > len(edges)
                and len(upper) > len(edges)
            )
            bands = (edges.tolist(), lower.tolist(), upper.tolist()) if usable else None
            cached = self._bands = (self.interval, bands)
        return cached[1]

    def contributions(self, features: np.ndarray) -> np.ndarray:
        """Each feature's contribution to each row's RUL (LightGBM's SHAP values, averaged over
        the members): one column per feature, without the bias."""
        total = np.zeros((features.shape[0], len(self.feature_names)))
        for booster in self.boosters:
            total += np.asarray(booster.predict(features, pred_contrib=True, num_threads=1))[:, :-1]
        return total / len(self.boosters)

    def predict_components(self, features: np.ndarray) -> np.ndarray | None:
        """Probability of each of ``components`` being the one that fails, per row (None without
        a component model)."""
        if self.component_model is None:
            return None
        p = np.asarray(self.component_model.predict(features, num_threads=1), np.float64)
        return p.reshape(features.shape[0], len(self.components))

    def likely_component(self, features: np.ndarray) -> list[tuple[str, float]] | None:
        """The most likely failing component and its probability, per row."""
        p = self.predict_components(features)
        if p is None:
            return None
        best = p.argmax(axis=1)
        return [(self.components[int(b)], float(p[i, b])) for i, b in enumerate(best)]

    @property
    def files(self) -> list[str]:
        return file_names(len(self.boosters), self.component_model is not None)

    def save(self, folder: Path) -> dict[str, str]:
        """Write the bundle's files and a manifest of their sha256; returns the manifest."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MODEL_FILE).write_text(self.boosters[0].model_to_string())
        for k, booster in enumerate(self.boosters[1:], 1):
            (folder / MEMBER_FILE.format(k)).write_text(booster.model_to_string())
        (folder / SPEC_FILE).write_text(json.dumps(self.spec.to_dict(), indent=2, sort_keys=True))
        if self.component_model is not None:
            (folder / COMPONENT_FILE).write_text(self.component_model.model_to_string())
        meta = {
            "interval": self.interval,
            "metrics": self.metrics,
            "params": self.params,
            "feature_names": self.feature_names,
            "rul_cap": self.rul_cap,
            "members": len(self.boosters),
            **({"components": self.components} if self.component_model is not None else {}),
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        (folder / REFERENCE_FILE).write_text(json.dumps(self.reference, sort_keys=True))
        manifest = {name: sha256_file(folder / name) for name in self.files}
        (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        return manifest

    @classmethod
    def load(cls, folder: Path, expected_manifest: str | None = None) -> ModelBundle:
        """Load a bundle, refusing pickled files, a manifest whose sha256 is not
        ``expected_manifest`` (the one registered, when given), any file whose sha256 is not the
        manifest's, and model files that do not parse in a child process (``check_model``)."""
        refused = [p.name for p in folder.rglob("*") if p.suffix.lower() in REFUSED_SUFFIXES]
        if refused:
            raise ArtifactIntegrityError(f"refusing to load pickled artifacts: {refused}")
        try:
            manifest = json.loads((folder / MANIFEST_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError) as exc:
            raise ArtifactIntegrityError(f"model folder {folder} has no valid manifest: {exc}") from exc
        anchor = verify_files(folder, expected_manifest, manifest)
        members = 1 + sum(1 for name in manifest if re.fullmatch(MEMBER_FILE.format(r"\d+"), name))
        names = file_names(members, COMPONENT_FILE in manifest)
        meta = json.loads((folder / META_FILE).read_text())
        if int(meta.get("members", 1)) != members:
            raise ArtifactIntegrityError(
                f"the manifest lists {members} model files, the metadata {meta.get('members')}"
            )
        spec = FeatureSpec.from_dict(json.loads((folder / SPEC_FILE).read_text()))
        check_in_child(
            folder, [*names[:members], *([COMPONENT_FILE] if COMPONENT_FILE in manifest else [])], anchor
        )
        boosters = [lgb.Booster(model_str=(folder / name).read_text()) for name in names[:members]]
        component = None
        if COMPONENT_FILE in manifest:
            component = lgb.Booster(model_str=(folder / COMPONENT_FILE).read_text())
            boosters_checked = [*boosters, component]
        else:
            boosters_checked = boosters
        if any(b.feature_name() != spec.names for b in boosters_checked):
            raise ArtifactIntegrityError("the model's features do not match its feature spec")
        return cls(
            boosters=boosters,
            spec=spec,
            interval=meta["interval"],
            metrics=meta.get("metrics", {}),
            params=meta.get("params", {}),
            reference=json.loads((folder / REFERENCE_FILE).read_text()),
            rul_cap=meta.get("rul_cap"),
            component_model=component,
            components=list(meta.get("components", [])),
        )


def verify_files(folder: Path, expected_manifest: str | None, manifest: dict[str, str] | None = None) -> str:
    """Check a bundle folder: its manifest's sha256 is ``expected_manifest`` (when given) and every
    file the manifest implies is there with the manifest's sha256. Returns the manifest's sha256."""
    if manifest is None:
        try:
            manifest = json.loads((folder / MANIFEST_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError) as exc:
            raise ArtifactIntegrityError(f"model folder {folder} has no valid manifest: {exc}") from exc
    anchor = manifest_digest(folder)
    if expected_manifest is not None and anchor != expected_manifest:
        raise ArtifactIntegrityError(
            f"the model's manifest has sha256 {anchor[:12]}…, the registry recorded "
            f"{expected_manifest[:12]}… when the version was registered: the artifacts were "
            "altered; refusing to load them"
        )
    members = 1 + sum(1 for name in manifest if re.fullmatch(MEMBER_FILE.format(r"\d+"), name))
    for name in file_names(members, COMPONENT_FILE in manifest):
        path = folder / name
        if not path.exists():
            raise ArtifactIntegrityError(f"model artifact {name} is missing from {folder}")
        digest = sha256_file(path)
        if digest != manifest.get(name):
            raise ArtifactIntegrityError(
                f"model artifact {name} has sha256 {digest[:12]}…, the manifest says "
                f"{str(manifest.get(name))[:12]}…: the artifact was altered; refusing to load it"
            )
    return anchor


def manifest_digest(folder: Path) -> str:
    """The sha256 of a bundle's manifest: it names every file's sha256, so it anchors them all."""
    return sha256_file(folder / MANIFEST_FILE)
