"""GET /api/v1/features: the processor's online feature rows, equal to the offline features."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import orjson
import polars as pl
import pytest
from fastapi.testclient import TestClient

from pitstop.demo import TOKENS_FILE
from pitstop.features import build_features
from pitstop.features.spec import settle
from pitstop.platform import Platform
from pitstop.processor import Processor
from pitstop.web import create_app
from pitstop.web.users import Users
from tests.conftest import admin_headers
from tests.test_api import post, readings

MACHINES = ["eng-001", "eng-002", "eng-003"]


@pytest.fixture
def fed(trained: Platform) -> Iterator[tuple[TestClient, Processor]]:
    """The app with its processor, three machines' readings processed."""
    proc = Processor(trained)
    proc.bootstrap()
    tokens = json.loads((trained.settings.data_dir / TOKENS_FILE).read_text())
    with TestClient(create_app(trained, proc), headers=admin_headers(trained)) as client:
        for unit, machine in enumerate(MACHINES, start=1):
            assert post(client, tokens[machine], readings(machine, unit, 0, 20 + 5 * unit)).status_code == 202
        proc.run_once()
        yield client, proc


def _get(client: TestClient, ids: str, **headers: str) -> dict:  # type: ignore[type-arg]
    r = client.get(f"/api/v1/features?machine_ids={ids}", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["server-timing"].startswith("app;dur=")
    body: dict = r.json()  # type: ignore[type-arg]
    return body


def test_features_are_the_processors_online_state_and_the_offline_features(
    fed: tuple[TestClient, Processor], trained: Platform
) -> None:
    client, proc = fed
    body = _get(client, ",".join([*reversed(MACHINES), "nope"]))
    assert body["missing"] == ["nope"] and body["count"] == 3
    [(machine_type, rows)] = body["types"].items()
    lane = proc.lanes[machine_type]
    assert lane.online is not None
    spec = lane.online.spec
    assert rows["machine_ids"] == list(reversed(MACHINES))  # the order asked
    assert rows["names"] == list(spec.names) and rows["spec_hash"] == spec.hash
    assert rows["model_version"] == lane.deployment.champion.model.version
    values = np.array(rows["values"], dtype=np.float64)
    online = lane.online.get(rows["machine_ids"])
    np.testing.assert_array_equal(values, online)
    assert rows["seq"] == [lane.online.last_seen(m) for m in rows["machine_ids"]]
    assert rows["seq"] == [35, 30, 25]
    # the offline twin over the lake's rows, at each machine's last reading
    history = trained.lake.read("telemetry", machine_ids=MACHINES).filter(
        pl.col("bus_position").is_not_null()
    )
    offline = build_features(history.sort("machine_id", "seq"), spec)
    last = offline.group_by("machine_id").agg(pl.all().sort_by("seq").last())
    for machine_id, row in zip(rows["machine_ids"], values, strict=True):
        expected = last.filter(pl.col("machine_id") == machine_id).select(spec.names).to_numpy()[0]
        np.testing.assert_allclose(row, settle(expected), rtol=1e-6, atol=1e-9)
    ts = history.filter(pl.col("machine_id") == MACHINES[0])["ts"].max()
    assert rows["ts"][-1] == ts.isoformat()


def test_new_readings_move_the_features_and_a_restart_publishes_every_machine(
    fed: tuple[TestClient, Processor], trained: Platform
) -> None:
    client, proc = fed
    before = _get(client, "eng-001")["types"]
    tokens = json.loads((trained.settings.data_dir / TOKENS_FILE).read_text())
    assert post(client, tokens["eng-001"], readings("eng-001", 1, 25, 3)).status_code == 202
    proc.run_once()
    after = _get(client, "eng-001")["types"]
    [kind] = after
    assert after[kind]["seq"] == [28] and after[kind]["values"] != before[kind]["values"]
    restarted = Processor(trained)
    restarted.bootstrap()  # rebuilt from the lake: every machine with readings, before any batch
    with TestClient(create_app(trained, restarted), headers=admin_headers(trained)) as fresh:
        again = _get(fresh, ",".join(MACHINES))
    assert again["missing"] == [] and again["types"][kind]["values"][0] == after[kind]["values"][0]


def test_bad_input_and_roles(fed: tuple[TestClient, Processor], trained: Platform) -> None:
    client, _ = fed
    for url, code in [
        ("/api/v1/features", "invalid_request"),
        ("/api/v1/features?machine_ids=", "invalid_machine_id"),
        ("/api/v1/features?machine_ids=a,,b", "invalid_machine_id"),
        ("/api/v1/features?machine_ids=" + "x" * 201, "invalid_machine_id"),
        ("/api/v1/features?machine_ids=" + ",".join(f"m{i}" for i in range(1001)), "too_many_machines"),
    ]:
        r = client.get(url)
        assert r.status_code == 422 and r.json()["error"]["code"] == code, (url, r.text)
    # duplicates count once; repeated parameters are joined
    body = _get(client, "eng-001,eng-001&machine_ids=eng-002")
    assert next(iter(body["types"].values()))["machine_ids"] == ["eng-001", "eng-002"]
    users = Users(trained.db)
    for role, status in [("viewer", 403), ("technician", 403), ("engineer", 200), ("admin", 200)]:
        users.add(f"u-{role}", role)
        key = {"Authorization": f"Bearer {users.create_key(f'u-{role}')}"}
        assert client.get("/api/v1/features?machine_ids=eng-001", headers=key).status_code == status, role


def test_a_server_without_a_processor_says_so_with_a_code(trained: Platform) -> None:
    with TestClient(create_app(trained), headers=admin_headers(trained)) as client:
        r = client.get("/api/v1/features?machine_ids=eng-001")
    assert r.status_code == 409 and r.json()["error"]["code"] == "online_features_unavailable"


def test_the_store_keeps_each_machines_latest_row_and_a_new_model_starts_afresh() -> None:
    from pitstop.features import FeatureSpec, OnlineFeatures
    from pitstop.features.store import OnlineStore

    online = OnlineFeatures(FeatureSpec(("a", "b"), windows=(3,)))
    rng = np.random.default_rng(0)
    ids = np.array(["m1"] * 4 + ["m2"] * 4, dtype=object)
    online.update(ids, np.tile(np.arange(4), 2), np.arange(8) * 1_000_000, rng.random((8, 2)))
    store = OnlineStore()
    store.publish("t", online, ["m1", "m2"], online.get(["m1", "m2"]), "1")
    online.update(np.array(["m2"], dtype=object), np.array([9]), np.array([60_000_000]), rng.random((1, 2)))
    store.publish("t", online, ["m2"], online.get(["m2"]), "1")
    [rows], missing = store.lookup(["m2", "x", "m1"])
    assert missing == ["x"] and rows.machine_ids == ["m2", "m1"] and list(rows.seq) == [9, 3]
    assert rows.ts == ["1970-01-01T00:01:00+00:00", "1970-01-01T00:00:03+00:00"]
    np.testing.assert_array_equal(rows.values, online.get(["m2", "m1"]))
    store.publish("t", online, ["m2"], online.get(["m2"]), "2")  # another model: the old rows go
    assert store.lookup(["m1"]) == ([], ["m1"]) and len(store) == 1


def test_a_lookup_over_two_types_groups_rows_by_type_in_the_order_asked() -> None:
    from pitstop.features import FeatureSpec, OnlineFeatures
    from pitstop.features.store import OnlineStore

    rng = np.random.default_rng(3)
    store, onlines = OnlineStore(), {}
    for machine_type, machines in (("pump", ["p1", "p2"]), ("fan", ["f1", "f2", "f3"])):
        online = onlines[machine_type] = OnlineFeatures(FeatureSpec(("a",), windows=(2,)))
        ids = np.repeat(np.array(machines, dtype=object), 2)
        online.update(
            ids,
            np.tile(np.arange(2), len(machines)),
            np.arange(len(ids)) * 1_000_000,
            rng.random((len(ids), 1)),
        )
        store.publish(machine_type, online, machines, online.get(machines), "1")
    found, missing = store.lookup(["f3", "p2", "nope", "f1", "p1"])
    assert missing == ["nope"]
    by_type = {rows.machine_type: rows for rows in found}
    assert by_type["pump"].machine_ids == ["p2", "p1"] and by_type["fan"].machine_ids == ["f3", "f1"]
    for machine_type, rows in by_type.items():
        expected = onlines[machine_type].get(rows.machine_ids)
        np.testing.assert_array_equal(rows.values, expected)
        assert orjson.loads(rows.values_json) == expected.tolist()
    assert store.lookup([]) == ([], [])


def test_many_machines_are_got_in_chunks_with_the_same_rows() -> None:
    from pitstop.features import FeatureSpec, OnlineFeatures
    from pitstop.features.online import _GET_CHUNK

    online = OnlineFeatures(FeatureSpec(("a",), windows=(2,)))
    n = _GET_CHUNK + 5
    ids = np.repeat(np.array([f"m{i:05d}" for i in range(n)], dtype=object), 3)
    values = np.random.default_rng(1).random((3 * n, 1))
    online.update(ids, np.tile(np.arange(3), n), np.tile(np.arange(3), n) * 1_000_000, values)
    every = list(online.slots)
    together = online.get(every)
    assert together.shape[0] == n
    np.testing.assert_array_equal(together[-7:], online.get(every[-7:]))
    np.testing.assert_array_equal(together[:3], online.get(every[:3]))
