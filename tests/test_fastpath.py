"""The predict fast path (``pitstop.web.fastpath``): the usual request answered before the web
framework, everything else by the route, with the same answers either way."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from pitstop.platform import Platform
from pitstop.web import create_app
from pitstop.web.users import Users

PREDICT = "/api/v1/predict"


@pytest.fixture
def client(trained: Platform) -> Iterator[TestClient]:
    with TestClient(create_app(trained)) as c:
        yield c


@pytest.fixture
def keys(trained: Platform) -> dict[str, str]:
    users = Users(trained.db)
    out = {}
    for role in ("viewer", "technician", "engineer"):
        users.add(f"a-{role}", role)
        out[role] = users.create_key(f"a-{role}")
    return out


def answered(platform: Platform) -> dict[str, float]:
    counter = platform.metrics.rest_predict
    return {path: counter.labels(path)._value.get() for path in ("fast", "route")}


def chunked(body: bytes) -> Iterator[bytes]:
    """A body without a declared length: the fast path leaves it to the route."""
    yield body


def test_the_usual_request_gets_the_routes_answer_without_the_route(
    client: TestClient, trained: Platform, keys: dict[str, str]
) -> None:
    names = trained.scorer.feature_names
    rows = [{n: float(i + j) for j, n in enumerate(names)} for i in range(3)]
    auth = {"Authorization": f"Bearer {keys['viewer']}", "content-type": "application/json"}
    for body in ({"rows": rows}, {"columns": list(names), "data": [list(r.values()) for r in rows]}):
        raw = orjson.dumps(body)
        before = answered(trained)
        fast = client.post(PREDICT, content=raw, headers={**auth, "X-Request-ID": "abc-123"})
        mid = answered(trained)
        slow = client.post(PREDICT, content=chunked(raw), headers=auth)
        after = answered(trained)
        assert (mid["fast"] - before["fast"], mid["route"] - before["route"]) == (1, 0)
        assert (after["fast"] - mid["fast"], after["route"] - mid["route"]) == (0, 1)
        assert fast.status_code == slow.status_code == 200
        assert fast.content == slow.content and len(fast.json()["predictions"]) == 3
        assert fast.headers["x-request-id"] == "abc-123" and len(slow.headers["x-request-id"]) == 16
        assert fast.headers["content-type"] == slow.headers["content-type"] == "application/json"
        assert int(fast.headers["content-length"]) == len(fast.content)
        same = {k for k in fast.headers if k not in ("x-request-id", "date", "transfer-encoding")}
        assert same == {k for k in slow.headers if k not in ("x-request-id", "date", "transfer-encoding")}
    # an insane request id is replaced, as the app does
    odd = client.post(PREDICT, json={"rows": rows[:1]}, headers={**auth, "X-Request-ID": "a b"})
    assert odd.status_code == 200 and len(odd.headers["x-request-id"]) == 16


def test_huge_finite_values_are_scored(client: TestClient, trained: Platform, keys: dict[str, str]) -> None:
    """Values at the edge of a double are numbers like any other: scored, not refused."""
    names = trained.scorer.feature_names
    auth = {"Authorization": f"Bearer {keys['viewer']}", "content-type": "application/json"}
    huge = {"rows": [dict.fromkeys(names, 1.5e308), dict.fromkeys(names, -1.7e308)]}
    r = client.post(PREDICT, content=orjson.dumps(huge), headers=auth)
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 2


# (headers, body, status, code); "viewer" stands for a viewer's API key, "row" for one good row
OTHERS: list[tuple[Any, Any, int, str]] = [
    ({}, "row", 401, "not_authenticated"),
    ({"Authorization": "Bearer nope"}, "row", 401, "not_authenticated"),
    ({"Authorization": "Basic abc"}, "row", 401, "not_authenticated"),
    ("viewer", {"rows": []}, 422, "invalid_request"),
    ("viewer", {"rows": [{"x": 1.0}]}, 422, "invalid_features"),
    ("viewer", {"rows": "row", "machine_type": "zeppelin"}, 422, "unknown_machine_type"),
    ("viewer", {"columns": ["a"], "data": []}, 422, "invalid_request"),
    ("viewer", {"rows": "row", "extra": 1}, 422, "invalid_request"),
    ("viewer", b'{"rows": [', 422, "invalid_request"),
    ("viewer", b'{"rows": [{"a": NaN}]}', 422, "invalid_features"),
    ("viewer", {"machine_ids": ["nobody"]}, 404, "machine_not_found"),
]


def test_every_other_request_is_the_routes(
    client: TestClient, trained: Platform, keys: dict[str, str]
) -> None:
    row = dict.fromkeys(trained.scorer.feature_names, 1.0)
    for headers, body, status, code in OTHERS:
        if isinstance(body, dict):
            body = {k: ([row] if v == "row" else v) for k, v in body.items()}
        raw = body if isinstance(body, bytes) else orjson.dumps({"rows": [row]} if body == "row" else body)
        sent = {"Authorization": f"Bearer {keys['viewer']}"} if headers == "viewer" else headers
        before = answered(trained)
        r = client.post(PREDICT, content=raw, headers={**sent, "content-type": "application/json"})
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), (headers, body, r.text)
        assert answered(trained)["fast"] == before["fast"] and r.headers["x-request-id"]


def test_limits_sessions_and_other_routes_stay_with_the_app(
    client: TestClient, trained: Platform, keys: dict[str, str]
) -> None:
    row = dict.fromkeys(trained.scorer.feature_names, 1.0)
    auth = {"Authorization": f"Bearer {keys['viewer']}"}
    too_big = b'{"rows": [' + b" " * trained.settings.max_body_bytes + b"]}"
    r = client.post(PREDICT, content=too_big, headers={**auth, "content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    # a browser session: the route's CSRF check still applies
    users = Users(trained.db)
    users.add("browser", "viewer", password="a long enough password")
    login = client.post("/login", data={"username": "browser", "password": "a long enough password"})
    assert login.status_code in (200, 303), login.text
    r = client.post(PREDICT, json={"rows": [row]})
    assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"
    client.cookies.clear()
    # a GET on the path is the app's 405; other paths are untouched
    assert client.get(PREDICT, headers=auth).status_code == 405
    assert client.get("/healthz").json() == {"status": "ok"}
    # the counters are on /metrics
    metrics = client.get("/metrics", headers={"Authorization": f"Bearer {trained.admin_token()}"}).text
    assert 'pitstop_rest_predict_requests_total{path="fast"}' in metrics


def test_an_exception_in_the_fast_path_gets_the_apps_json_error(
    trained: Platform, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast path sits outside the app's error handlers: whatever it meets (the ops DB down
    while a key is looked up, a bug while scoring) goes to the app, which answers with its own
    JSON error, as a request the fast path never saw would get."""
    from sqlalchemy.exc import OperationalError

    app = create_app(trained)
    names = trained.scorer.feature_names
    body = orjson.dumps({"rows": [dict.fromkeys(names, 1.0)]})
    auth = {"Authorization": f"Bearer {keys['viewer']}", "content-type": "application/json"}

    def down(*_: Any) -> None:
        raise OperationalError("SELECT 1", {}, Exception("database is locked"))

    def broken(*_: Any) -> None:
        raise RuntimeError("a bug")

    with TestClient(app, raise_server_exceptions=False) as c:
        monkeypatch.setattr(app.state.guard, "bearer", down)
        r = c.post(PREDICT, content=body, headers=auth)
        assert (r.status_code, r.json()["error"]["code"]) == (503, "ops_db_unavailable"), r.text
        assert r.headers["x-request-id"]
        monkeypatch.undo()
        monkeypatch.setattr(trained.scorer, "score_dicts", broken)
        r = c.post(PREDICT, content=body, headers=auth)
        assert (r.status_code, r.json()["error"]["code"]) == (500, "internal_error"), r.text
