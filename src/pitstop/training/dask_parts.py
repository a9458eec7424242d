"""What runs on the Dask workers when training on Dask (``pitstop.training.on_dask``).

A part is a group of machines: its task reads only those machines' rows from the lake's Delta
tables (a filter on ``machine_id`` at a pinned version) and computes their features and labels
with the same functions as the single-node path (``labelled_rows``). Its feature matrix stays on
the worker; the client fetches only the per-row label vectors, and the feature rows it asks for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from pitstop.errors import LakeError
from pitstop.features import FeatureSpec
from pitstop.training.train import labelled_rows


@dataclass(frozen=True)
class LakeSource:
    """Where a part's task reads its rows: the lake tables at pinned versions."""

    telemetry: str
    telemetry_version: int
    events: str
    events_version: int
    columns: tuple[str, ...]
    storage_options: dict[str, str] | None = None

    def read(
        self, table: str, version: int, machine_ids: list[str], columns: list[str] | None
    ) -> pl.DataFrame:
        from deltalake import DeltaTable
        from deltalake.exceptions import DeltaError

        try:
            dt = DeltaTable(table, version=version, storage_options=self.storage_options)
            arrow = dt.to_pyarrow_table(columns=columns, filters=[("machine_id", "in", machine_ids)])
        except (DeltaError, OSError) as exc:
            raise LakeError(
                f"a Dask worker cannot read lake table {table} at version {version}: {exc}"
            ) from exc
        frame = pl.from_arrow(arrow)
        assert isinstance(frame, pl.DataFrame)
        return frame


@dataclass(frozen=True)
class Labelling:
    """The fitted spec and the label settings every part is computed with."""

    spec: FeatureSpec
    rul_cap: float
    failure_horizon: float
    unit_seconds: float | None


@dataclass
class Part:
    """A group of machines' training rows, sorted by machine and seq."""

    X: np.ndarray
    y: np.ndarray
    uncapped: np.ndarray
    fails_within: np.ndarray
    machines: np.ndarray
    censored: np.ndarray
    component: np.ndarray

    def labels(self) -> Part:
        """The part without its features (what the client fetches)."""
        return Part(
            np.empty((len(self.y), 0)),
            self.y,
            self.uncapped,
            self.fails_within,
            self.machines,
            self.censored,
            self.component,
        )


def build_part(machine_ids: list[str], source: LakeSource, labelling: Labelling) -> Part:
    """Read ``machine_ids``' readings and events from the lake and label their features."""
    telemetry = source.read(source.telemetry, source.telemetry_version, machine_ids, list(source.columns))
    events = source.read(source.events, source.events_version, machine_ids, None)
    s = labelling
    labelled = labelled_rows(telemetry, events, s.spec, s.rul_cap, s.failure_horizon, s.unit_seconds)
    return Part(
        X=labelled.select(s.spec.names).to_numpy(),
        y=labelled["rul"].to_numpy().astype(np.float64),
        uncapped=labelled["rul_uncapped"].to_numpy().astype(np.float64),
        fails_within=labelled["fails_within"].cast(pl.Float64).to_numpy(),
        machines=labelled["machine_id"].to_numpy(),
        censored=labelled["censored"].to_numpy(),
        component=labelled["failure_component"].fill_null("").to_numpy().astype(str),
    )


def labels_of(part: Part) -> Part:
    return part.labels()


def features_of(part: Part, rows: np.ndarray | None = None) -> np.ndarray:
    """The part's feature rows (all, or those at ``rows``, a boolean mask or indices)."""
    return part.X if rows is None else part.X[rows]


def stack(parts: list[Part], rows: list[np.ndarray], field: str = "X") -> np.ndarray:
    """The parts' ``field`` (features ``X`` or target ``y``) at ``rows`` (boolean masks), in order."""
    return np.concatenate([getattr(p, field)[r] for p, r in zip(parts, rows, strict=True)])


def predict(part: Part, booster: Any, rows: np.ndarray) -> np.ndarray:
    """A booster's predictions for the part's ``rows`` (one thread, as the single-node path)."""
    return np.asarray(booster.predict(part.X[rows], num_threads=1))
