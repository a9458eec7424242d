from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pitstop.demo import TOKENS_FILE
from pitstop.platform import Platform
from pitstop.processor import Processor
from pitstop.schema import TURBOFAN
from pitstop.sim import shipped
from pitstop.store import MachineState
from pitstop.web import create_app
from pitstop.web.users import Users
from tests.conftest import admin_headers

MACHINE = "eng-001"


@pytest.fixture
def proc(trained: Platform) -> Processor:
    p = Processor(trained)
    p.bootstrap()
    return p


@pytest.fixture
def client(trained: Platform, proc: Processor) -> Iterator[TestClient]:
    with TestClient(create_app(trained, proc), headers=admin_headers(trained)) as c:
        yield c


@pytest.fixture
def tokens(trained: Platform) -> dict[str, str]:
    tokens: dict[str, str] = json.loads((trained.settings.data_dir / TOKENS_FILE).read_text())
    return tokens


def readings(machine: str, unit: int, start: int, n: int) -> list[dict[str, Any]]:
    rows = shipped("fd001_test").filter(unit=unit).sort("cycle").slice(start, n)
    now = datetime.now(UTC)
    return [
        {
            "machine_id": machine,
            "ts": (now - timedelta(seconds=n - i)).isoformat(),
            "seq": int(r["cycle"]),
            "values": {k: r[k] for k in TURBOFAN.sensor_names},
        }
        for i, r in enumerate(rows.to_dicts())
    ]


def post(client: TestClient, token: str | None, body: Any, headers: dict[str, str] | None = None) -> Any:
    # no token: an empty header (the test client otherwise sends the admin token)
    auth = {"Authorization": f"Bearer {token}" if token else ""}
    if isinstance(body, bytes | str):
        extra = {"content-type": "application/json", **(headers or {})}
        return client.post("/api/v1/readings", content=body, headers={**auth, **extra})
    return client.post("/api/v1/readings", json=body, headers={**auth, **(headers or {})})


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"]
    err: dict[str, Any] = body["error"]
    return err


def test_health_metrics_dashboard(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and "pitstop_readings_accepted_total" in metrics.text
    page = client.get("/")
    assert page.status_code == 200 and "/static/common.js" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
    assert client.get(f"/machines/{MACHINE}").status_code == 200
    static = resources.files("pitstop.web") / "static"
    for item in static.iterdir():  # every shipped asset is served, and none loads from elsewhere
        served = client.get(f"/static/{item.name}")
        assert served.status_code == 200
        assert "http://" not in served.text and "https://" not in served.text, item.name
    assert_error(client.get("/nope"), 404, "not_found")


def test_ingest_process_score(
    client: TestClient, trained: Platform, proc: Processor, tokens: dict[str, str]
) -> None:
    batch = readings(MACHINE, 1, 0, 25)
    r = post(client, tokens[MACHINE], batch)
    assert r.status_code == 202 and r.json() == {
        "accepted": 25,
        "quarantined": 0,
        "duplicates": 0,
        "position": 1,
    }
    # re-sending the same batch is acknowledged and stored once
    again = post(client, tokens[MACHINE], {"readings": batch})
    assert again.status_code == 202 and again.json()["duplicates"] == 25 and again.json()["position"] is None
    lake_before = trained.lake.count("telemetry")
    report = proc.run_once()
    assert (report.readings, report.written, report.duplicates, report.scored) == (25, 25, 0, 1)
    assert trained.lake.count("telemetry") == lake_before + 25
    machine = client.get(f"/api/v1/machines/{MACHINE}").json()
    assert machine["readings"] == 25 and machine["last_seq"] == batch[-1]["seq"]
    assert machine["predicted_rul"] > 0 and machine["rul_interval"][0] <= machine["predicted_rul"]
    assert machine["status"] in {"ok", "at_risk"}
    fleet = client.get("/api/v1/machines").json()
    assert fleet["count"] == 100 and all(m["lifecycle"] == "active" for m in fleet["machines"])
    tel = client.get(f"/api/v1/machines/{MACHINE}/telemetry?sensors=s2,s3").json()
    assert tel["seq"] == [b["seq"] for b in batch] and len(tel["values"]["s3"]) == 25
    assert client.get(f"/api/v1/machines/{MACHINE}/predictions").json()["rul"] == [machine["predicted_rul"]]
    # the REST prediction of the machine's current state equals the streaming score
    pred = client.post("/api/v1/predict", json={"machine_ids": [MACHINE]}).json()["predictions"][0]
    assert pred["rul"] == pytest.approx(machine["predicted_rul"], abs=1e-3)
    assert pred["model"]["version"] == machine["model_version"]


def test_work_order_opens_once(
    client: TestClient, trained: Platform, proc: Processor, tokens: dict[str, str]
) -> None:
    # unit 31 of FD001's test set ends 8 cycles before failure: its late cycles are clearly at risk
    machine = "eng-031"
    rows = readings(machine, 31, 0, 10_000)
    for i in range(0, len(rows), 50):
        assert post(client, tokens[machine], rows[i : i + 50]).status_code == 202
        proc.run_once()
    orders = client.get("/api/v1/work-orders?status=open").json()["work_orders"]
    mine = [o for o in orders if o["machine_id"] == machine]
    assert len(mine) == 1  # one open order, however many batches stay at risk
    order = mine[0]
    assert order["rul_interval"][0] < trained.settings.work_order_rul_threshold  # the lower bound fired
    assert order["machine_url"] == f"/machines/{machine}"
    assert client.get("/api/v1/machines").json()["machines"][30]["open_work_order_id"] == order["id"]
    # why and what to do: the sensors that pushed the RUL down, the component, its procedure
    top = order["explanation"]["top_sensors"]
    assert top and all(t["contribution"] < 0 for t in top)
    assert order["component"] == "high-pressure compressor (HPC)"  # FD001's failure mode
    assert "P-" in order["procedure"] and order["priority"] in ("normal", "high", "urgent")
    assert order["due_at"] > order["opened_at"][:10] and order["lead_time"] == trained.settings.lead_time

    # the lifecycle: a technician acknowledges, starts, and closes it with a finding
    users = Users(trained.db)
    users.add("ana", "technician")
    ana = {"Authorization": f"Bearer {users.create_key('ana')}"}

    def move(body: dict[str, object]) -> Any:
        return client.post(f"/api/v1/work-orders/{order['id']}/transition", json=body, headers=ana)

    assert_error(move({"status": "done", "finding": "fault_confirmed"}), 409, "invalid_transition")
    # a typed technician is ignored: the order records who is calling
    assert move({"status": "acknowledged", "technician": "mallory"}).json()["technician"] == "ana"
    assert move({"status": "in_progress"}).json()["status"] == "in_progress"
    assert_error(move({"status": "done"}), 422, "finding_required")
    assert_error(move({"status": "done", "finding": "maybe"}), 422, "invalid_request")
    events_before = trained.lake.read("events").height
    done = move({"status": "done", "finding": "fault_confirmed", "note": "HPC blades eroded"}).json()
    assert done["status"] == "done" and done["finding"] == "fault_confirmed" and done["closed_at"]
    assert_error(move({"status": "cancelled"}), 409, "invalid_transition")  # closed is final
    assert_error(
        client.post("/api/v1/work-orders/999999/transition", json={"status": "acknowledged"}),
        404,
        "work_order_not_found",
    )
    # the repair is a maintenance event (the machine's baseline resets), carrying the finding
    events = trained.lake.read("events")
    assert events.height == events_before + 1
    (event,) = [e for e in events.iter_rows(named=True) if e["machine_id"] == machine]
    assert event["kind"] == "maintenance" and event["seq"] == rows[-1]["seq"]
    assert json.loads(event["detail"]) == {
        "work_order": order["id"],
        "finding": "fault_confirmed",
        "note": "HPC blades eroded",
        "technician": "ana",
    }
    moves = trained.db.audit_entries(action="work_order_done")
    assert [(e["actor"], e["role"]) for e in moves] == [("ana", "technician")]
    # a new episode: the risk policy is armed again for the machine
    with trained.db.session() as session:
        state = session.get(MachineState, machine)
        assert state is not None and state.policy_armed and state.policy_rearm_seq is None


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda r: r.update(seq="7"), "invalid_seq"),
        (lambda r: r.update(seq=-1), "invalid_seq"),
        (lambda r: r.update(seq=1), "non_increasing_seq"),
        (lambda r: r["values"].update(s2="641.8"), "invalid_value"),
        (lambda r: r["values"].update(s2=True), "invalid_value"),
        (lambda r: r["values"].update(s2=None), "invalid_value"),
        (lambda r: r["values"].update(bogus=1.0), "unknown_sensor"),
        (lambda r: r["values"].pop("s2"), "missing_sensor"),
        (lambda r: r.update(ts=(datetime.now(UTC) + timedelta(days=1)).isoformat()), "future_timestamp"),
        (lambda r: r.update(ts="2026-01-01T00:00:00"), "naive_timestamp"),
        (lambda r: r.update(ts="yesterday"), "invalid_timestamp"),
        (lambda r: r.update(ts=1767225600), "invalid_timestamp"),
        (lambda r: r.update(values=[1.0]), "invalid_reading"),
        (lambda r: r.update(extra=1), "invalid_reading"),
        (lambda r: r.pop("seq"), "invalid_reading"),
        (lambda r: r.update(machine_id=""), "invalid_machine_id"),
    ],
)
def test_bad_readings_are_rejected_whole(
    client: TestClient, trained: Platform, tokens: dict[str, str], mutate: Any, code: str
) -> None:
    batch = readings(MACHINE, 1, 0, 3)
    mutate(batch[1])
    head = trained.bus.head()
    err = assert_error(post(client, tokens[MACHINE], batch), 422, "invalid_readings")
    assert err["details"] == [{"index": 1, "code": code, "message": err["details"][0]["message"]}]
    assert trained.bus.head() == head  # nothing stored


def test_bad_requests_get_the_error_shape(
    client: TestClient, trained: Platform, tokens: dict[str, str]
) -> None:
    token = tokens[MACHINE]
    good = readings(MACHINE, 1, 0, 2)
    head = trained.bus.head()
    assert_error(post(client, None, good), 401, "missing_token")
    assert_error(post(client, "pst_wrong", good), 401, "invalid_token")
    assert_error(post(client, tokens["eng-002"], good), 403, "wrong_machine")
    nan = b'[{"machine_id": "eng-001", "ts": "2026-01-01T00:00:00Z", "seq": 1, "values": {"s2": NaN}}]'
    err = assert_error(post(client, token, nan), 422, "invalid_readings")
    assert err["details"][0]["code"] == "non_finite"
    assert_error(post(client, token, b'[{"seq": NaN'), 422, "invalid_json")
    assert_error(
        post(client, token, b"[1]", headers={"content-type": "text/plain"}), 415, "unsupported_media_type"
    )
    assert_error(post(client, token, b"{not json"), 422, "invalid_json")
    assert_error(post(client, token, []), 422, "invalid_batch")
    assert_error(post(client, token, {"rows": []}), 422, "invalid_batch")
    assert_error(post(client, token, b"x" * (trained.settings.max_body_bytes + 1)), 413, "payload_too_large")
    big = readings(MACHINE, 1, 0, 1) * (trained.settings.max_batch_readings + 1)
    assert_error(post(client, token, big), 422, "batch_too_large")
    assert trained.bus.head() == head


def test_predict_validates_features(client: TestClient, trained: Platform) -> None:
    names = trained.scorer.feature_names
    row = dict.fromkeys(names, 1.0)
    ok = client.post("/api/v1/predict", json={"rows": [row, row]})
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 2
    missing = {k: v for k, v in row.items() if k != names[3]}
    err = assert_error(client.post("/api/v1/predict", json={"rows": [missing]}), 422, "invalid_features")
    assert err["details"][0]["missing"] == [names[3]]
    assert_error(
        client.post("/api/v1/predict", json={"rows": [{**row, "age": "x"}]}), 422, "invalid_features"
    )
    for flag in (True, False):  # a boolean is not 1.0 or 0.0: named, in one row and in many
        for rows in ([{**row, names[2]: flag}], [row, {**row, names[2]: flag}]):
            err = assert_error(client.post("/api/v1/predict", json={"rows": rows}), 422, "invalid_features")
            assert err["details"][0]["invalid"] == [names[2]]
    # NaN and Infinity literals (not JSON, but what numpy writes) are named, never filled
    body = json.dumps({"rows": [{**row, names[5]: float("nan")}, {**row, names[6]: float("inf")}]})
    err = assert_error(
        client.post("/api/v1/predict", content=body, headers={"content-type": "application/json"}),
        422,
        "invalid_features",
    )
    assert [d["invalid"] for d in err["details"]] == [[names[5]], [names[6]]]
    assert_error(client.post("/api/v1/predict", json={}), 422, "invalid_request")
    # the body is checked against the documented schema, as FastAPI would
    err = assert_error(client.post("/api/v1/predict", json={"rows": [row], "x": 1}), 422, "invalid_request")
    assert err["details"][0]["loc"] == ["body", "x"]
    assert_error(client.post("/api/v1/predict", json={"machine_ids": "eng-001"}), 422, "invalid_request")
    broken = client.post(
        "/api/v1/predict", content=b'{"rows": [', headers={"content-type": "application/json"}
    )
    assert_error(broken, 422, "invalid_request")
    schema = client.get("/openapi.json").json()["paths"]["/api/v1/predict"]["post"]["requestBody"]
    properties = set(schema["content"]["application/json"]["schema"]["properties"])
    assert properties == {"machine_ids", "rows", "columns", "data", "machine_type"}
    # the columnar form: the same predictions, whatever the columns' order; its problems are named
    rows = [{**row, names[0]: 2.0}, {**row, names[1]: -3.5}]
    by_rows = client.post("/api/v1/predict", json={"rows": rows}).json()["predictions"]
    order = names[::-1]
    table = {"columns": order, "data": [[r[n] for n in order] for r in rows]}
    assert client.post("/api/v1/predict", json=table).json()["predictions"] == by_rows
    err = assert_error(
        client.post("/api/v1/predict", json={**table, "columns": order[1:]}), 422, "invalid_features"
    )
    assert err["details"][0]["missing"] == [order[0]]
    for bad in (True, None, "1.5", [1.0]):  # a boolean, a null, a string, a list: named, never cast
        cells = [[bad, *table["data"][0][1:]], table["data"][1]]
        err = assert_error(
            client.post("/api/v1/predict", json={**table, "data": cells}), 422, "invalid_features"
        )
        assert err["details"] == [{**err["details"][0], "index": 0, "invalid": [order[0]]}]
    ragged = {**table, "data": [table["data"][0][:-1]]}
    assert (
        assert_error(client.post("/api/v1/predict", json=ragged), 422, "invalid_features")["details"][0][
            "values"
        ]
        == len(names) - 1
    )
    assert_error(client.post("/api/v1/predict", json={"columns": order}), 422, "invalid_request")
    assert_error(client.post("/api/v1/predict", json={**table, "data": []}), 422, "invalid_request")
    assert_error(client.post("/api/v1/predict", json={**table, "rows": rows}), 422, "invalid_request")
    err = assert_error(
        client.post("/api/v1/predict", json={"rows": [{**row, names[2]: True}]}), 422, "invalid_features"
    )
    assert err["details"][0]["invalid"] == [names[2]]
    unknown = client.post("/api/v1/predict", json={"rows": [row], "machine_type": "zeppelin"})
    assert "turbofan" in assert_error(unknown, 422, "unknown_machine_type")["message"]
    # one row takes LightGBM's fast single-row path: the same numbers as the batch path
    batch = client.post("/api/v1/predict", json={"rows": [row, {**row, names[0]: 2.0}]}).json()["predictions"]
    single = client.post("/api/v1/predict", json={"rows": [{**row, names[0]: 2.0}]}).json()["predictions"]
    assert single == batch[1:]
    assert_error(client.post("/api/v1/predict", json={"machine_ids": ["eng-404"]}), 404, "machine_not_found")
    assert_error(client.get("/api/v1/machines/eng-404"), 404, "machine_not_found")
    models = client.get("/api/v1/models").json()
    assert models["serving"]["features"] == names and models["versions"][0]["aliases"] == ["champion"]
