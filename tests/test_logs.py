"""Structured logs: JSON lines (or text) with the request id that the response and its error body
carry, so an operator can go from a user's error message to the server's lines for it."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from pitstop.errors import LakeError
from pitstop.logs import configure
from pitstop.platform import Platform
from pitstop.web import create_app
from tests.conftest import admin_headers
from tests.test_crash_windows import _order


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def test_every_log_line_and_error_body_carries_the_request_id(
    platform: Platform,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
) -> None:
    configure(fmt="json")
    _order(platform)

    def lake_down(*args: object, **kwargs: object) -> bool:
        raise LakeError("disk full")

    monkeypatch.setattr(platform.lake, "append", lake_down)
    with TestClient(create_app(platform)) as client:
        # a request whose handler logs (on a worker thread): its line has the request's id
        stored = client.post(
            "/api/v1/admin/events",
            json={"machine_id": "eng-007", "kind": "inspection"},
            headers={**admin_headers(platform), "X-Request-ID": "ticket-4711"},
        )
        missing = client.get("/api/v1/machines/nope", headers=admin_headers(platform))
        odd = client.get(
            "/api/v1/machines/nope", headers={**admin_headers(platform), "X-Request-ID": "a b\x7f"}
        )
    assert stored.status_code == 201 and stored.headers["x-request-id"] == "ticket-4711"
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    kept = [line for line in lines if "lake outbox" in line["message"]]
    assert kept and kept[0]["request_id"] == "ticket-4711" and kept[0]["level"] == "warning"
    assert {"ts", "level", "logger", "message"} <= set(kept[0])
    # an error body names the id its response header has (a new one when the client sent none)
    rid = missing.headers["x-request-id"]
    assert len(rid) == 16 and missing.json()["error"]["request_id"] == rid
    assert odd.headers["x-request-id"] != "a b\x7f"  # not a sane token: replaced


def test_text_logs_name_the_request_too(capsys: pytest.CaptureFixture[str], restore_logging: None) -> None:
    from pitstop.logs import request_id

    configure(fmt="text")
    token = request_id.set("r-1")
    try:
        logging.getLogger("pitstop.test").warning("hello")
    finally:
        request_id.reset(token)
    err = capsys.readouterr().err
    assert "WARNING pitstop.test: hello [request r-1]" in err and not err.lstrip().startswith("{")


def test_an_unexpected_500_still_carries_the_request_id(
    platform: Platform,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
) -> None:
    import pitstop.web.app

    def broken(platform: Platform) -> None:
        raise RuntimeError("boom")

    configure(fmt="json")
    monkeypatch.setattr(pitstop.web.app, "_work_orders_by_state", broken)
    with TestClient(create_app(platform), raise_server_exceptions=False) as client:
        r = client.get("/metrics", headers={"X-Request-ID": "incident-9"})
    assert r.status_code == 500 and r.headers["x-request-id"] == "incident-9"
    assert r.json()["error"]["request_id"] == "incident-9"
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{")]
    (unhandled,) = [x for x in lines if x["message"] == "unhandled error"]
    assert unhandled["request_id"] == "incident-9" and "boom" in unhandled["exc"]
