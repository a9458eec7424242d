"""Edge scoring: the agent's numpy evaluator, its verified model cache, the device routes that serve
the champion, and alerts raised offline that match what the server decides once the link is back."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import lightgbm as lgb
import numpy as np
import pytest
from fastapi.testclient import TestClient

from pitstop.agent.edge import EdgeAlert, EdgeScorer, fetch_model, load_cached, raise_alert
from pitstop.agent.edge_model import EdgeModel
from pitstop.agent.trees import TreeEnsemble, parse_model
from pitstop.demo import TOKENS_FILE
from pitstop.errors import ArtifactIntegrityError, ModelError
from pitstop.features import FeatureSpec, OnlineFeatures, build_features
from pitstop.ingest.devices import DeviceRegistry
from pitstop.maintenance.policy import RiskPolicy
from pitstop.platform import Platform
from pitstop.processor import Processor
from pitstop.schema import TURBOFAN
from pitstop.sim import shipped
from pitstop.store import Prediction, WorkOrder
from tests.conftest import admin_headers, free_port

MACHINE = "eng-031"  # unit 31 of FD001's test set ends 8 cycles before failure: its late cycles are at risk


# ---------------------------------------------------------------- the evaluator


def _thresholds(booster: lgb.Booster) -> list[tuple[int, float]]:
    """Every (feature, threshold) split of a model."""
    out = []
    for tree in booster.dump_model()["tree_info"]:
        stack = [tree["tree_structure"]]
        while stack:
            node = stack.pop()
            if "split_feature" in node:
                out.append((node["split_feature"], float(node["threshold"])))
                stack += [node["left_child"], node["right_child"]]
    return out


def _hard_rows(booster: lgb.Booster, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rows with NaN, zeros, ±1e-36 and values exactly on split thresholds."""
    rows = x[:300].copy()
    rows[::3, 1] = np.nan
    rows[1::4, 2] = 0.0
    rows[2::5, 3] = 1e-36
    rows[3::7, 0] = -1e-36
    rows[:20] = np.nan
    for i, (feature, threshold) in enumerate(_thresholds(booster)[:200]):
        rows[20 + i % 280, feature] = threshold
    return rows


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"zero_as_missing": True},
        {"use_missing": False},
        {"objective": "poisson"},
        {"objective": "regression", "reg_sqrt": True},
        {"boosting": "rf", "bagging_fraction": 0.5, "bagging_freq": 1},
    ],
    ids=["nan-missing", "zero-missing", "no-missing", "poisson", "sqrt", "random-forest"],
)
def test_the_numpy_evaluator_equals_lightgbm_on_nan_zero_and_threshold_values(params: dict[str, Any]) -> None:
    rng = np.random.default_rng(7)
    x = rng.random((1500, 6)) * 10
    x[::9, 1] = np.nan
    x[::6, 2] = 0.0
    y = x[:, 0] * 3 + np.nan_to_num(x[:, 1]) + (x[:, 2] == 0) * 5 + rng.random(1500)
    booster = lgb.train(
        {"objective": "regression", "verbose": -1, "num_leaves": 15, "seed": 1, **params},
        lgb.Dataset(x, y),
        num_boost_round=60,
    )
    ensemble = TreeEnsemble([parse_model(booster.model_to_string())])
    rows = _hard_rows(booster, x, rng)
    expected = booster.predict(rows)
    got = np.array([ensemble.predict(r)[0] for r in rows])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)


def test_single_leaf_trees_are_evaluated() -> None:
    x = np.arange(40, dtype=float).reshape(20, 2)
    booster = lgb.train(
        {"objective": "regression", "verbose": -1, "min_data_in_leaf": 50}, lgb.Dataset(x, x[:, 0]), 3
    )
    assert "num_leaves=1" in booster.model_to_string()
    got = TreeEnsemble([parse_model(booster.model_to_string())]).predict(x[0])[0]
    assert got == pytest.approx(booster.predict(x[:1])[0], abs=1e-12)


def test_categorical_splits_linear_trees_and_multiclass_are_refused() -> None:
    rng = np.random.default_rng(0)
    x = np.c_[rng.integers(0, 5, 500), rng.random(500)]
    y = x[:, 0] * 2 + x[:, 1]
    categorical = lgb.train(
        {"objective": "regression", "verbose": -1}, lgb.Dataset(x, y, categorical_feature=[0]), 5
    )
    with pytest.raises(ModelError, match="categorical"):
        parse_model(categorical.model_to_string())
    linear = lgb.train({"objective": "regression", "verbose": -1, "linear_tree": True}, lgb.Dataset(x, y), 5)
    with pytest.raises(ModelError, match="linear"):
        parse_model(linear.model_to_string())
    multi = lgb.train(
        {"objective": "multiclass", "num_class": 3, "verbose": -1}, lgb.Dataset(x, x[:, 0] % 3), 3
    )
    with pytest.raises(ModelError, match="multiclass"):
        parse_model(multi.model_to_string())


# ---------------------------------------------------------------- the champion, over the device routes


@pytest.fixture
def proc(trained: Platform) -> Processor:
    p = Processor(trained)
    p.bootstrap()
    return p


@pytest.fixture
def tokens(trained: Platform) -> dict[str, str]:
    found: dict[str, str] = json.loads((trained.settings.data_dir / TOKENS_FILE).read_text())
    return found


@pytest.fixture
def server(trained: Platform, proc: Processor) -> Iterator[TestClient]:
    from pitstop.web import create_app

    with TestClient(create_app(trained, proc)) as c:
        yield c


def device(server: TestClient, token: str | None) -> TestClient:
    """The same app, as a device: its token (or none) on every request."""
    server.headers["Authorization"] = f"Bearer {token}" if token else ""
    return server


def readings(machine: str, unit: int, start: int = 0, n: int = 10_000) -> list[dict[str, Any]]:
    """FD001 test unit ``unit`` as a device's readings, one a minute, the last a minute ago."""
    rows = shipped("fd001_test").filter(unit=unit).sort("cycle").slice(start, n).to_dicts()
    now = datetime.now(UTC).replace(microsecond=0)
    return [
        {
            "machine_id": machine,
            "ts": (now - timedelta(minutes=len(rows) - i)).isoformat(),
            "seq": int(r["cycle"]),
            "values": {k: r[k] for k in TURBOFAN.sensor_names},
        }
        for i, r in enumerate(rows)
    ]


def as_rows(batch: list[dict[str, Any]]) -> list[tuple[int, int, dict[str, float]]]:
    return [
        (b["seq"], int(datetime.fromisoformat(b["ts"]).timestamp() * 1_000_000), b["values"]) for b in batch
    ]


def test_the_device_route_describes_its_types_champion_and_serves_its_files_as_registered(
    server: TestClient, trained: Platform, tokens: dict[str, str]
) -> None:
    assert device(server, None).get("/api/v1/agent/model").status_code == 401
    assert device(server, "pst_nope").get("/api/v1/agent/model").json()["error"]["code"] == "invalid_token"
    info = device(server, tokens[MACHINE]).get("/api/v1/agent/model").json()
    assert info["machine_id"] == MACHINE and info["machine_type"] == TURBOFAN.name
    assert info["version"] == trained.scorer.model.version and info["alias"] == "champion"
    tags = {v["version"]: v["tags"] for v in trained.registry.versions()}
    assert info["manifest_sha256"] == tags[info["version"]]["pitstop.manifest_sha256"]
    assert info["policy"]["threshold"] == trained.policy_for(TURBOFAN.name).threshold
    import hashlib

    manifest = server.get("/api/v1/agent/model/files/manifest.json").content
    assert hashlib.sha256(manifest).hexdigest() == info["manifest_sha256"]
    for name, digest in info["files"].items():
        assert hashlib.sha256(server.get(f"/api/v1/agent/model/files/{name}").content).hexdigest() == digest
    other = device(server, tokens["eng-002"]).get("/api/v1/agent/model").json()
    assert other["machine_id"] == "eng-002" and other["version"] == info["version"]
    missing = server.get("/api/v1/agent/model/files/mlflow.db")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_file_not_found"
    moved = server.get("/api/v1/agent/model/files/model.txt", params={"version": "999"})
    assert moved.status_code == 409 and moved.json()["error"]["code"] == "model_changed"


def test_a_type_without_a_champion_is_a_404(platform: Platform) -> None:
    from pitstop.web import create_app

    _, token = DeviceRegistry(platform.db).add("new-001", TURBOFAN.name)
    with TestClient(create_app(platform), headers={"Authorization": f"Bearer {token}"}) as c:
        r = c.get("/api/v1/agent/model")
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        assert fetch_model(c, platform.settings.data_dir / "agent-cache") is None


def test_the_edge_model_predicts_what_the_bundle_predicts_on_real_feature_rows(
    trained: Platform, tmp_path: Path
) -> None:
    version = trained.scorer.model.version
    digest = trained.registry.download_version(version, tmp_path / "files")
    edge = EdgeModel.load(tmp_path / "files", digest, version=version)
    bundle = trained.scorer.model.bundle
    assert edge.spec == bundle.spec
    telemetry = trained.lake.read("telemetry")
    some = telemetry["machine_id"].unique(maintain_order=True).to_list()[:3]
    telemetry = telemetry.filter(telemetry["machine_id"].is_in(some))
    x = build_features(telemetry, bundle.spec).select(bundle.spec.names).to_numpy()[:400].copy()
    x[::5, 3] = np.nan  # missing values
    x[::7, :] = np.nan
    for i, booster in enumerate(bundle.boosters):  # values exactly on split thresholds
        for j, (feature, threshold) in enumerate(_thresholds(booster)[:60]):
            x[(i * 60 + j) % len(x), feature] = threshold
    expected = bundle.predict(x)
    got = edge.predict(x)
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_allclose(g, e, rtol=0, atol=1e-9)
    one = [bundle.predict(x[k : k + 1]) for k in range(0, 40, 7)]  # the single-row fast path too
    for k, row in zip(range(0, 40, 7), one, strict=True):
        np.testing.assert_allclose([v[0] for v in edge.predict(x[k : k + 1])], [v[0] for v in row], atol=1e-9)
    start = time.perf_counter()
    for k in range(100):
        edge.ensemble.predict(x[k])
    assert (time.perf_counter() - start) / 100 < 2e-3  # one row of the ensemble: well under 2 ms here


def _saved(trained: Platform, folder: Path) -> str:
    return trained.registry.download_version(trained.scorer.model.version, folder)


def test_a_tampered_file_a_pickle_or_another_manifest_is_refused(trained: Platform, tmp_path: Path) -> None:
    digest = _saved(trained, tmp_path / "ok")
    EdgeModel.load(tmp_path / "ok", digest)
    shutil.copytree(tmp_path / "ok", tmp_path / "tampered")
    model = tmp_path / "tampered" / "model.txt"
    model.write_text(model.read_text().replace("leaf_value=", "leaf_value=1", 1))
    with pytest.raises(ArtifactIntegrityError, match=r"model\.txt has sha256"):
        EdgeModel.load(tmp_path / "tampered", digest)
    shutil.copytree(tmp_path / "ok", tmp_path / "pickled")
    (tmp_path / "pickled" / "model.pkl").write_bytes(b"\x80\x04.")
    with pytest.raises(ArtifactIntegrityError, match="pickled"):
        EdgeModel.load(tmp_path / "pickled", digest)
    shutil.copytree(tmp_path / "ok", tmp_path / "manifest")
    manifest = tmp_path / "manifest" / "manifest.json"
    manifest.write_text(manifest.read_text() + " ")  # the same files, a manifest the registry did not record
    with pytest.raises(ArtifactIntegrityError, match="registry recorded"):
        EdgeModel.load(tmp_path / "manifest", digest)


def test_the_model_is_fetched_once_per_version_and_scored_from_the_cache_offline(
    server: TestClient, tokens: dict[str, str], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    first = fetch_model(device(server, tokens[MACHINE]), cache)
    assert first is not None and first.policy.threshold > 0
    folder = next(p for p in cache.iterdir() if p.is_dir())
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    again = fetch_model(server, cache)  # the same version: the cached files, not downloaded again
    assert again is not None and again.version == first.version
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps
    with httpx.Client(base_url=f"http://127.0.0.1:{free_port()}", timeout=2) as dead:
        offline = fetch_model(dead, cache)  # the server is unreachable: the cache, verified
        assert offline is not None and offline.version == first.version
        assert offline.manifest_sha256 == first.manifest_sha256 and offline.policy == first.policy
        (folder / "model.txt").write_text("tree\n")  # altered on disk: refused, not scored with
        with pytest.raises(ArtifactIntegrityError):
            fetch_model(dead, cache)
        assert fetch_model(dead, tmp_path / "empty") is None  # nothing cached
    healed = fetch_model(server, cache)  # online again: the altered cache is downloaded afresh
    assert healed is not None and load_cached(cache) is not None


# ---------------------------------------------------------------- parity with the server, alerts


def test_edge_features_and_scores_equal_the_servers_for_the_same_readings(
    server: TestClient, trained: Platform, proc: Processor, tokens: dict[str, str], tmp_path: Path
) -> None:
    model = fetch_model(device(server, tokens[MACHINE]), tmp_path / "cache")
    assert model is not None
    scorer = EdgeScorer(model, MACHINE)
    batch = readings(MACHINE, 31)
    agent_features, agent_scores = {}, {}
    for row in as_rows(batch):  # the agent: one reading per observe
        scorer.observe([row], online=True)
        assert scorer.last is not None and scorer.features is not None
        agent_features[row[0]] = scorer.features
        agent_scores[row[0]] = (scorer.last.rul, scorer.last.lower, scorer.last.upper)
    for i in range(0, len(batch), 17):  # the server: micro-batches, scored at each one's latest reading
        assert server.post("/api/v1/readings", json=batch[i : i + 17]).status_code == 202
        proc.run_once()
    served = server.get(f"/api/v1/machines/{MACHINE}/predictions", headers=admin_headers(trained)).json()
    assert len(served["seq"]) == -(-len(batch) // 17)
    for seq, rul, lower, upper in zip(
        served["seq"], served["rul"], served["rul_lower"], served["rul_upper"], strict=True
    ):
        np.testing.assert_allclose(agent_scores[seq], (rul, lower, upper), rtol=0, atol=1e-9)
    telemetry = trained.lake.read("telemetry", machine_ids=[MACHINE])
    offline = build_features(telemetry, model.spec)
    assert offline["seq"].to_list() == [b["seq"] for b in batch]
    for seq, row in zip(offline["seq"], offline.select(model.spec.names).to_numpy(), strict=True):
        np.testing.assert_array_equal(agent_features[seq], row)  # settled: equal exactly


def test_an_alert_is_raised_offline_and_not_online(
    server: TestClient, tokens: dict[str, str], tmp_path: Path
) -> None:
    model = fetch_model(device(server, tokens[MACHINE]), tmp_path / "cache")
    assert model is not None
    rows = as_rows(readings(MACHINE, 31))
    online, offline = EdgeScorer(model, MACHINE), EdgeScorer(model, MACHINE)
    assert [a for r in rows for a in online.observe([r], online=True)] == []
    alerts = [a for r in rows for a in offline.observe([r], online=False)]
    assert alerts and alerts[0].lower < model.policy.threshold and alerts[0].machine_id == MACHINE
    assert alerts[0].version == model.version and alerts[0].threshold == model.policy.threshold
    assert online.snapshot() == offline.snapshot()  # the same features and policy state either way


def test_a_restored_scorer_continues_where_the_killed_one_stopped(
    server: TestClient, tokens: dict[str, str], tmp_path: Path
) -> None:
    model = fetch_model(device(server, tokens[MACHINE]), tmp_path / "cache")
    assert model is not None
    rows = as_rows(readings(MACHINE, 31))
    whole = EdgeScorer(model, MACHINE)
    whole_alerts = whole.observe(rows, online=False)
    first = EdgeScorer(model, MACHINE)
    alerts = first.observe(rows[:100], online=False)
    second = EdgeScorer(model, MACHINE, state=first.snapshot())
    alerts += second.observe(rows[100:], online=False)
    assert alerts == whole_alerts and second.last == whole.last


def _step_model(spec: FeatureSpec) -> EdgeModel:
    """A one-split model: RUL 10 when the sensor's last value is at most 50, else 500."""
    names = spec.names
    text = "\n".join(
        [
            "tree",
            "version=v4",
            "num_class=1",
            "num_tree_per_iteration=1",
            f"max_feature_idx={len(names) - 1}",
            "objective=regression",
            f"feature_names={' '.join(names)}",
            "",
            "Tree=0",
            "num_leaves=2",
            "num_cat=0",
            f"split_feature={names.index('s__last')}",
            "threshold=50",
            "decision_type=2",
            "left_child=-1",
            "right_child=-2",
            "leaf_value=10 500",
            "is_linear=0",
            "shrinkage=1",
            "",
            "end of trees",
        ]
    )
    return EdgeModel("1", "", spec, {"lower": -5.0, "upper": 5.0}, TreeEnsemble([parse_model(text)]))


def test_after_an_alert_the_device_rearms_by_hysteresis_and_alerts_again() -> None:
    spec = FeatureSpec(sensors=("s",), windows=(2,), stats=("mean",))
    policy = RiskPolicy(lead_time=20, threshold=35, hysteresis=10)
    scorer = EdgeScorer(_step_model(spec), "m-1", policy=policy)
    values = [100, 10, 10, 100, 10, 100, 10]  # low, still low, back up, low, up, low while online
    online = [False, False, False, False, False, False, True]
    fired = [
        alert.seq
        for seq, (v, link) in enumerate(zip(values, online, strict=True))
        for alert in scorer.observe([(seq, seq * 60_000_000, {"s": float(v)})], online=link)
    ]
    assert fired == [1, 4]  # once per dip, none while online
    assert scorer.last is not None and scorer.last.lower == 5.0


def test_the_hook_gets_the_alert_and_a_failing_hook_is_only_logged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    alert = EdgeAlert("h-7", 41, 1_700_000_000_000_000, 90.5, 70.25, 110.0, 120.0, "3")
    out = tmp_path / "got.json"
    script = (
        "import json, os, sys; "
        f"json.dump({{'stdin': sys.stdin.read(), 'lower': os.environ['PITSTOP_ALERT_LOWER'], "
        f"'machine': os.environ['PITSTOP_ALERT_MACHINE_ID']}}, open({str(out)!r}, 'w'))"
    )
    raise_alert(alert, f"{sys.executable} -c {subprocess.list2cmdline([script])}")
    line = json.loads(capsys.readouterr().out.strip())
    assert line == alert.to_dict() and line["ts"].startswith("2023-11-14T22:13:20")
    got = json.loads(out.read_text())
    assert json.loads(got["stdin"]) == alert.to_dict() and got == {**got, "lower": "70.25", "machine": "h-7"}
    raise_alert(alert, f"{tmp_path}/no-such-hook")  # missing: logged
    raise_alert(alert, f"{sys.executable} -c 'import sys; sys.exit(3)'")  # fails: logged
    raise_alert(alert, f"{sys.executable} -c 'import time; time.sleep(5)'", timeout_s=0.2)  # hangs: logged
    assert len([r for r in caplog.records if "alert hook" in r.getMessage()]) == 3


def test_a_dead_zone_of_an_hour_raises_the_alert_the_server_raises_afterwards(
    server: TestClient, trained: Platform, proc: Processor, tokens: dict[str, str], tmp_path: Path
) -> None:
    """The harvester in the rows: an hour without a link (simulated clock, a reading a minute).
    The agent alerts on its own; once the link is back the server, given the same readings,
    opens a work order for the machine at or after the alert's reading, and where both scored a
    reading they agree."""
    cache = tmp_path / "cache"
    model = fetch_model(device(server, tokens[MACHINE]), cache)  # fetched while the link was up
    assert model is not None
    batch = readings(MACHINE, 31)
    before, dead_zone = batch[:-60], batch[-60:]  # the last hour: out of coverage
    scorer = EdgeScorer(model, MACHINE)
    assert scorer.observe(as_rows(before), online=True) == []
    for i in range(0, len(before), 50):
        assert server.post("/api/v1/readings", json=before[i : i + 50]).status_code == 202
        proc.run_once()
    with trained.db.session() as s:
        assert s.query(WorkOrder).filter_by(machine_id=MACHINE).count() == 0
    with httpx.Client(base_url=f"http://127.0.0.1:{free_port()}", timeout=1) as dead:
        restarted = fetch_model(dead, cache)  # the agent rebooted in the dead zone: the cache
        assert restarted is not None
    scorer = EdgeScorer(restarted, MACHINE, state=scorer.snapshot())
    alerts = []
    for row in as_rows(dead_zone):
        alerts += scorer.observe([row], online=False)
        agent_last = scorer.last
        assert agent_last is not None
    assert len(alerts) == 1
    alert = alerts[0]
    # the link is back: the buffered hour goes out in one batch, the server scores its latest reading
    assert server.post("/api/v1/readings", json=dead_zone).status_code == 202
    proc.run_once()
    with trained.db.session() as s:
        orders = s.query(WorkOrder).filter_by(machine_id=MACHINE).all()
        assert len(orders) == 1 and orders[0].seq is not None and orders[0].seq >= alert.seq
        assert orders[0].rul_lower is not None and orders[0].rul_lower < model.policy.threshold
    served = server.get(f"/api/v1/machines/{MACHINE}/predictions", headers=admin_headers(trained)).json()
    assert served["seq"][-1] == agent_last.seq == dead_zone[-1]["seq"]
    np.testing.assert_allclose(
        (agent_last.rul, agent_last.lower, agent_last.upper),
        (served["rul"][-1], served["rul_lower"][-1], served["rul_upper"][-1]),
        rtol=0,
        atol=1e-9,
    )


def test_edge_scoring_imports_none_of_the_servers_dependencies() -> None:
    heavy = ("mlflow", "polars", "deltalake", "pyarrow", "fastapi", "starlette", "sqlalchemy", "alembic")
    heavy += ("lightgbm", "scipy", "numba", "pandas")
    code = (
        "import sys, pitstop.agent.edge, pitstop.agent.edge_model, pitstop.features.online, "
        "pitstop.maintenance.policy, pitstop.registry.interval; "
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# ---------------------------------------------------------------- the agent itself, through a dead zone


def _wait(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_an_agent_rebooted_in_a_dead_zone_alerts_and_the_server_opens_the_same_order_afterwards(
    trained: Platform, tokens: dict[str, str], tmp_path: Path
) -> None:
    """The issue's test: an hour out of coverage (one reading a minute, their own timestamps). The
    agent (the real runner, over HTTP) fetched the model while the link was up, reboots in the
    dead zone, scores from its cache and raises the alert through its hook; when the link is back
    the server, given the same readings, opens a work order for the machine at or after the
    alert's reading, with the agent's numbers for the reading both scored."""
    from pitstop.agent.runner import Agent, AgentConfig
    from tests.agentkit import landed, serve

    batch = readings(MACHINE, 31)
    before, dead_zone = batch[:-60], batch[-60:]
    log = tmp_path / "logger.ndjson"
    got = tmp_path / "alerts.ndjson"
    script = f"import sys; open({str(got)!r}, 'a').write(sys.stdin.read() + chr(10))"
    hook = f"{sys.executable} -c {subprocess.list2cmdline([script])}"
    port = free_port()
    config = AgentConfig(
        server=f"http://127.0.0.1:{port}",
        token=tokens[MACHINE],
        machine_id=MACHINE,
        source=f"tail:ndjson:{log}",
        folder=tmp_path / "agent",
        send_interval_s=0.05,
        retry_max_s=0.3,
        alert_hook=hook,
    )

    def write(rows: list[dict[str, Any]]) -> None:
        with log.open("a") as fh:
            fh.writelines(json.dumps({"ts": r["ts"], "values": r["values"]}) + "\n" for r in rows)

    log.touch()
    with serve(trained, port):
        first = Agent(config)
        first.start()
        try:
            _wait(lambda: first.edge is not None)  # the model, fetched over the link
            write(before)
            _wait(lambda: first.edge.last is not None and first.edge.last.seq == len(before) - 1)
            assert first.wait_drained(30)
        finally:
            first.stop()
    assert not got.exists()  # online: the server decides
    second = Agent(config)  # the reboot, in the dead zone: no server
    second.start()
    try:
        _wait(lambda: second.edge is not None)  # from the cache, verified
        write(dead_zone)
        _wait(lambda: second.edge.last is not None and second.edge.last.seq == len(batch) - 1)
        _wait(got.exists)
        alerts = [json.loads(line) for line in got.read_text().splitlines()]
        assert len(alerts) == 1 and alerts[0]["machine_id"] == MACHINE
        alert = alerts[0]
        last = second.edge.last
        with serve(trained, port):  # the link is back: the buffered hour goes out
            assert second.wait_drained(30)
    finally:
        second.stop()
    assert landed(trained, MACHINE)["seq"].to_list() == list(range(len(batch)))
    with trained.db.session() as s:
        orders = s.query(WorkOrder).filter_by(machine_id=MACHINE).all()
        served = s.query(Prediction).filter_by(machine_id=MACHINE, seq=last.seq).one()
    assert len(orders) == 1 and orders[0].seq is not None and orders[0].seq >= alert["seq"]
    assert orders[0].rul_lower is not None and orders[0].rul_lower < alert["threshold"]
    np.testing.assert_allclose(
        (last.rul, last.lower, last.upper),
        (served.rul, served.rul_lower, served.rul_upper),
        rtol=0,
        atol=1e-9,
    )


# ---------------------------------------------------------------- a harvester model: regimes, fill, hours


@pytest.fixture(scope="module")
def harvesters(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Any, EdgeModel]:
    """A small harvester model (regimes, a learned fill for the optional sensor, hours since the
    last reset), its fleet's readings and events, and the same model on the edge."""
    import polars as pl

    from pitstop.registry.bundle import manifest_digest
    from pitstop.schema import shipped_fleet
    from pitstop.sim.harvester import simulate
    from pitstop.training.pipeline import type_spec
    from pitstop.training.train import train_rul_model

    history = simulate(4, 150, seed=3)
    telemetry = history.readings.sort("machine_id", "ts").with_columns(
        pl.int_range(pl.len()).over("machine_id").alias("seq")
    )
    mt = shipped_fleet("harvesters").type_of("harvester")
    bundle = train_rul_model(
        telemetry,
        history.events,
        type_spec(mt, telemetry, 42),
        rul_cap=2000,
        folds=2,
        unit_seconds=mt.unit_seconds,
        interval_horizon=2400,
        failure_horizon=480,
        optional=frozenset(set(mt.sensor_names) - mt.required),
        params={"num_boost_round": 60},
    ).bundle
    assert bundle.spec.regimes is not None and bundle.spec.fill is not None and bundle.spec.hours_since_reset
    folder = tmp_path_factory.mktemp("harvester-model")
    bundle.save(folder)
    return bundle, telemetry, history.events, EdgeModel.load(folder, manifest_digest(folder), version="1")


def test_a_harvester_model_on_the_edge_predicts_what_the_bundle_predicts(harvesters: Any) -> None:
    bundle, telemetry, events, edge = harvesters
    x = build_features(telemetry, bundle.spec, events).select(bundle.spec.names).to_numpy()[::40].copy()
    x[::6, 5] = np.nan
    for i, booster in enumerate(bundle.boosters):
        for j, (feature, threshold) in enumerate(_thresholds(booster)[:80]):
            x[(i * 80 + j) % len(x), feature] = threshold
    for expected, got in zip(bundle.predict(x), edge.predict(x), strict=True):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)


def test_a_harvesters_edge_features_equal_the_offline_build_through_gaps_and_resets(harvesters: Any) -> None:
    """The agent sees a harvester's readings one at a time (the optional sensor absent from some,
    so filled), and its maintenance and failures as the server reports them. At every reading its
    features equal ``build_features`` over the machine's history (to float32 precision: the two
    sum in different orders, and ``settle`` can round a last bit apart), and at the end of each of
    the server's micro-batches they equal the server's online features exactly."""
    import polars as pl

    bundle, telemetry, events, edge = harvesters
    machine = telemetry["machine_id"][0]
    mine = telemetry.filter(pl.col("machine_id") == machine)
    resets = sorted(
        int(ts.timestamp() * 1_000_000)
        for ts in events.filter(
            (pl.col("machine_id") == machine) & pl.col("kind").is_in(["maintenance", "failure"])
        )["ts"]
    )
    assert resets and mine["hydraulic_temp_c"].null_count() > 0
    expected = build_features(mine, bundle.spec, events.filter(pl.col("machine_id") == machine))
    scorer = EdgeScorer(edge, machine)
    server = OnlineFeatures(bundle.spec)  # the processor's state, a micro-batch of 7 at a time
    inputs = bundle.spec.inputs
    pending: list[tuple[int, int, list[float]]] = []
    checked, told = 0, None
    for row, want in zip(
        mine.iter_rows(named=True), expected.select(bundle.spec.names).to_numpy(), strict=True
    ):
        ts_us = int(row["ts"].timestamp() * 1_000_000)
        while resets and resets[0] < ts_us:  # the server's episode_start, as the agent learns it
            told = resets[0]
            scorer.reset(told)
            server.reset(machine, resets.pop(0))
        values = {k: float(row[k]) for k in inputs if row[k] is not None}
        scorer.observe([(row["seq"], ts_us, values)], online=True)
        if told is not None:  # told again after the episode began (a restart): no new episode
            scorer.reset(told)
            told = None
        assert scorer.features is not None
        np.testing.assert_allclose(scorer.features, want, rtol=1e-6, atol=1e-9)
        pending.append((row["seq"], ts_us, [values.get(k, np.nan) for k in inputs]))
        if len(pending) == 7:
            seqs, stamps, x = zip(*pending, strict=True)
            server.update([machine] * 7, np.array(seqs), np.array(stamps), np.array(x))
            np.testing.assert_array_equal(scorer.features, server.get([machine])[0])
            pending, checked = [], checked + 1
    assert checked > 100
