"""Live data quality per machine type, from each micro-batch: five checks, each a Prometheus metric
and an alert rule.

- ``missing``: the share of a type's readings that lack an optional sensor's value, over a rolling
  window of ``quality_window`` readings (required sensors are refused at intake);
- ``out_of_range``: the share of a type's readings held in quarantine, over the same window;
- ``stuck``: a machine's sensor that repeated the exact same value ``quality_stuck_readings`` times
  in a row (sensors the type declares not informative, settings, and sensors constant in the
  serving model's training profile are not checked);
- ``gap``: an interval between a machine's consecutive readings over ``quality_gap_factor`` times
  its usual interval (a running mean of its intervals that were not gaps);
- ``clock_skew``: a machine's reading time against the time intake received it (``received``), the
  smallest difference in the batch, so that a backlog sent late by a device does not count, beyond
  ``quality_clock_skew_s`` either way. Readings stamped in the future alert at once; readings in
  the past only in a second batch, and not while their time runs faster than the wall clock (a
  device sending a backlog, or a replay of history, catching up).

An alert is audited once, ``quality_alert`` (actor ``monitor``) with ``{machine_type, check,
sensor?, machine_id?, value, threshold}``, and ``quality_cleared`` with the same keys once the
check passes again (in a later batch that evaluated it). Every check is columnar (Polars) per batch.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import polars as pl

from pitstop.features.online import group_spans
from pitstop.monitoring.metrics import Metrics
from pitstop.schema import FleetSchema, MachineType

log = logging.getLogger(__name__)

CHECKS = ("missing", "out_of_range", "stuck", "gap", "clock_skew")
GAP_WARMUP = 3  # intervals a machine must have shown before a gap can be judged
GAP_MEMORY = 50  # intervals the usual interval is averaged over (older ones weigh less)
STUCK_ROWS = 16_384  # readings the stuck check takes at a time (whole machines)

AuditMany = Callable[[list[tuple[str, str, dict[str, Any]]]], None]  # [(actor, action, detail)], one commit
Key = tuple[str, str, str | None, str | None]  # machine type, check, sensor, machine id


@dataclass(frozen=True)
class QualityPolicy:
    """The thresholds of the five checks (settings ``quality_*``)."""

    window: int = 500
    missing_rate: float = 0.2
    out_of_range_rate: float = 0.05
    stuck_readings: int = 30
    gap_factor: float = 5.0
    clock_skew_s: float = 300.0

    @classmethod
    def from_settings(cls, settings: Any) -> QualityPolicy:
        return cls(
            window=int(settings.quality_window),
            missing_rate=float(settings.quality_missing_rate),
            out_of_range_rate=float(settings.quality_out_of_range_rate),
            stuck_readings=int(settings.quality_stuck_readings),
            gap_factor=float(settings.quality_gap_factor),
            clock_skew_s=float(settings.quality_clock_skew_s),
        )


@dataclass(frozen=True)
class Finding:
    """One check over its threshold (or, when cleared, its value now)."""

    machine_type: str
    check: str
    value: float
    threshold: float
    sensor: str | None = None
    machine_id: str | None = None

    @property
    def key(self) -> Key:
        return (self.machine_type, self.check, self.sensor, self.machine_id)

    def detail(self) -> dict[str, Any]:
        out: dict[str, Any] = {"machine_type": self.machine_type, "check": self.check}
        if self.sensor is not None:
            out["sensor"] = self.sensor
        if self.machine_id is not None:
            out["machine_id"] = self.machine_id
        return out | {"value": round(self.value, 6), "threshold": round(self.threshold, 6)}


class _Window:
    """Running sums over a type's newest ``size`` readings (whole batches: at least ``size``)."""

    def __init__(self, size: int, sensors: int) -> None:
        self.size = size
        self.batches: deque[tuple[int, int, np.ndarray]] = deque()
        self.rows, self.held, self.nulls = 0, 0, np.zeros(sensors, np.int64)

    def add(self, rows: int, held: int, nulls: np.ndarray) -> None:
        self.batches.append((rows, held, nulls))
        self.rows, self.held, self.nulls = self.rows + rows, self.held + held, self.nulls + nulls
        while len(self.batches) > 1 and self.rows - self.batches[0][0] >= self.size:
            old_rows, old_held, old_nulls = self.batches.popleft()
            self.rows, self.held, self.nulls = (
                self.rows - old_rows,
                self.held - old_held,
                self.nulls - old_nulls,
            )

    @property
    def full(self) -> bool:
        return self.rows >= self.size


class QualityMonitor:
    """The five checks over the stream, with their alerts (raised once, cleared once)."""

    def __init__(self, policy: QualityPolicy, metrics: Metrics, audit_many: AuditMany) -> None:
        self.policy, self.metrics, self.audit_many = policy, metrics, audit_many
        self.alerts: dict[Key, Finding] = {}
        self._late: dict[str, tuple[float, float]] = {}  # machine -> (its last skew, when, s)
        self._windows: dict[str, _Window] = {}
        # per machine type, per machine: each sensor's last value and how long it has held it
        self._runs: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
        self._clock = pl.DataFrame(
            schema={"machine_id": pl.String, "last_ts": pl.Int64, "typical": pl.Float64, "seen": pl.Int64}
        )
        self._constant: dict[str, frozenset[str]] = {}
        self._profiles: dict[str, int] = {}

    # -- the training profile --------------------------------------------------------------------
    def learn_profile(self, machine_type: str, reference: dict[str, dict[str, Any]]) -> None:
        """Sensors whose every feature was constant in the serving model's training data (their
        ``std`` is 0) are not checked for being stuck."""
        if self._profiles.get(machine_type) == id(reference):
            return
        self._profiles[machine_type] = id(reference)
        spread: dict[str, bool] = {}
        for name, stats in reference.items():
            if name.startswith("__"):
                continue  # not a sensor's feature: the prediction's profile, the drift baseline
            sensor = name.split("__", 1)[0]
            spread[sensor] = spread.get(sensor, False) or float(stats.get("std", 1.0)) > 0
        self._constant[machine_type] = frozenset(s for s, varies in spread.items() if not varies)

    # -- each batch ------------------------------------------------------------------------------
    def check(self, fresh: pl.DataFrame, fleet: FleetSchema, types: dict[str, str]) -> None:
        """Run the checks on a batch's new readings (clean and quarantined, ``quarantine`` is the
        reason or null) of the machines ``types`` maps to a type of ``fleet``."""
        if fresh.height == 0:
            return
        for mt in fleet.machine_types.values():
            ids = [m for m, t in types.items() if t == mt.name]
            if not ids:
                continue
            rows = fresh.filter(pl.col("machine_id").is_in(ids))
            if rows.height == 0:
                continue
            self._rates(mt, rows)
            self._stuck(mt, rows.filter(pl.col("quarantine").is_null()))
            self._gaps(mt, rows)
            if "received" in rows.columns:
                self._skew(mt, rows.filter(pl.col("received").is_not_null()))
            counts = Counter(k[1] for k in self.alerts if k[0] == mt.name)
            for check in CHECKS:
                self.metrics.quality_alerts.labels(mt.name, check).set(counts.get(check, 0))

    def _rates(self, mt: MachineType, rows: pl.DataFrame) -> None:
        p = self.policy
        optional = [s.name for s in mt.sensors if not s.required]
        present = [s for s in optional if s in rows.columns]
        counted = (
            dict(zip(present, rows.select(pl.col(present).null_count()).row(0), strict=True))
            if present
            else {}
        )
        nulls = np.array([counted.get(s, rows.height) for s in optional], np.int64)
        held = int(rows["quarantine"].is_not_null().sum())
        window = self._windows.setdefault(mt.name, _Window(p.window, len(optional)))
        window.add(rows.height, held, nulls)
        for sensor, n in zip(optional, nulls.tolist(), strict=True):
            if n:
                self.metrics.missing_values.labels(sensor).inc(n)
        missing = window.nulls / max(window.rows, 1)
        out_of_range = window.held / max(window.rows, 1)
        for sensor, rate in zip(optional, missing.tolist(), strict=True):
            self.metrics.quality_missing_rate.labels(mt.name, sensor).set(rate)
        self.metrics.quality_out_of_range_rate.labels(mt.name).set(out_of_range)
        if not window.full:  # too few readings yet: one bad reading must not alert
            return
        rates: dict[tuple[str, str | None], tuple[float, float]] = {
            ("missing", s): (float(r), p.missing_rate)
            for s, r in zip(optional, missing.tolist(), strict=True)
        }
        rates["out_of_range", None] = (float(out_of_range), p.out_of_range_rate)
        failing = [
            Finding(mt.name, check, value, limit, sensor)
            for (check, sensor), (value, limit) in rates.items()
            if value > limit
        ]
        for check in ("missing", "out_of_range"):
            self._settle(
                mt.name,
                check,
                [f for f in failing if f.check == check],
                lambda f: rates[f.check, f.sensor][0] if (f.check, f.sensor) in rates else None,
            )

    def _stuck(self, mt: MachineType, clean: pl.DataFrame) -> None:
        """Per machine and sensor, how many readings in a row carried its latest value (missing
        values neither break nor extend a run); the type's state keeps, per machine, each sensor's
        last value and run."""
        sensors = [s for s in mt.informative if s in clean.columns]
        limit = self.policy.stuck_readings
        if not sensors or clean.height == 0:
            return
        rows = clean.select("machine_id", *[pl.col(s).cast(pl.Float64) for s in sensors]).sort(
            "machine_id", maintain_order=True
        )
        machines = rows["machine_id"].to_numpy()
        # a sensor per row, readings along it: the running maxima and sums walk contiguous memory
        # (along the first axis of a row-major matrix they ran ~3x slower)
        values = np.ascontiguousarray(rows.select(sensors).to_numpy().T, np.float64)  # (k, n)
        starts = np.flatnonzero(np.r_[True, machines[1:] != machines[:-1]])
        state = self._runs.setdefault(mt.name, {})
        ids: list[str] = []
        runs: list[np.ndarray] = []
        # a group of machines at a time: the temporaries stay small (a batch's whole matrix
        # many times over would be mapped fresh from the OS, and faulted in page by page)
        for lo, hi in group_spans(starts, len(machines), STUCK_ROWS):
            chunk_ids, last, run = _runs(values[:, lo:hi], machines[lo:hi], state)
            for row, m in enumerate(chunk_ids):
                state[m] = (last[row], run[row])
            ids += chunk_ids
            runs.append(run)
        run = np.concatenate(runs)
        constant = self._constant.get(mt.name, frozenset())
        checked = [j for j, s in enumerate(sensors) if s not in constant]
        failing: list[Finding] = []
        now: dict[tuple[str | None, str | None], float] = {}
        alerting = [a[3] for a in self.alerts if a[0] == mt.name and a[1] == "stuck" and a[3] is not None]
        for i in np.flatnonzero((run[:, checked] >= limit).any(axis=1) | np.isin(ids, alerting)):
            for j in checked:
                now[ids[i], sensors[j]] = float(run[i, j])
                if run[i, j] >= limit:
                    failing.append(
                        Finding(mt.name, "stuck", float(run[i, j]), float(limit), sensors[j], ids[i])
                    )
        self._settle(mt.name, "stuck", failing, lambda f: now.get((f.machine_id, f.sensor)))
        stuck = Counter(a[2] for a in self.alerts if a[0] == mt.name and a[1] == "stuck")
        for j in checked:
            self.metrics.quality_stuck.labels(mt.name, sensors[j]).set(stuck.get(sensors[j], 0))

    def _gaps(self, mt: MachineType, rows: pl.DataFrame) -> None:
        factor = self.policy.gap_factor
        ts = pl.col("ts").cast(pl.Datetime("us", "UTC")).dt.epoch("us")
        frame = (
            rows.select("machine_id", ts.alias("ts"))
            .with_row_index("_i")
            .join(self._clock, on="machine_id", how="left")
            .sort("_i")
            .with_columns(prev=pl.coalesce(pl.col("ts").shift(1).over("machine_id"), pl.col("last_ts")))
            .with_columns(interval=(pl.col("ts") - pl.col("prev")).cast(pl.Float64) / 1e6)
            .with_columns(
                limit=factor * pl.col("typical"),
                judged=pl.col("interval").is_not_null() & (pl.col("seen").fill_null(0) >= GAP_WARMUP),
            )
            .with_columns(gap=pl.col("judged") & (pl.col("interval") > pl.col("limit")))
        )
        normal = pl.col("interval").filter(~pl.col("gap") & (pl.col("interval") > 0))
        per = frame.group_by("machine_id", maintain_order=True).agg(
            last_ts=pl.col("ts").max(),
            typical_prev=pl.col("typical").first(),
            seen_prev=pl.col("seen").first().fill_null(0),
            batch_typical=normal.mean(),
            k=normal.len(),
            judged=pl.col("judged").any(),
            gaps=pl.col("gap").sum(),
            widest=pl.col("interval").filter(pl.col("judged")).max(),
            limit=pl.col("limit").first(),
        )
        weight = pl.min_horizontal(pl.col("seen_prev"), pl.lit(GAP_MEMORY)).cast(pl.Float64)
        typical = (
            pl.when(pl.col("k") == 0)
            .then(pl.col("typical_prev"))
            .when(pl.col("typical_prev").is_null())
            .then(pl.col("batch_typical"))
            .otherwise(
                (pl.col("typical_prev") * weight + pl.col("batch_typical") * pl.col("k"))
                / (weight + pl.col("k"))
            )
        )
        state = per.select(
            "machine_id",
            "last_ts",
            typical.alias("typical"),
            (pl.col("seen_prev") + pl.col("k")).alias("seen"),
        )
        self._clock = pl.concat([self._clock.join(state, on="machine_id", how="anti"), state], how="vertical")
        gaps = int(per["gaps"].sum())
        if gaps:
            self.metrics.quality_gaps.labels(mt.name).inc(gaps)
        judged = per.filter(pl.col("judged"))
        failing = [
            Finding(mt.name, "gap", float(widest), float(limit), machine_id=machine)
            for machine, widest, limit in judged.filter(pl.col("gaps") > 0)
            .select("machine_id", "widest", "limit")
            .iter_rows()
        ]
        now = self._values(judged, "gap", mt.name, ["machine_id"], "widest")
        self._settle(mt.name, "gap", failing, lambda f: now.get((f.machine_id,)))

    def _skew(self, mt: MachineType, rows: pl.DataFrame) -> None:
        if rows.height == 0:
            return
        limit = self.policy.clock_skew_s
        delay = pl.col("received").cast(pl.Datetime("us", "UTC")) - pl.col("ts").cast(
            pl.Datetime("us", "UTC")
        )
        per = rows.group_by("machine_id", maintain_order=True).agg(
            skew=delay.min().dt.total_microseconds().cast(pl.Float64) / 1e6,
            at=pl.col("received").cast(pl.Datetime("us", "UTC")).max().dt.epoch("us").cast(pl.Float64) / 1e6,
        )
        self.metrics.quality_clock_skew.labels(mt.name).set(float(per["skew"].abs().max() or 0.0))  # type: ignore[arg-type]
        failing = []
        for machine, skew, at in per.iter_rows():
            before = self._late.get(machine)
            self._late[machine] = (skew, at)
            if skew < -limit:  # stamped in the future: a clock ahead, never a backlog
                failing.append(Finding(mt.name, "clock_skew", float(skew), limit, machine_id=machine))
            elif skew > limit and before is not None and before[0] > limit:
                # in the past, twice: a clock behind, unless the readings' time runs faster than
                # the wall clock (a device sending its backlog, a replay of history catching up)
                catching_up = (before[0] - skew) > 0.5 * max(0.0, at - before[1])
                if not catching_up:
                    failing.append(Finding(mt.name, "clock_skew", float(skew), limit, machine_id=machine))
        now = self._values(per, "clock_skew", mt.name, ["machine_id"], "skew")
        self._settle(mt.name, "clock_skew", failing, lambda f: now.get((f.machine_id,)))

    # -- alerts ----------------------------------------------------------------------------------
    def _values(
        self, frame: pl.DataFrame, check: str, machine_type: str, keys: list[str], value: str
    ) -> dict[tuple[Any, ...], float]:
        """The value now of each machine (and sensor) alerting on ``check``, where ``frame`` has it."""
        alerting = {k[3] for k in self.alerts if k[0] == machine_type and k[1] == check}
        if not alerting:
            return {}
        rows = frame.filter(pl.col("machine_id").is_in(list(alerting))).select(*keys, value)
        return {tuple(r[:-1]): float(r[-1]) for r in rows.iter_rows() if r[-1] is not None}

    def _settle(
        self,
        machine_type: str,
        check: str,
        failing: Iterable[Finding],
        value_now: Callable[[Finding], float | None],
    ) -> None:
        """Raise what fails and did not before; clear what alerted and was checked and passed now
        (``value_now`` is None for an alert this batch did not check)."""
        now = {f.key: f for f in failing}
        raised = {key: finding for key, finding in now.items() if key not in self.alerts}
        cleared: dict[Key, Finding] = {}
        for key, before in self.alerts.items():
            if key[0] != machine_type or key[1] != check or key in now:
                continue
            value = value_now(before)
            if value is not None:
                cleared[key] = replace(before, value=value)
        # one transaction for the lot; the state changes after it: what was not recorded is
        # raised (or cleared) again by the next batch
        self.audit_many(
            [("monitor", "quality_alert", f.detail()) for f in raised.values()]
            + [("monitor", "quality_cleared", f.detail()) for f in cleared.values()]
        )
        for key, finding in raised.items():
            log.warning("data quality alert: %s", finding.detail())
            self.alerts[key] = finding
        for key in cleared:
            del self.alerts[key]


def _runs(
    values: np.ndarray, machines: np.ndarray, state: dict[str, tuple[np.ndarray, np.ndarray]]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """For readings ``values`` (sensors, readings) of ``machines`` (grouped, in order), each
    machine's last value and run length per sensor, carried on from ``state``: its machines
    (in order), ``last`` and ``run`` (machines, sensors)."""
    k, n = values.shape
    starts = np.flatnonzero(np.r_[True, machines[1:] != machines[:-1]])
    ends = np.r_[starts[1:], n] - 1
    group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, n]))
    ids = machines[starts].tolist()
    prev_last = np.array([state.get(m, (np.full(k, np.nan), None))[0] for m in ids]).reshape(-1, k).T
    prev_run = (
        np.array([state[m][1] if m in state else np.zeros(k, np.int64) for m in ids], np.int64)
        .reshape(-1, k)
        .T
    )
    # carry each value forward over missing ones, within a machine, then from its state
    at = np.arange(n)
    index = np.where(np.isnan(values), -1, at)
    index[:, starts] = np.where(index[:, starts] < 0, starts, index[:, starts])
    filled = np.take_along_axis(values, np.maximum.accumulate(index, axis=1), axis=1)
    filled = np.where(np.isnan(filled), prev_last[:, group], filled)
    before = np.empty_like(filled)
    before[:, 0] = np.nan
    before[:, 1:] = filled[:, :-1]
    before[:, starts] = prev_last
    same = (filled == before) | (np.isnan(filled) & np.isnan(before))
    last_break = np.maximum.accumulate(np.where(same, -1, at), axis=1)[:, ends]  # (k, machines)
    counted = np.zeros((k, n + 1), np.int64)
    np.cumsum(~np.isnan(values), axis=1, out=counted[:, 1:])
    since_break = counted[:, ends + 1] - np.take_along_axis(counted, np.maximum(last_break, 0), axis=1)
    unbroken = last_break < starts
    run = np.where(unbroken, prev_run + counted[:, ends + 1] - counted[:, starts], since_break)
    return ids, np.ascontiguousarray(filled[:, ends].T), np.ascontiguousarray(run.T)
