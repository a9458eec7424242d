"""Live drift on a long healthy replay: false alarms, and how fast an injected fault is found.

A champion is trained on the shipped FD001 training engines (as ``pitstop demo`` does), then the
100 FD001 test engines, which it never saw, are replayed through the live drift monitor the way
the processor feeds it (each batch: every machine's newest feature row, scored by the champion):

- **a fleet that stays 100 machines** for ``--steps`` steps: each machine replays one engine's
  recording after another (a replaced engine is a new machine), so the fleet's ages and wear stay
  mixed, as in a real fleet. Every window checked is a chance for a false alarm; the rate is the
  alerts raised per window (``false_alarm_rate``);
- **fleets that shrink**: ``--schedules`` times, each engine joining at a random point of its
  recording, plus once from every engine's first cycle, each engine leaving when its recording
  ends, so the last windows hold only the longest-lived engines (``shrinking_false_alarms``);
- **a fault**: one schedule again with a 3σ calibration offset on one sensor of a tenth of the
  engines: the windows from the fault to the first alert, and on what.

    python bench/drift_replay.py [--schedules 20] [--steps 3000]

The last line is one JSON object: windows_checked, false_alarms, false_alarm_rate,
shrinking_windows_checked, shrinking_false_alarms, fault_windows_to_alert, fault_alerts,
window_check_ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

EMPTY_EVENTS = {"machine_id": pl.String, "ts": pl.Datetime("us", "UTC"), "seq": pl.Int64, "kind": pl.String}


def champion(root: Path) -> Any:
    """A platform under ``root`` with last season seeded and a champion trained (its bundle)."""
    from pitstop.config import load_settings
    from pitstop.demo import ensure_champion, ensure_live_fleet, seed_last_season
    from pitstop.platform import Platform

    platform = Platform.open(load_settings(None, data_dir=root))
    seed_last_season(platform, echo=lambda _: None)
    ensure_live_fleet(platform)
    ensure_champion(platform, echo=lambda _: None)
    platform.scorer.reload()
    bundle = platform.scorer.model.bundle
    history = platform.lake.read("telemetry", columns=list(bundle.spec.sensors))
    sigma = {s: float(history[s].std()) for s in bundle.spec.sensors}  # type: ignore[arg-type]
    platform.close()
    return bundle, sigma


def test_fleet(
    offset: dict[str, float] | None = None,
    faulty: set[str] = frozenset(),
    from_cycle: dict[str, int] | None = None,
) -> pl.DataFrame:  # type: ignore[assignment]
    from pitstop.demo import live_id
    from pitstop.sim import shipped

    test = shipped("fd001_test").sort("unit", "cycle")
    frame = test.with_columns(
        pl.col("unit").map_elements(live_id, return_dtype=pl.String).alias("machine_id"),
        pl.col("cycle").cast(pl.Int64).alias("seq"),
        (pl.datetime(2026, 1, 1, time_zone="UTC") + pl.duration(seconds=pl.col("cycle"))).alias("ts"),
    )
    for sensor, value in (offset or {}).items():
        start = pl.col("machine_id").replace_strict(from_cycle or {}, default=0, return_dtype=pl.Int64)
        frame = frame.with_columns(
            pl.when(pl.col("machine_id").is_in(sorted(faulty)) & (pl.col("seq") > start))
            .then(pl.col(sensor) + value)
            .otherwise(pl.col(sensor))
            .alias(sensor)
        )
    return frame


def stream(features: pl.DataFrame, joins: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of ``features`` in the order the processor scores them (one batch a step, one
    row per engine, joining at ``joins``), and each row's step."""
    order, steps = [], []
    mids = features["machine_id"].to_numpy()
    rows = {m: np.nonzero(mids == m)[0] for m in np.unique(mids)}
    longest = max(len(r) for r in rows.values())
    for step in range(longest):
        for m, r in rows.items():
            k = joins.get(m, 0) + step
            if k < len(r):
                order.append(r[k])
                steps.append(step)
    return np.array(order), np.array(steps)


def stationary(
    features: pl.DataFrame, slots: int, steps: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fleet that stays the same size: ``slots`` machines, each replaying one engine's
    recording after another (a new machine id each: the engine was replaced), in random order,
    starting at random points of their first recording. Row indices, steps and machine ids."""
    mids = features["machine_id"].to_numpy()
    engines = {m: np.nonzero(mids == m)[0] for m in np.unique(mids)}
    names = sorted(engines)
    order, at, ids = [], [], []
    for slot in range(slots):
        step, episode = 0, 0
        queue = list(rng.permutation(names))
        offset = int(rng.integers(0, len(engines[queue[0]])))
        while step < steps:
            engine = queue[episode % len(queue)]
            rows = engines[engine][offset:]
            take = min(len(rows), steps - step)
            order.extend(rows[:take])
            at.extend(range(step, step + take))
            ids.extend([f"slot{slot}-{episode}"] * take)
            step, episode, offset = step + take, episode + 1, 0
    by_step = np.argsort(np.array(at), kind="stable")
    return np.array(order)[by_step], np.array(at)[by_step], np.array(ids)[by_step]


def run(
    bundle: Any,
    features: pl.DataFrame,
    joins: dict[str, int] | None,
    timings: list[float],
    fleet: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> list[tuple[int, list[tuple[str, str, int]]]]:
    """Replay into a fresh monitor (the engines joining at ``joins``, or a ready-made ``fleet``);
    each window's (last step, alerts raised as (sensor, kind, machines in the window))."""
    from pitstop.monitoring.monitor import DriftMonitor

    spec = bundle.spec
    if fleet is None:
        order, steps = stream(features, joins or {})
        ids = features["machine_id"].to_numpy()[order]
    else:
        order, steps, ids = fleet
    X = features.select(spec.names).to_numpy()[order]
    predictions, _, _ = bundle.predict(X)
    windows: list[tuple[int, list[tuple[str, str, int]]]] = []
    monitor = DriftMonitor(window=500, fleet_scope=False)
    monitor.on_report = lambda report, raised, cleared: windows.append(
        (0, [(f.sensor, f.kind, report.machines) for f in raised.values()])
    )
    for step in np.unique(steps):
        batch = steps == step
        started = time.perf_counter()
        before = len(windows)
        monitor.observe(
            bundle.reference,
            spec.names,
            X[batch],
            predictions[batch],
            ["turbofan"] * int(batch.sum()),
            list(ids[batch]),
        )
        if len(windows) > before:
            timings.append(time.perf_counter() - started)
            windows[-1] = (int(step), windows[-1][1])
    return windows


def measure(schedules: int = 20, seed: int = 0, steps: int = 3000) -> dict[str, Any]:
    """Run the replays (printing as it goes); the figures for the JSON line."""
    from pitstop.features import build_features

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        bundle, sigma = champion(Path(tmp) / "data")
        print(f"champion trained in {time.perf_counter() - started:.0f} s")
    spec = bundle.spec
    events = pl.DataFrame(schema=EMPTY_EVENTS)
    healthy = build_features(test_fleet(), spec, events).sort("machine_id", "seq")
    lengths = dict(healthy.group_by("machine_id").len().iter_rows())
    rng = np.random.default_rng(seed)
    timings: list[float] = []
    windows = run(bundle, healthy, None, timings, stationary(healthy, 100, steps, rng))
    false_alarms = [alert for _, raised in windows for alert in raised]
    print(
        f"healthy, a fleet of 100 that stays 100 (engines replaced as their recordings end), "
        f"{steps} steps: {len(windows)} windows checked, {len(false_alarms)} alerts {false_alarms[:10]}"
    )
    shrinking = run(bundle, healthy, {}, timings)  # every engine from its first cycle
    for _ in range(schedules):
        joins = {m: int(rng.integers(0, max(1, n - 20))) for m, n in lengths.items()}
        shrinking += run(bundle, healthy, joins, timings)
    shrinking_alarms = [alert for _, raised in shrinking for alert in raised]
    print(
        f"healthy, a fleet that shrinks to its longest recordings ({schedules + 1} replays): "
        f"{len(shrinking)} windows checked, {len(shrinking_alarms)} alerts {shrinking_alarms[:10]}"
    )

    machines = sorted(lengths)
    faulty = set(machines[::10])
    joins = {m: int(rng.integers(0, max(1, n - 60))) for m, n in lengths.items()}
    fault_step = 20
    from_cycle = {m: joins[m] + fault_step for m in machines}  # seq = cycle = row index + 1
    sensor = "s3"
    shifted = build_features(test_fleet({sensor: 3 * sigma[sensor]}, faulty, from_cycle), spec, events).sort(
        "machine_id", "seq"
    )
    fault_windows = run(bundle, shifted, joins, [])
    after = [(step, raised) for step, raised in fault_windows if step >= fault_step]
    first = next((i for i, (_, raised) in enumerate(after) if raised), None)
    alerts = sorted({f"{s} ({k})" for _, raised in fault_windows for s, k, _ in raised})
    print(
        f"fault: +3σ on {sensor} of {len(faulty)} engines from step {fault_step}: first alert "
        f"{'never' if first is None else f'in window {first + 1} after the fault'}; alerts: {alerts}"
    )
    check_ms = statistics.median(timings) * 1000 if timings else float("nan")
    print(f"a 500-row window check takes {check_ms:.1f} ms (median)")
    return {
        "windows_checked": len(windows),
        "false_alarms": len(false_alarms),
        "false_alarm_rate": round(len(false_alarms) / max(1, len(windows)), 5),
        "shrinking_windows_checked": len(shrinking),
        "shrinking_false_alarms": len(shrinking_alarms),
        "fault_windows_to_alert": None if first is None else first + 1,
        "fault_alerts": alerts,
        "window_check_ms": round(check_ms, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schedules", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=3000, help="steps of the fleet that stays 100")
    args = parser.parse_args()
    print(json.dumps(measure(args.schedules, args.seed, args.steps)))


if __name__ == "__main__":
    main()
