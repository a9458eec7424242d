"""Bad input never yields a 5xx, always the error shape, and stores nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from pitstop.platform import Platform
from pitstop.processor import Processor
from pitstop.web import create_app
from tests.conftest import admin_headers
from tests.test_api import readings

GOOD = readings("eng-001", 1, 0, 2)
R = json.dumps(GOOD[0])

# (name, body, content type, auth: "device" | "other" | "none" | "bad")
CORPUS: list[tuple[str, bytes, str, str]] = [
    ("no token", json.dumps(GOOD).encode(), "application/json", "none"),
    ("unknown token", json.dumps(GOOD).encode(), "application/json", "bad"),
    ("another machine's token", json.dumps(GOOD).encode(), "application/json", "other"),
    ("empty body", b"", "application/json", "device"),
    ("null", b"null", "application/json", "device"),
    ("number", b"42", "application/json", "device"),
    ("string", b'"readings"', "application/json", "device"),
    ("empty object", b"{}", "application/json", "device"),
    ("object with extra key", b'{"readings": [], "x": 1}', "application/json", "device"),
    ("truncated", json.dumps(GOOD).encode()[:-7], "application/json", "device"),
    ("not utf-8", b"[\xff\xfe]", "application/json", "device"),
    ("deeply nested", b"[" * 5000 + b"]" * 5000, "application/json", "device"),
    (
        "NaN literal",
        R.replace('"s2": ', '"s2": NaN, "x": ').encode().join([b"[", b"]"]),
        "application/json",
        "device",
    ),
    (
        "Infinity literal",
        R.replace('"s3": ', '"s3": -Infinity, "y": ').encode().join([b"[", b"]"]),
        "application/json",
        "device",
    ),
    (
        "huge number",
        R.replace('"s2": ', '"s2": 1e400, "z": ').encode().join([b"[", b"]"]),
        "application/json",
        "device",
    ),
    ("array of nulls", b"[null, null]", "application/json", "device"),
    ("array of arrays", b"[[1, 2]]", "application/json", "device"),
    ("seq as float", json.dumps([{**GOOD[0], "seq": 1.0}]).encode(), "application/json", "device"),
    ("seq as bool", json.dumps([{**GOOD[0], "seq": True}]).encode(), "application/json", "device"),
    ("seq huge", json.dumps([{**GOOD[0], "seq": 2**70}]).encode(), "application/json", "device"),
    ("values null", json.dumps([{**GOOD[0], "values": None}]).encode(), "application/json", "device"),
    (
        "value nested",
        json.dumps([{**GOOD[0], "values": {**GOOD[0]["values"], "s2": [1]}}]).encode(),
        "application/json",
        "device",
    ),
    (
        "value object",
        json.dumps([{**GOOD[0], "values": {**GOOD[0]["values"], "s2": {"v": 1}}}]).encode(),
        "application/json",
        "device",
    ),
    (
        "machine id too long",
        json.dumps([{**GOOD[0], "machine_id": "m" * 500}]).encode(),
        "application/json",
        "device",
    ),
    (
        "machine id with quote",
        json.dumps([{**GOOD[0], "machine_id": "eng-001' OR 1=1"}]).encode(),
        "application/json",
        "device",
    ),
    (
        "ts in year 10000",
        json.dumps([{**GOOD[0], "ts": "10000-01-01T00:00:00Z"}]).encode(),
        "application/json",
        "device",
    ),
    ("ts garbage", json.dumps([{**GOOD[0], "ts": "\u0000"}]).encode(), "application/json", "device"),
    ("duplicate seq in batch", json.dumps([GOOD[0], GOOD[0]]).encode(), "application/json", "device"),
    ("ndjson bad line", (R + "\n{oops\n").encode(), "application/x-ndjson", "device"),
    ("ndjson of arrays", b"[1]\n[2]\n", "application/x-ndjson", "device"),
    ("form encoded", b"a=1&b=2", "application/x-www-form-urlencoded", "device"),
    ("xml", b"<readings/>", "application/xml", "device"),
]


@pytest.fixture
def client(trained: Platform) -> Iterator[TestClient]:
    proc = Processor(trained)
    proc.bootstrap()
    with TestClient(
        create_app(trained, proc), headers=admin_headers(trained), raise_server_exceptions=False
    ) as c:
        yield c


def _tokens(platform: Platform) -> dict[str, str]:
    tokens: dict[str, str] = json.loads((platform.settings.data_dir / "demo-devices.json").read_text())
    return tokens


@pytest.mark.parametrize(("name", "body", "content_type", "auth"), CORPUS, ids=[c[0] for c in CORPUS])
def test_malformed_request_is_a_clean_4xx(
    client: TestClient, trained: Platform, name: str, body: bytes, content_type: str, auth: str
) -> None:
    tokens = _tokens(trained)
    token = {"device": tokens["eng-001"], "other": tokens["eng-002"], "bad": "pst_nope", "none": None}[auth]
    headers = {"content-type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    head = trained.bus.head()
    r = client.post("/api/v1/readings", content=body, headers=headers)
    assert 400 <= r.status_code < 500, (name, r.status_code, r.text[:300])
    error = r.json()["error"]
    assert isinstance(error["code"], str) and error["code"] and error["message"]
    assert trained.bus.head() == head, f"{name}: something was stored"


def test_schemathesis_finds_no_server_errors(trained: Platform) -> None:
    """Property-based requests generated from our OpenAPI spec (ingest and admin routes)."""
    proc = Processor(trained)
    proc.bootstrap()
    app = create_app(trained, proc)
    tokens = {"device": _tokens(trained)["eng-001"], "admin": trained.admin_token()}
    schema = schemathesis.openapi.from_asgi("/openapi.json", app).include(
        path_regex="^/api/v1/(readings|admin/)"
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/api/v1/readings", "/api/v1/admin/devices"}
    seen: list[int] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: Any) -> None:
            token = tokens["admin"] if "/admin/" in case.path else tokens["device"]
            response = case.call(headers={"Authorization": f"Bearer {token}"})
            seen.append(response.status_code)
            assert response.status_code < 500, (
                f"{case.method} {case.path}: {response.status_code} {response.text[:300]}"
            )
            if response.status_code >= 400:
                assert set(response.json()) == {"error"}

        check()
    assert len(seen) >= 100
