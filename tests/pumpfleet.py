"""A synthetic fleet Pitstop has never seen, for tests: centrifugal pumps.

Made to be awkward: time in hours with irregular sampling and downtime gaps, two operating
settings that put the pump in one of three regimes, two failure modes on two components (the
bearing: vibration and temperature; the seal: leak, pressure and current), an optional sensor that
is missing in long stretches, and machines that are repaired after a failure and run a second and
third life. Nothing in Pitstop knows these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

FLEET_TOML = """
[machine_types.pump]
time_unit = "hours"
description = "centrifugal pump"
[machine_types.pump.policy]
lead_time = 24
threshold = 72
[[machine_types.pump.sensors]]
name = "speed_rpm"
unit = "rpm"
low = 0
high = 3600
description = "shaft speed setpoint"
role = "setting"
[[machine_types.pump.sensors]]
name = "valve_pct"
unit = "%"
low = 0
high = 100
description = "discharge valve opening"
role = "setting"
[[machine_types.pump.sensors]]
name = "flow_m3h"
unit = "m3/h"
low = 0
high = 400
[[machine_types.pump.sensors]]
name = "discharge_bar"
unit = "bar"
low = 0
high = 25
[[machine_types.pump.sensors]]
name = "motor_a"
unit = "A"
low = 0
high = 200
[[machine_types.pump.sensors]]
name = "bearing_c"
unit = "degC"
low = -20
high = 150
[[machine_types.pump.sensors]]
name = "vibration"
unit = "mm/s"
low = 0
high = 60
[[machine_types.pump.sensors]]
name = "seal_leak"
unit = "l/h"
low = 0
high = 50
required = false
[[machine_types.pump.components]]
name = "bearing"
sensors = ["vibration", "bearing_c"]
procedure = "PM-2 replace the drive-end bearing"
[[machine_types.pump.components]]
name = "seal"
sensors = ["seal_leak", "discharge_bar", "motor_a"]
procedure = "PM-3 replace the mechanical seal"
"""

SENSORS = [
    "speed_rpm",
    "valve_pct",
    "flow_m3h",
    "discharge_bar",
    "motor_a",
    "bearing_c",
    "vibration",
    "seal_leak",
]
REGIMES = [(1500.0, 40.0), (2400.0, 70.0), (3000.0, 100.0)]
T0 = datetime(2025, 3, 1, tzinfo=UTC)


@dataclass
class PumpHistory:
    readings: pl.DataFrame
    events: pl.DataFrame


def simulate(machines: int, hours: float, seed: int, prefix: str = "P") -> PumpHistory:
    """Run ``machines`` pumps for ``hours`` each (their clocks start at random offsets)."""
    rng = np.random.default_rng(seed)
    frames, events = [], []
    for m in range(machines):
        machine_id = f"{prefix}{m:03d}"
        t = rng.uniform(0, 200)
        end = t + hours
        lives = {"bearing": rng.weibull(3.0) * 900 + 150, "seal": rng.weibull(2.5) * 1100 + 150}
        used = {"bearing": 0.0, "seal": 0.0}
        leak_sensor = rng.random() < 0.7  # some pumps never report the seal leak
        rows: list[np.ndarray] = []
        while t < end:
            # a run of operation: 8-60 hours, sampled every 0.3-1.7 hours, then downtime
            run = rng.uniform(8, 60)
            steps = rng.uniform(0.3, 1.7, size=int(run / 0.3) + 2)
            times = t + np.cumsum(steps)
            times = times[times < min(t + run, end)]
            if len(times) == 0:
                t += run
                continue
            regime = rng.integers(0, 3)
            elapsed = times - t
            health = {c: (used[c] + elapsed) / lives[c] for c in lives}
            cut, failing = len(times), None
            for c in lives:
                over = np.flatnonzero(health[c] >= 1.0)
                if len(over) and over[0] + 1 <= cut:
                    cut, failing = int(over[0]) + 1, c
            times, elapsed = times[:cut], elapsed[:cut]
            hb = np.clip(health["bearing"][:cut], 0, 1)
            hs = np.clip(health["seal"][:cut], 0, 1)
            n = len(times)
            speed, valve = REGIMES[regime]
            load = speed / 3000.0 * valve / 100.0
            flow = 300 * load * (1 - 0.15 * hs**2) + rng.normal(0, 4, n)
            discharge = 4 + 14 * (speed / 3000.0) ** 2 * (1 - 0.25 * hs**2) + rng.normal(0, 0.3, n)
            motor = 40 + 90 * load + 25 * hs**2 + rng.normal(0, 2.5, n)
            bearing_c = 35 + 20 * load + 35 * hb**3 + rng.normal(0, 1.5, n)
            vibration = 1.5 + 2.5 * load + 18 * hb**2.5 + rng.normal(0, 0.5, n)
            leak = 0.5 + 25 * hs**3 + rng.normal(0, 0.4, n)
            if not leak_sensor:
                leak[:] = np.nan
            else:
                leak[rng.random(n) < 0.25] = np.nan  # dropped messages
            block = np.column_stack(
                [
                    np.full(n, speed) + rng.normal(0, 5, n),
                    np.full(n, valve),
                    np.clip(flow, 0, 400),
                    np.clip(discharge, 0, 25),
                    np.clip(motor, 0, 200),
                    bearing_c,
                    np.clip(vibration, 0, 60),
                    np.clip(leak, 0, 50),
                ]
            )
            rows.append(np.column_stack([times, block]))
            for c in lives:
                used[c] += elapsed[-1]
            if failing is not None:
                events.append((machine_id, times[-1] + 0.05, "failure", failing))
                used[failing] = 0.0
                lives[failing] = rng.weibull(3.0 if failing == "bearing" else 2.5) * 1000 + 150
                t = times[-1] + rng.uniform(12, 48)  # repair
                events.append((machine_id, t - 0.5, "maintenance", failing))
            else:
                t = times[-1] + rng.choice([rng.uniform(4, 10), rng.uniform(10, 60)])  # downtime
        block = np.vstack(rows)
        frame = pl.DataFrame({"machine_id": [machine_id] * len(block), "_h": block[:, 0]})
        frame = frame.with_columns(
            pl.Series(name, block[:, i + 1]).fill_nan(None) for i, name in enumerate(SENSORS)
        )
        frames.append(frame)
    readings = pl.concat(frames)
    readings = readings.with_columns(
        (pl.lit(T0) + pl.duration(microseconds=(pl.col("_h") * 3.6e9).cast(pl.Int64))).alias("ts")
    ).select("machine_id", "ts", *SENSORS)
    ev = pl.DataFrame(events, schema=["machine_id", "_h", "kind", "component"], orient="row")
    ev = ev.with_columns(
        (pl.lit(T0) + pl.duration(microseconds=(pl.col("_h") * 3.6e9).cast(pl.Int64))).alias("ts"),
        pl.lit("").alias("detail"),
    ).select("machine_id", "ts", "kind", "component", "detail")
    return PumpHistory(readings, ev)


def write(folder: Path, history: PumpHistory) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    readings, events = folder / "readings.csv", folder / "events.csv"
    history.readings.write_csv(readings)
    history.events.write_csv(events)
    return readings, events
