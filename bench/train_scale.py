"""Training time at scale: the harvester demo fleet's history at 1x, 10x and 100x.

The reference fleet is ``pitstop demo --fleet harvesters``'s last season: 12 harvesters over 365
days (``pitstop.sim.harvester``, ~170k readings, ~10 minutes apart while running). Scale ``s``
simulates ``12 s`` harvesters the same way (seed 7, machine ``i`` is the same machine at every
scale); 100x is ~17M readings (``--max-rows`` keeps the first machines up to a cap). Readings
outside the fleet file's ranges are dropped (the importer quarantines them) and each machine's
readings are numbered (``seq``) as the lake numbers them.

Machines are split by machine (never by row): a seeded quarter is held out. The rest is trained
on with the platform's own path (``train_rul_model`` with the harvester type's targets and spec,
as ``train_on_lake`` builds them: derived RUL cap, horizons, hours, auto regimes, the optional
sensor). The test RMSE is over every labelled reading of the held-out machines (the platform
scores every reading as it arrives) against the capped RUL the model is trained for, in hours;
``rmse_near_failure`` is against the true RUL of the readings within the interval horizon of a
failure.

    python bench/train_scale.py [--scales 1 10 100] [--max-rows N] [--seed 42] [--max-train-rows N]
                                [--every-row]

``--max-train-rows 0`` trains on every row, the method before the sample (``training.rows``);
at 100x it needs more memory than this machine has (the features of every reading built at once,
the matrix copied per fold).

``--every-row`` also trains the reference the sample is judged against, in the same run: the same
ensemble (the same parameters, folds, members) fit on every labelled row, its features built a
group of machines at a time straight into one float64 matrix and binned once for all folds (as the
sample is; ``lightgbm.cv`` bins so too), without the drift profile and the component model, which
do not change the RUL predictions. The held-out machines are scored by both; the last line adds
``rmse_every_row`` and ``rmse_vs_every_row_pct``. At 100x on a 2-core host the reference trained
in 43 minutes (the whole run 56) with a peak RSS of 17.4 GiB. At 1x, where the platform itself
trains on every row (each fold binning its own rows), the two held-out RMSEs differ by 0.07%
(295.38 h, the reference; 295.60 h): the size of the binning difference alone.

Prints per size rows, train_s, rmse; the last line is one JSON object ``{"sizes": [...], ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import polars as pl

from pitstop.config import Settings
from pitstop.features import FeatureSpec
from pitstop.registry.bundle import ModelBundle
from pitstop.schema import shipped_fleet
from pitstop.sim.harvester import simulate
from pitstop.training import train_rul_model
from pitstop.training.pipeline import TypeTargets, training_options, type_spec, type_targets
from pitstop.training.rows import machine_chunks
from pitstop.training.train import (
    DEFAULT_PARAMS,
    Targets,
    _lgb_params,
    assemble_bundle,
    fit_ensemble,
    labelled_rows,
    prepared,
)

DEMO_MACHINES = 12  # pitstop.demo_harvesters.HISTORY_MACHINES
DEMO_DAYS = 365
SIM_SEED = 7
TEST_SHARE = 0.25


def fleet(scale: float, max_rows: int | None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The scaled fleet's readings (in range, numbered) and events."""
    mt = shipped_fleet("harvesters").type_of("harvester")
    history = simulate(round(DEMO_MACHINES * scale), DEMO_DAYS, seed=SIM_SEED, prefix="H-")
    readings = history.readings
    in_range = pl.all_horizontal(
        pl.col(s.name).is_null() | pl.col(s.name).is_between(s.low, s.high) for s in mt.sensors
    )
    readings = (
        readings.filter(in_range)
        .select("machine_id", "ts", *mt.sensor_names)
        .sort("machine_id", "ts")
        .with_columns(seq=pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over("machine_id"))
    )
    events = history.events
    if max_rows is not None and readings.height > max_rows:
        counts = readings.group_by("machine_id", maintain_order=True).len()
        keep = counts.filter(pl.col("len").cum_sum() <= max_rows)["machine_id"]
        readings = readings.filter(pl.col("machine_id").is_in(keep.implode()))
        events = events.filter(pl.col("machine_id").is_in(keep.implode()))
    return readings, events


def split(machines: list[str], seed: int) -> set[str]:
    """The held-out machines: a seeded quarter."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(sorted(machines))
    return set(order[: max(1, round(TEST_SHARE * len(order)))].tolist())


LABELS = ("machine_id", "rul", "rul_uncapped", "fails_within", "censored", "failure_component")


def every_row(
    telemetry: pl.DataFrame,
    events: pl.DataFrame,
    spec: FeatureSpec,
    targets: TypeTargets,
    options: dict[str, Any],
    rows: int,
    machines: int,
) -> ModelBundle:
    """The every-row reference (see the module's doc): ``rows`` labelled rows of ``machines``
    machines in ``telemetry`` (the counts the sampled training saw: the same grouped folds), their
    features (a fitted ``spec``) built a group of machines at a time into one matrix, the
    ensemble of ``options`` (the default parameters) fit on all of them."""
    X = np.empty((rows, len(spec.names)))
    labels, filled = [], 0
    for chunk in machine_chunks(telemetry):
        ids = pl.Series(chunk, dtype=pl.String).implode()
        part = labelled_rows(
            telemetry.filter(pl.col("machine_id").is_in(ids)),
            events.filter(pl.col("machine_id").is_in(ids)),
            spec,
            targets.rul_cap,
            targets.failure_horizon,
            targets.unit_seconds,
        )
        if filled + part.height > rows:
            raise RuntimeError(f"more labelled rows than the {rows:,} the sampled training counted")
        X[filled : filled + part.height] = part.select(spec.names).to_numpy()
        labels.append(part.select(LABELS))
        filled += part.height
        del part
    if filled != rows:
        raise RuntimeError(f"{filled:,} labelled rows, the sampled training counted {rows:,}")
    folds, seed = int(options["folds"]), int(options["seed"])
    data = prepared(spec, X, pl.concat(labels), folds, seed, weight=np.ones(rows), total=rows)
    del X, labels
    if len(np.unique(data.machines)) != machines:
        raise RuntimeError(f"{len(np.unique(data.machines))} machines, the sampled training had {machines}")
    p = {**DEFAULT_PARAMS, **options.get("params", {})}
    rounds = int(p.pop("num_boost_round"))
    lgb_params = _lgb_params(p, seed)
    started = time.perf_counter()

    def progress(step: str, done: int, total: int) -> None:
        print(f"  every row: {step} ({done}/{total}) at {time.perf_counter() - started:.0f} s", flush=True)

    oof, boosters = fit_ensemble(data, folds, lgb_params, rounds, progress)
    t = Targets(
        targets.rul_cap,
        folds,
        float(options["coverage"]),
        targets.interval_horizon,
        targets.failure_horizon,
        targets.unit_seconds,
    )
    return assemble_bundle(data, oof, boosters, lgb_params, rounds, t, None, {})


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def peak_rss_gib() -> float:
    """This process's peak resident memory so far, in GiB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def run(
    scale: float, max_rows: int | None, seed: int, max_train_rows: int | None, reference: bool = False
) -> dict[str, Any]:
    mt = shipped_fleet("harvesters").type_of("harvester")
    t0 = time.perf_counter()
    readings, events = fleet(scale, max_rows)
    sim_s = time.perf_counter() - t0
    held = split(readings["machine_id"].unique().to_list(), seed)
    is_test = pl.col("machine_id").is_in(list(held))
    train_tel, test_tel = readings.filter(~is_test), readings.filter(is_test)
    train_ev, test_ev = events.filter(~is_test), events.filter(is_test)
    readings_in_training = train_tel.height
    del readings

    settings = Settings()
    targets = type_targets(mt, settings, train_tel, train_ev)
    t1, c1 = time.perf_counter(), time.process_time()
    spec = type_spec(mt, train_tel, seed)
    options = training_options(mt, settings, targets, seed)
    if max_train_rows is not None:
        options["max_train_rows"] = max_train_rows or None
    result = train_rul_model(train_tel, train_ev, spec, **options)
    train_s, train_cpu_s = time.perf_counter() - t1, time.process_time() - c1
    bundle = result.bundle
    ref: dict[str, Any] = {}
    if reference:
        t2, c2 = time.perf_counter(), time.process_time()
        peak = peak_rss_gib()  # the sample's run
        ref_bundle = every_row(
            train_tel, train_ev, bundle.spec, targets, options, result.rows, result.machines
        )
        ref["every_row_train_s"] = round(time.perf_counter() - t2, 2)
        ref["every_row_train_cpu_s"] = round(time.process_time() - c2, 1)
    del train_tel, train_ev
    # The held-out machines scored a group at a time: at 100x their feature matrix alone would
    # be ~6 GiB; a row's features depend only on its own machine's readings and events.
    parts: list[tuple[np.ndarray, ...]] = []
    for chunk in machine_chunks(test_tel):
        ids = pl.Series(chunk, dtype=pl.String).implode()
        ev = test_ev.filter(pl.col("machine_id").is_in(ids))
        test = labelled_rows(
            test_tel.filter(pl.col("machine_id").is_in(ids)),
            ev,
            bundle.spec,
            targets.rul_cap,
            targets.failure_horizon,
            targets.unit_seconds,
        )
        features = test.select(bundle.spec.names).to_numpy()
        rul, lower, upper = bundle.predict(features)
        ref_rul = ref_bundle.predict(features)[0] if reference else np.full(len(rul), np.nan)
        y = test["rul"].to_numpy().astype(np.float64)
        truth = test["rul_uncapped"].to_numpy().astype(np.float64)
        parts.append((y, truth, rul, lower, upper, ref_rul))
        del test, features
    y, truth, rul, lower, upper, ref_rul = (np.concatenate(a) for a in zip(*parts, strict=True))
    near = ~np.isnan(truth) & (truth <= targets.interval_horizon)
    if reference:
        ref["rmse_every_row"] = round(rmse(y, ref_rul), 3)
        ref["rmse_near_failure_every_row"] = round(rmse(truth[near], ref_rul[near]), 3)
        ref["rmse_vs_every_row_pct"] = round(100 * (rmse(y, rul) / rmse(y, ref_rul) - 1), 2)
        ref["every_row_peak_rss_gib"] = peak_rss_gib()
    else:
        peak = peak_rss_gib()
    return {
        "scale": scale,
        "rows": result.rows,
        "machines": result.machines,
        "train_s": round(train_s, 2),
        "train_cpu_s": round(train_cpu_s, 1),  # both cores' CPU seconds: steadier on a busy machine
        "readings": readings_in_training,
        "rmse": round(rmse(y, rul), 3),
        "rmse_near_failure": round(rmse(truth[near], rul[near]), 3),
        "coverage_near_failure": round(
            float(np.mean((truth[near] >= lower[near]) & (truth[near] <= upper[near]))), 3
        ),
        "test_rows": len(y),
        "test_machines": len(held),
        "cv_rmse": round(bundle.metrics["cv_rmse"], 3),
        "rul_cap_h": targets.rul_cap,
        "members": len(bundle.boosters),
        "max_train_rows": bundle.params.get("max_train_rows", "all"),
        "simulate_s": round(sim_s, 1),
        "peak_rss_gib": peak,  # with --every-row: before the reference
        **ref,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[1, 10, 100])
    parser.add_argument(
        "--max-rows", type=int, default=None, help="keep the first machines up to this many readings"
    )
    parser.add_argument(
        "--max-train-rows",
        type=int,
        default=None,
        help="train_rul_model's sample budget (default: its own; 0: every row, the method before sampling)",
    )
    parser.add_argument(
        "--every-row",
        action="store_true",
        help="also train the every-row reference and compare the held-out RMSE (100x: ~45 min, ~17 GiB)",
    )
    parser.add_argument("--seed", type=int, default=42, help="training seed and the hold-out split")
    args = parser.parse_args()
    sizes = []
    for scale in args.scales:
        r = run(scale, args.max_rows, args.seed, args.max_train_rows, args.every_row)
        sizes.append(r)
        print(
            f"{scale:g}x: {r['rows']:,} training rows of {r['machines']} machines, "
            f"trained in {r['train_s']:.1f} s "
            f"({r['train_cpu_s']:.0f} CPU s), "
            f"test RMSE {r['rmse']:.2f} h ({r['test_machines']} held-out machines, "
            f"{r['test_rows']:,} readings), "
            f"near failure {r['rmse_near_failure']:.2f} h, peak RSS {r['peak_rss_gib']:.1f} GiB",
            flush=True,
        )
        if args.every_row:
            print(
                f"  every row: trained in {r['every_row_train_s']:.1f} s, "
                f"test RMSE {r['rmse_every_row']:.2f} h (the sample's {r['rmse_vs_every_row_pct']:+.2f}%), "
                f"near failure {r['rmse_near_failure_every_row']:.2f} h, "
                f"peak RSS {r['every_row_peak_rss_gib']:.1f} GiB",
                flush=True,
            )
    if len(sizes) > 1:
        a, b = sizes[0], sizes[-1]
        growth = (b["train_s"] / a["train_s"]) / (b["rows"] / a["rows"])
        print(f"training time grows {growth:.2f}x as fast as the rows ({a['scale']:g}x to {b['scale']:g}x)")
    print(json.dumps({"sizes": sizes, "cpus": os.cpu_count(), "seed": args.seed}))


if __name__ == "__main__":
    main()
