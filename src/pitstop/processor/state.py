"""The processor's stream state: per machine type (a *lane*) the online features of its machines,
computed for the spec of the type's champion; the highest seq processed per machine; the reset
events applied; and snapshots of all of it for a fast restart.

A lane without a champion yet has no online state: its readings still land in the lake, and the
lane is built from the lake when its first model arrives (``rebuild``), as it is when the
champion's feature spec changes.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from sqlalchemy import select

from pitstop.features import FeatureSpec, OnlineFeatures
from pitstop.lake import Lake
from pitstop.serving.deployment import Deployment
from pitstop.store import Database, Machine

log = logging.getLogger(__name__)

STATE_FILE = "processor.json"


@dataclass
class Lane:
    machine_type: str
    deployment: Deployment
    online: OnlineFeatures | None = None
    # the challenger's own state when its feature spec differs from the champion's (each training
    # fits its own fill values and regimes): shadow, canary and A/B score it from its features
    challenger_online: OnlineFeatures | None = None

    def challenger_spec_differs(self) -> bool:
        d = self.deployment
        return (
            d.ready
            and d.challenger is not None
            and d.challenger.loaded
            and d.challenger.model.bundle.spec.hash != d.spec_hash
        )

    def online_states(self) -> list[OnlineFeatures]:
        return [s for s in (self.online, self.challenger_online) if s is not None]

    @property
    def ready(self) -> bool:
        return self.online is not None and self.deployment.ready


def feed(online: OnlineFeatures, clean: pl.DataFrame) -> None:
    """Clean rows, grouped by machine in arrival order, into the online features."""
    if clean.height:
        online.update(
            clean["machine_id"].to_numpy(),
            clean["seq"].to_numpy(),
            clean["ts"].dt.epoch("us").to_numpy(),
            clean.select(
                [c if c in clean.columns else pl.lit(None, pl.Float64).alias(c) for c in online.spec.inputs]
            )
            .cast(pl.Float64)
            .to_numpy(),
        )


class StreamState:
    def __init__(
        self,
        lanes: dict[str, Lane],
        lake: Lake,
        state_dir: Path,
        active: Callable[[], dict[str, list[str]]],  # active machines by type
    ) -> None:
        self.lanes = lanes
        self.lake = lake
        self.state_dir = state_dir
        self.active = active
        self.last: dict[str, int] = {}  # highest seq processed per machine (clean or quarantined)
        self.resets: set[tuple[str, int]] = set()  # reset events (machine, µs) given to the lanes
        self.events_version: int | None = None

    # -- building from the lake ----------------------------------------------------------------
    def rebuild(self, lane: Lane, upto: int, machines: list[str] | None = None) -> None:
        """The lane's online state from the lake: every reset event of its machines, then their
        rows up to bus position ``upto`` (both lake tables were written before that commit)."""
        if not lane.deployment.ready:
            lane.online = lane.challenger_online = None
            return
        ids = machines if machines is not None else self.active().get(lane.machine_type, [])
        lane.online = self._build(lane.deployment.champion.model.bundle.spec, ids, upto)
        self.rebuild_challenger(lane, upto, ids)

    def rebuild_challenger(self, lane: Lane, upto: int, machines: list[str] | None = None) -> None:
        """The challenger's own online state when its spec differs from the champion's, else none."""
        if not lane.challenger_spec_differs():
            lane.challenger_online = None
            return
        challenger = lane.deployment.challenger
        assert challenger is not None
        ids = machines if machines is not None else self.active().get(lane.machine_type, [])
        lane.challenger_online = self._build(challenger.model.bundle.spec, ids, upto)

    def _build(self, spec: FeatureSpec, ids: list[str], upto: int) -> OnlineFeatures:
        online = OnlineFeatures(spec)
        if not ids:
            return online
        events = self.lake.read("events", columns=["machine_id", "ts", "kind"], machine_ids=ids)
        for machine_id, ts in (
            events.filter(pl.col("kind").is_in(list(spec.reset_events)))
            .select("machine_id", pl.col("ts").dt.epoch("us"))
            .sort("ts")
            .iter_rows()
        ):
            online.reset(machine_id, ts)
            self.resets.add((machine_id, ts))
        done = pl.col("bus_position").is_null() | (pl.col("bus_position") <= upto)
        self._replay(online, ids, done, None)
        return online

    def replay(self, lane: Lane, after: int, upto: int) -> None:
        """A restored lane: its machines' rows from bus positions in ``(after, upto]``."""
        ids = self.active().get(lane.machine_type, [])
        if lane.online is not None and ids:
            done = pl.col("bus_position").is_not_null() & (pl.col("bus_position") <= upto)
            self._replay(lane.online, ids, done, after)

    def _replay(self, online: OnlineFeatures, ids: list[str], done: pl.Expr, after: int | None) -> None:
        have = set(self.lake.columns("telemetry"))
        inputs = [c for c in online.spec.inputs if c in have]
        cols = ["machine_id", "ts", "seq", "bus_position"]
        clean = self.lake.read("telemetry", columns=[*cols, *inputs], machine_ids=ids, after_position=after)
        feed(online, clean.filter(done).sort("machine_id", "bus_position", "seq", nulls_last=False))

    def recount(self, after: int | None, upto: int) -> None:
        """The highest seq per active machine from the lake's rows (clean and quarantined)."""
        ids = [m for machines in self.active().values() for m in machines]
        if not ids:
            return
        if after is None:
            done = pl.col("bus_position").is_null() | (pl.col("bus_position") <= upto)
        else:
            done = pl.col("bus_position").is_not_null() & (pl.col("bus_position") <= upto)
        cols = ["machine_id", "seq", "bus_position"]
        rows = pl.concat(
            [
                self.lake.read(t, columns=cols, machine_ids=ids, after_position=after).filter(done)
                for t in ("telemetry", "quarantine")
            ]
        )
        for machine_id, seq in rows.group_by("machine_id").agg(pl.col("seq").max()).iter_rows():
            self.last[machine_id] = max(self.last.get(machine_id, -1), int(seq))

    def fresh(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Rows above every seq their machine had before them (processed earlier, or earlier in this
        batch in bus order), grouped by machine in bus order. The others are re-sends or late."""
        ids = frame["machine_id"].unique().to_list()
        last = pl.DataFrame(
            {"machine_id": ids, "_last": [self.last.get(m, -1) for m in ids]},
            schema={"machine_id": pl.String, "_last": pl.Int64},
        )
        before = pl.max_horizontal(pl.col("seq").cum_max().shift(1).over("machine_id"), pl.col("_last"))
        return (
            frame.join(last, on="machine_id", how="left")
            .sort("machine_id", maintain_order=True)
            .filter(pl.col("seq") > before)
            .drop("_last")
        )

    # -- snapshots -------------------------------------------------------------------------------
    def save(self, position: int) -> Path:
        """Every ready lane's state, then the shared state naming them (atomic renames; the shared
        file last, so a crash in between leaves the previous snapshot whole)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        lanes = {}
        for name, lane in self.lanes.items():
            if lane.online is None:
                continue
            _write(self.state_dir / f"features-{name}.npz", lane.online.snapshot({"position": position}))
            lanes[name] = lane.online.spec.hash
        shared = {
            "position": position,
            "last": self.last,
            "resets": sorted(self.resets),
            "events_version": self.events_version,
            "lanes": lanes,
        }
        path = self.state_dir / STATE_FILE
        _write(path, json.dumps(shared).encode())
        return path

    def load(self, upto: int) -> int | None:
        """Restore from the snapshot, lane by lane where the spec still matches; returns its bus
        position (None when there is none to use). Lanes not restored stay without state."""
        path = self.state_dir / STATE_FILE
        if not path.exists():
            return None
        try:
            shared = json.loads(path.read_text())
            position = int(shared["position"])
        except (ValueError, OSError, KeyError) as exc:
            log.warning("processor snapshot %s not used (%s); rebuilding from the lake", path, exc)
            return None
        if position > upto:  # cannot happen with the commit-then-snapshot order; be safe
            log.warning("processor snapshot is ahead of the bus; rebuilding from the lake")
            return None
        for name, lane in self.lanes.items():
            lane.online = None
            if not lane.deployment.ready or name not in shared.get("lanes", {}):
                continue
            spec = lane.deployment.champion.model.bundle.spec
            try:
                online, extra = OnlineFeatures.restore(
                    spec, (self.state_dir / f"features-{name}.npz").read_bytes()
                )
            except (ValueError, OSError, KeyError) as exc:
                log.info("feature snapshot of %s not used (%s); rebuilding it from the lake", name, exc)
                continue
            if int((extra or {}).get("position", -1)) == position:
                lane.online = online
        self.last = {m: int(v) for m, v in shared["last"].items()}
        self.resets = {(m, int(ts)) for m, ts in shared["resets"]}
        self.events_version = shared["events_version"]
        return position


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(f"{path.suffix}.{os.getpid()}.tmp")  # two processes never share one
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class MachineTypes:
    """Each machine's lane (its type), from the ops DB, cached once per machine; a fleet of one
    type takes every machine, even one not registered."""

    def __init__(self, db: Database, lanes: list[str], default: str) -> None:
        self.db, self.lanes, self.default = db, lanes, default
        self._types: dict[str, str] = {}
        self._untyped: set[str] = set()

    def lane(self, machine_type: str) -> str:
        if machine_type in self.lanes or len(self.lanes) != 1:
            return machine_type
        return self.default

    def of(self, ids: list[str]) -> dict[str, str]:
        unknown = [m for m in ids if m not in self._types]
        if unknown:
            with self.db.session() as s:
                query = select(Machine.machine_id, Machine.machine_type).where(
                    Machine.machine_id.in_(unknown)
                )
                self._types.update({m: self.lane(t) for m, t in s.execute(query)})
        out = {}
        for m in ids:
            found = self._types.get(m)
            if found is None and len(self.lanes) == 1:
                found = self.default
            if found is None and m not in self._untyped:
                self._untyped.add(m)
                log.warning(
                    "machine %s is not registered with a type: its readings are stored, not scored", m
                )
            out[m] = found or ""
        return out

    def active(self) -> dict[str, list[str]]:
        """Active machines by lane."""
        with self.db.session() as s:
            rows = s.execute(
                select(Machine.machine_id, Machine.machine_type).where(Machine.status == "active")
            )
            out: dict[str, list[str]] = {}
            for machine_id, machine_type in rows:
                out.setdefault(self.lane(machine_type), []).append(machine_id)
        return out
