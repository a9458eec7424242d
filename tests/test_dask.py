"""Training on Dask: the same features exactly, the same model with one worker, a close one with two.

The model's precision, stated: with one worker (its threads as single-node's), every booster is
the single-node booster tree for tree (the model text up to its parameters block, which names the
network: machines and port), so predictions, interval, metrics and drift reference are equal
exactly (tolerance 0). With two workers LightGBM's data-parallel learner bins each feature on one
worker's rows and bags each worker's rows: another model, whose CV RMSE the test holds within 10%
of the single-node one (measured here: 22.35 single-node, 22.03 on two workers; plain FD001, 12
engines, four folds: 11.81 and 12.38; 30 engines: 13.03 and 13.27; all 100 engines with the
default 600 rounds: 8.41 and 8.34)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from click.testing import CliRunner

from pitstop.cli import cli
from pitstop.platform import Platform
from pitstop.sim import shipped
from pitstop.training.cmapss import failures, telemetry
from pitstop.training.pipeline import train_on_lake
from tests.conftest import make_settings
from tests.test_training import regimed

FAST = {"num_boost_round": 60}
ENGINES = 12


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir whose lake holds the first FD001 engines run to failure, in six operating
    regimes and with a sensor missing now and then (a spec can learn regimes and fill values)."""
    root = tmp_path_factory.mktemp("dask") / "data"
    platform = Platform.open(make_settings(root, train_folds=4))
    try:
        train = regimed(telemetry(shipped("fd001_train").filter(pl.col("unit") <= ENGINES), "u"))
        train = train.with_columns(
            pl.when(pl.col("seq") % 37 == 0).then(None).otherwise(pl.col("s2")).alias("s2")
        )
        frame = train.with_columns(
            pl.col("ts").dt.date().alias("day"), pl.lit(None, pl.Int64).alias("bus_position")
        )
        platform.lake.append("telemetry", frame.to_arrow(), app_id="test", position=1)
        events = failures(train).with_columns(pl.lit("run to failure").alias("detail"))
        platform.lake.append("events", pa.Table.from_pylist(events.to_dicts()), app_id="test", position=1)
    finally:
        platform.close()
    return root


@pytest.fixture
def platform(fleet_dir: Path) -> Iterator[Platform]:
    p = Platform.open(make_settings(fleet_dir, train_folds=4))
    yield p
    p.close()


@pytest.fixture(scope="module")
def one_worker() -> Iterator[Any]:
    from pitstop.training.on_dask import dask_client

    with dask_client("local", 1, processes=False) as client:
        yield client


def trees(booster: Any) -> str:
    return str(booster.model_to_string()).split("end of trees")[0]


def test_features_computed_on_dask_equal_the_single_node_ones_exactly(
    platform: Platform, one_worker: Any
) -> None:
    from dataclasses import replace

    from pitstop.schema import TURBOFAN
    from pitstop.training.dask_parts import Labelling, LakeSource, build_part
    from pitstop.training.on_dask import _labels, _rows
    from pitstop.training.train import fit_spec, labelled_rows

    lake = platform.lake
    columns = ["machine_id", "ts", "seq", "bus_position", *TURBOFAN.sensor_names]
    readings, events = lake.read("telemetry", columns=columns), lake.read("events")
    spec = fit_spec(readings, replace(TURBOFAN.feature_spec, regime_count=6), 42, frozenset())
    assert spec.regimes is not None and spec.fill is not None  # what the client fits for every part
    single = labelled_rows(readings, events, spec, 125, 30, None)

    source = LakeSource(
        lake.path("telemetry"), lake.version(), lake.path("events"), lake.version("events"), tuple(columns)
    )
    machines = sorted(readings["machine_id"].unique().to_list())
    groups = [machines[:2], machines[2:7], machines[7:]]  # uneven machine groups, one task each
    parts = one_worker.map(build_part, groups, source=source, labelling=Labelling(spec, 125, 30, None))
    data, offsets = _labels(one_worker, parts, spec, 4, 42)
    X = _rows(one_worker, parts, offsets, np.arange(len(data.y)))

    assert [b - a for a, b in offsets] == [
        single.filter(pl.col("machine_id").is_in(g)).height for g in groups
    ]
    np.testing.assert_array_equal(X, single.select(spec.names).to_numpy())
    np.testing.assert_array_equal(data.y, single["rul"].to_numpy())
    np.testing.assert_array_equal(data.uncapped, single["rul_uncapped"].to_numpy().astype(np.float64))
    np.testing.assert_array_equal(data.machines, single["machine_id"].to_numpy())


def test_one_dask_worker_trains_the_single_node_model_tree_for_tree(
    platform: Platform, one_worker: Any
) -> None:
    single = train_on_lake(platform, params=FAST)
    dask = train_on_lake(platform, params=FAST, dask=one_worker)

    a, b = single.result.bundle, dask.result.bundle
    assert len(b.boosters) == 5  # the final model and four fold models
    for x, y in zip(a.boosters, b.boosters, strict=True):
        assert trees(x) == trees(y)
    rows = np.random.default_rng(0).normal(size=(50, len(a.spec.names)))  # the same trees, any rows
    for got, want in zip(b.predict(rows), a.predict(rows), strict=True):  # RUL, lower, upper
        np.testing.assert_array_equal(got, want)
    assert a.spec == b.spec
    assert a.metrics == b.metrics and a.interval == b.interval and a.reference == b.reference
    assert a.params == b.params
    assert dask.lineage == {**single.lineage, "compute": "dask", "dask_workers": "1"}
    assert dask.result.rows == single.result.rows


@pytest.mark.slow  # two worker processes start (about 30 s on a loaded 2-core machine)
@pytest.mark.heavy
def test_two_dask_workers_train_a_model_within_ten_percent_of_single_node(
    fleet_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import shutil

    from pitstop.training.on_dask import dask_client
    from pitstop.training.pipeline import register

    shutil.copytree(fleet_dir, tmp_path / "data")  # it registers a model: a private copy
    p = Platform.open(make_settings(tmp_path / "data", train_folds=2))  # three LightGBM fits, not five
    try:
        single = train_on_lake(p, params=FAST).result.bundle.metrics
        with dask_client("local", 2) as client:  # processes: one LightGBM network each
            two = train_on_lake(p, params=FAST, dask=client)
        registered = register(p, two, alias="challenger")
        tags = p.registry.client.get_run(p.registry.versions()[0]["run_id"]).data.tags
        assert tags["pitstop.compute"] == "dask" and tags["pitstop.dask_workers"] == "2"
        assert p.registry.load("challenger").version == registered.version  # served as any other
    finally:
        p.close()
    assert "LightGBM" not in capfd.readouterr().out  # the workers' network logs go to stderr
    metrics = two.result.bundle.metrics
    print(f"CV RMSE single-node {single['cv_rmse']:.3f}, two Dask workers {metrics['cv_rmse']:.3f}")
    assert metrics["train_rows"] == single["train_rows"]
    assert abs(metrics["cv_rmse"] - single["cv_rmse"]) < 0.10 * single["cv_rmse"]
    assert abs(metrics["cv_mae"] - single["cv_mae"]) < 0.10 * single["cv_mae"]


def test_pitstop_train_on_a_dask_scheduler_registers_the_model_with_its_compute_in_the_lineage(
    fleet_dir: Path, tmp_path: Path, one_worker: Any
) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(fleet_dir, data)
    address = one_worker.scheduler.address
    args = ["train", "--data-dir", str(data), "--dask", address]
    out = CliRunner().invoke(cli, args, env={"PITSTOP_TRAIN_FOLDS": "2"})  # three fits, not five
    assert out.exit_code == 0, out.output
    line = json.loads(out.stdout.strip().splitlines()[-1])
    assert line["version"] == "1" and line["train_machines"] == ENGINES
    p = Platform.open(make_settings(data))
    try:
        [version] = p.registry.versions()
        assert version["aliases"] == ["champion"]
        tags = p.registry.client.get_run(version["run_id"]).data.tags
        assert tags["pitstop.compute"] == "dask" and tags["pitstop.dask_workers"] == "1"
        model = p.registry.load("champion")  # served as any other model
        assert model.bundle.metrics["cv_rmse"] == line["cv_rmse"] and len(model.bundle.boosters) == 3
    finally:
        p.close()


def test_train_on_dask_without_the_scale_extra_is_a_clear_error(
    fleet_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if dask[distributed] were not installed
    out = CliRunner().invoke(cli, ["train", "--data-dir", str(fleet_dir), "--dask", "local"])
    assert out.exit_code == 2
    assert "error [dask_missing]" in out.output and "pitstop[scale]" in out.output


def test_tuning_is_refused_on_dask(fleet_dir: Path) -> None:
    out = CliRunner().invoke(cli, ["train", "--data-dir", str(fleet_dir), "--dask", "local", "--tune", "2"])
    assert out.exit_code == 2 and "--tune runs single-node" in out.output


def test_one_dask_worker_trains_the_single_node_model_of_a_fleet_in_hours_with_components(
    tmp_path: Path, one_worker: Any
) -> None:
    """The awkward pump fleet: hours, irregular sampling, regimes found in the settings, an optional
    sensor missing for long stretches (a learned fill), several lives a machine, two components."""
    from tests import pumpfleet

    history = pumpfleet.simulate(8, 1500, seed=11)
    readings, events = pumpfleet.write(tmp_path / "history", history)
    fleet = tmp_path / "pumps.toml"
    fleet.write_text(pumpfleet.FLEET_TOML)
    data = str(tmp_path / "data")
    for args in (
        ["fleet", "apply", str(fleet)],
        ["import", "readings", str(readings), "--machine-type", "pump"],
        ["import", "events", str(events)],
    ):
        assert CliRunner().invoke(cli, [*args, "--data-dir", data]).exit_code == 0
    p = Platform.open(make_settings(Path(data), train_folds=2))
    try:
        single = train_on_lake(p, params=FAST)
        dask = train_on_lake(p, params=FAST, dask=one_worker)
    finally:
        p.close()
    a, b = single.result.bundle, dask.result.bundle
    assert a.spec.regimes is not None and a.spec.fill is not None and len(a.components) == 2
    assert a.spec == b.spec and a.components == b.components
    assert a.component_model is not None and b.component_model is not None
    assert trees(a.component_model) == trees(b.component_model)
    for x, y in zip(a.boosters, b.boosters, strict=True):
        assert trees(x) == trees(y)
    assert a.metrics == b.metrics and a.interval == b.interval and a.reference == b.reference


def test_an_unreachable_scheduler_is_a_clear_error() -> None:
    from pitstop.errors import ServerError
    from pitstop.training.on_dask import dask_client
    from tests.conftest import free_port

    with pytest.raises(ServerError) as caught, dask_client(f"tcp://127.0.0.1:{free_port()}", timeout_s=1):
        pass
    assert caught.value.code == "dask_unreachable" and "--dask local" in caught.value.message


def test_dask_workers_read_a_lake_on_s3_and_train_the_single_node_model(
    tmp_path: Path, s3_endpoint: str, one_worker: Any
) -> None:
    from uuid import uuid4

    from pitstop.cluster.s3 import create_bucket

    bucket = f"lake-{uuid4().hex[:10]}"
    create_bucket(s3_endpoint, bucket)
    settings = make_settings(
        tmp_path / "data", lake_uri=f"s3://{bucket}/lake", s3_endpoint_url=s3_endpoint, train_folds=2
    )
    p = Platform.open(settings)
    try:
        assert not p.lake.location.is_local
        train = telemetry(shipped("fd001_train").filter(pl.col("unit") <= 6), "u")
        frame = train.with_columns(
            pl.col("ts").dt.date().alias("day"), pl.lit(None, pl.Int64).alias("bus_position")
        )
        p.lake.append("telemetry", frame.to_arrow(), app_id="test", position=1)
        events = failures(train).with_columns(pl.lit("run to failure").alias("detail"))
        p.lake.append("events", pa.Table.from_pylist(events.to_dicts()), app_id="test", position=1)
        single = train_on_lake(p, params=FAST).result.bundle
        dask = train_on_lake(p, params=FAST, dask=one_worker).result.bundle
    finally:
        p.close()
    for x, y in zip(single.boosters, dask.boosters, strict=True):
        assert trees(x) == trees(y)
    assert single.metrics == dask.metrics


def test_a_lake_the_workers_cannot_read_is_a_lake_error(platform: Platform, one_worker: Any) -> None:
    from pitstop.errors import LakeError
    from pitstop.training.dask_parts import Labelling, LakeSource, build_part

    missing = LakeSource("/nonexistent/telemetry", 1, "/nonexistent/events", 1, ("machine_id",))
    spec = platform.fleet.type_of("turbofan").feature_spec
    with pytest.raises(LakeError, match="a Dask worker cannot read lake table /nonexistent/telemetry"):
        one_worker.submit(build_part, ["u1"], missing, Labelling(spec, 125, 30, None)).result()
