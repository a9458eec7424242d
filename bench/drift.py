"""Drift benchmark: our drift check beside Evidently's data-drift preset, same data, same run.

50,000 reference rows and 50,000 current rows of 20 features (normal, uniform, skewed and
discrete columns; a few shifted in the current data, some by little). Both sides run the
two-sample KS test on every feature with the same family-wise rule: ours with p-values
Bonferroni-corrected against alpha = 0.05 (and no PSI floor), Evidently's ``DataDriftPreset``
with ``method="ks"`` and a per-column threshold of 0.05 / 20 (scipy's ``ks_2samp``, which at
these sizes takes the asymptotic p-value, ``kstwo.sf``). Each side is timed over ``--repeats``
runs, taken in turn (ours, Evidently, ours...) so both see the same load, median of each; wall
time (``ours_s``, ``evidently_s``) and this process's CPU time (``*_cpu_s``: steadier on a shared
machine, both sides run on one core). ``ours_prepared_s``: ours with the reference sorted once
(``SortedReference``, as a monitor holding its reference would), the current sample each time.
The verdicts must agree.

Then the live monitor on long healthy replays of the FD001 test engines (``drift_replay.py``):
the false-alarm rate per window checked, the windows to the first alert after a 3σ offset on one
sensor of a tenth of the engines, and the time a window check takes (``--replays 0`` skips it).

Evidently 0.7 does not import with pandas 3, so the benchmark has a venv of its own (from the
repository root; PYTHONPATH=src runs this checkout's Pitstop):

    python3 -m venv /work/venv-drift
    /work/venv-drift/bin/pip install evidently "pandas<3" ".[server]"
    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=src /work/venv-drift/bin/python bench/drift.py \
        [--rows 50000] [--features 20] [--repeats 5] [--replays 20]

``--replays 0`` needs only ``evidently "pandas<3" numpy scipy``. The last line is one JSON object:
ours_s, evidently_s, speedup, ours_cpu_s, evidently_cpu_s, cpu_speedup, ours_prepared_s,
agreement, false_alarm_rate (and more).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from pitstop.monitoring.drift import SortedReference, drift_between


def make_data(rows: int, features: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    kinds = ["normal", "uniform", "lognormal", "discrete"]
    ref = np.empty((rows, features))
    cur = np.empty((rows, features))
    for j in range(features):
        kind = kinds[j % len(kinds)]
        for out in (ref, cur):
            if kind == "normal":
                out[:, j] = rng.normal(10.0 + j, 1.0 + j / 10, rows)
            elif kind == "uniform":
                out[:, j] = rng.uniform(0.0, 5.0, rows)
            elif kind == "lognormal":
                out[:, j] = rng.lognormal(0.0, 0.6, rows)
            else:
                out[:, j] = rng.integers(0, 8, rows).astype(float)
    shifts = {1: 0.5, 4: 0.05, 6: 0.3, 9: 0.02, 14: 1.0}  # in units of the column's std
    for j, k in shifts.items():
        cur[:, j] += k * ref[:, j].std()
    cur[:, 11] *= 1.3  # a change of spread
    return ref, cur, [f"f{j}" for j in range(features)]


def ours(ref: np.ndarray | SortedReference, cur: np.ndarray, names: list[str]) -> dict[str, bool]:
    report = drift_between(ref, cur, names, alpha=0.05, psi_threshold=0.0, correction="bonferroni")
    return {d.name: d.drifted for d in report}


def evidently(ref: pd.DataFrame, cur: pd.DataFrame, threshold: float) -> dict[str, bool]:
    from evidently import Report
    from evidently.presets import DataDriftPreset

    snapshot = Report([DataDriftPreset(method="ks", threshold=threshold)]).run(
        current_data=cur, reference_data=ref
    )
    verdicts = {}
    for metric in snapshot.dict()["metrics"]:
        config = metric.get("config", {})
        if config.get("type", "").endswith("ValueDrift"):
            verdicts[config["column"]] = float(metric["value"]) < threshold  # K-S p-value
    return verdicts


def timed(sides: dict[str, Callable[[], dict[str, bool]]], repeats: int) -> dict[str, tuple[float, float]]:
    """Each side ``repeats`` times, in turn: its median wall and CPU seconds."""
    wall: dict[str, list[float]] = {name: [] for name in sides}
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, fn in sides.items():
            started, started_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - started_cpu)
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in sides}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--replays", type=int, default=20, help="healthy replay schedules (0: skip)")
    args = parser.parse_args()
    ref, cur, names = make_data(args.rows, args.features)
    ref_df, cur_df = pd.DataFrame(ref, columns=names), pd.DataFrame(cur, columns=names)
    threshold = 0.05 / len(names)
    ours_v, ev_v = ours(ref, cur, names), evidently(ref_df, cur_df, threshold)  # and warm both up
    prepared = SortedReference.of(ref)
    times = timed(
        {
            "ours": lambda: ours(ref, cur, names),
            "evidently": lambda: evidently(ref_df, cur_df, threshold),
            "prepared": lambda: ours(prepared, cur, names),
        },
        args.repeats,
    )
    (ours_s, ours_cpu), (ev_s, ev_cpu), (prepared_s, _) = times["ours"], times["evidently"], times["prepared"]
    missing = sorted(set(names) - set(ev_v))
    if missing:
        raise SystemExit(f"could not read Evidently's verdict for {missing}")
    if ours(prepared, cur, names) != ours_v:
        raise SystemExit("a sorted reference changed our verdicts")
    agree = sum(ours_v[n] == ev_v[n] for n in names) / len(names)
    drifted = sorted(n for n in names if ours_v[n])
    print(f"{args.rows:,} reference vs {args.rows:,} current rows x {len(names)} features")
    print(f"median of {args.repeats} runs each, taken in turn (wall | CPU of this process)")
    print(f"ours      {ours_s * 1000:9.1f} ms | {ours_cpu * 1000:9.1f} ms   drifted: {', '.join(drifted)}")
    print(
        f"evidently {ev_s * 1000:9.1f} ms | {ev_cpu * 1000:9.1f} ms   "
        f"drifted: {', '.join(sorted(n for n in names if ev_v[n]))}"
    )
    print(f"ours, the reference sorted once: {prepared_s * 1000:.1f} ms")
    print(
        f"ours is {ev_s / ours_s:.1f}x faster ({ev_cpu / ours_cpu:.1f}x in CPU time); "
        f"the verdicts agree on {agree:.0%} of features"
    )
    live: dict[str, object] = {}
    if args.replays > 0:
        import drift_replay  # beside this script

        live = drift_replay.measure(args.replays)
    print(
        json.dumps(
            {
                **live,
                "ours_s": round(ours_s, 4),
                "evidently_s": round(ev_s, 4),
                "speedup": round(ev_s / ours_s, 1),
                "ours_cpu_s": round(ours_cpu, 4),
                "evidently_cpu_s": round(ev_cpu, 4),
                "cpu_speedup": round(ev_cpu / ours_cpu, 1),
                "ours_prepared_s": round(prepared_s, 4),
                "agreement": agree,
                "drifted": drifted,
                "rows": args.rows,
                "features": len(names),
            }
        )
    )


if __name__ == "__main__":
    main()
