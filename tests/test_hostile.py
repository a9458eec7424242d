"""Hostile input over every route: schemathesis from our OpenAPI schema with every role, and a
generated corpus of 10,000 malformed requests. Never a 5xx; every 4xx in the error shape; nothing
stored. ``PITSTOP_FUZZ_EXAMPLES`` (default 10 per operation and caller) and
``PITSTOP_CORPUS_SIZE`` (default 10,000) scale the two runs."""

from __future__ import annotations

import json
import os
import random
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from sqlalchemy import func, select

from pitstop.platform import Platform
from pitstop.processor import Processor
from pitstop.store import Device, LakeOutbox, Prediction, User, WorkOrder
from pitstop.web import create_app
from pitstop.web.permissions import DEVICE, METRICS, PUBLIC, ROLES, ROUTES
from pitstop.web.users import Users
from tests.conftest import make_settings
from tests.test_api import readings

MAX_BODY = 64 * 1024  # a small cap, so the over-cap cases stay cheap
CORPUS_SIZE = int(os.environ.get("PITSTOP_FUZZ_CORPUS", "10000"))
EXAMPLES = int(os.environ.get("PITSTOP_FUZZ_EXAMPLES", "10"))


@dataclass
class Target:
    client: TestClient
    platform: Platform
    keys: dict[str, dict[str, str]]  # role (and "device") -> headers


@pytest.fixture(scope="module")
def target(trained_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    copy = tmp_path_factory.mktemp("hostile") / "data"
    shutil.copytree(trained_dir, copy)
    platform = Platform.open(make_settings(copy, max_body_bytes=MAX_BODY, login_max_failures=10**6))
    platform.scorer.reload()
    proc = Processor(platform)
    proc.bootstrap()
    users = Users(platform.db)
    keys = {}
    for role in ROLES:
        users.add(f"fuzz-{role}", role)
        keys[role] = {"Authorization": f"Bearer {users.create_key(f'fuzz-{role}')}"}
    device = json.loads((copy / "demo-devices.json").read_text())["eng-001"]
    keys["device"] = {"Authorization": f"Bearer {device}"}
    with TestClient(create_app(platform, proc), raise_server_exceptions=False, follow_redirects=False) as c:
        yield Target(c, platform, keys)
    platform.close()


def _stored(platform: Platform) -> dict[str, int]:
    """What a request could have stored: the bus, every lake table's version, the ops-DB rows."""
    counts = {"bus": platform.bus.head()}
    for table in ("telemetry", "events", "quarantine"):
        counts[f"lake.{table}"] = platform.lake.version(table)
    with platform.db.session() as s:
        for model in (WorkOrder, Prediction, Device, User, LakeOutbox):
            counts[model.__tablename__] = int(s.scalar(select(func.count()).select_from(model)) or 0)
    return counts


def _error_shaped(response: Any) -> bool:
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return (
        isinstance(error.get("code"), str) and bool(error["code"]) and isinstance(error.get("message"), str)
    )


# ---------------------------------------------------------------- schemathesis, every role


def test_schemathesis_over_every_route_and_role_finds_no_server_error(target: Target) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", target.client.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    declared = {(m, p) for (m, p) in ROUTES if p.startswith("/api/")}  # pages are not in the schema
    assert {(op.method.upper(), op.path) for op in operations} >= declared
    statuses: Counter[int] = Counter()
    for operation in operations:
        device = ROUTES.get((operation.method.upper(), operation.path)) == DEVICE
        callers = ["device"] if device else list(ROLES)
        for caller in callers:
            _fuzz(operation, target.keys[caller], caller, statuses)
    print(
        f"schemathesis: {sum(statuses.values())} requests over {len(operations)} operations: {dict(statuses)}"
    )
    assert not any(code >= 500 for code in statuses)


def _fuzz(operation: Any, headers: dict[str, str], caller: str, statuses: Counter[int]) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: Any) -> None:
        response = case.call(headers=headers, allow_redirects=False)
        statuses[response.status_code] += 1
        where = f"{case.method} {case.formatted_path} as {caller}"
        assert response.status_code < 500, f"{where}: {response.status_code} {response.text[:300]}"
        if 400 <= response.status_code < 500:
            assert _error_shaped(response), (where, response.text[:200])

    check()


# ---------------------------------------------------------------- the malformed corpus

_BAD_BODIES: list[tuple[str, bytes, str]] = [
    ("empty", b"", "application/json"),
    ("truncated", b'{"machine_ids": ["eng-001"', "application/json"),
    ("not utf-8", b'{"x": "\xff\xfe"}', "application/json"),
    ("deeply nested arrays", b"[" * 100_000 + b"]" * 100_000, "application/json"),
    ("deeply nested objects", b'{"a":' * 20_000 + b"1" + b"}" * 20_000, "application/json"),
    ("top-level number", b"42", "application/json"),
    ("top-level string", b'"x"', "application/json"),
    ("top-level array", b"[1, 2]", "application/json"),
    ("top-level null", b"null", "application/json"),
    ("NaN", b'{"x": NaN}', "application/json"),
    ("huge number", b'{"x": 1e400}', "application/json"),
    ("huge integer", b'{"x": ' + b"9" * 5000 + b"}", "application/json"),
    ("unknown keys only", b'{"zz_unknown": 1}', "application/json"),
    ("xml", b"<a/>", "application/xml"),
    ("text/notjson", b"{}", "text/notjson"),
    ("form", b"a=1&b=2", "application/x-www-form-urlencoded"),
    ("nul bytes", b"\x00\x00\x00", "application/json"),
]
# the body fields that no valid request leaves out: a body of unknown keys only is invalid
_NO_REQUIRED_FIELDS = {("POST", "/api/v1/models/{machine_type}/promote")}
_BAD_INTS = ["100000000000000000000000", "-1", "0", "abc", "1.5", "1e3", "%00", "9" * 400]
_BAD_QUERY = ["-5", "1e30", "abc", "100000000000000000000000", "", "NaN"]
_BAD_TOKENS = ["Bearer nope", "Bearer ", "Basic dXNlcjpwYXNz", "bearer psk_" + "x" * 4000, "Bearer \t", "x"]


def _routes_with_body(app: Any) -> set[tuple[str, str]]:
    spec = app.openapi()
    return {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if "requestBody" in op
    }


def _int_queries(app: Any) -> dict[tuple[str, str], list[str]]:
    spec = app.openapi()
    found: dict[tuple[str, str], list[str]] = {}
    for path, item in spec["paths"].items():
        for method, op in item.items():
            names = [
                p["name"]
                for p in op.get("parameters", [])
                if p["in"] == "query" and p.get("schema", {}).get("type") == "integer"
            ]
            if names:
                found[(method.upper(), path)] = names
    return found


def _fill(path: str, **values: str) -> str:
    sample = {
        "machine_id": "eng-001",
        "order_id": "1",
        "device_id": "1",
        "silence_id": "1",
        "machine_type": "turbofan",
    }
    for name, value in {**sample, **values}.items():
        path = path.replace("{" + name + "}", value)
    return path


def _caller(rule: str) -> str:
    return "device" if rule == DEVICE else "admin"


def _corpus(app: Any, size: int, seed: int = 16) -> list[tuple[str, str, str, dict[str, str], bytes]]:
    """(family, method, url, headers, body): every one of them malformed for its route."""
    rng = random.Random(seed)
    bodies = _routes_with_body(app)
    queries = _int_queries(app)
    api = [(m, p) for (m, p) in ROUTES if p.startswith("/api/")]
    protected = [
        (m, p) for (m, p), rule in ROUTES.items() if p.startswith("/api/") and rule not in (PUBLIC, METRICS)
    ]
    int_paths = [
        (m, p) for (m, p) in api if any(f"{{{n}}}" in p for n in ("order_id", "device_id", "silence_id"))
    ]
    id_paths = [(m, p) for (m, p) in api if "{machine_id}" in p or "{machine_type}" in p]
    methods_of: dict[str, set[str]] = {}
    for m, p in ROUTES:
        methods_of.setdefault(p, set()).add(m)

    def body_case() -> tuple[str, str, str, dict[str, str], bytes]:
        method, path = rng.choice(sorted(bodies))
        name, body, ctype = rng.choice(_BAD_BODIES)
        if name == "unknown keys only" and (method, path) in _NO_REQUIRED_FIELDS:
            name, body, ctype = _BAD_BODIES[1]
        if path == "/login":  # a form route: garbage credentials are its malformed input
            ctype = rng.choice([ctype, "application/x-www-form-urlencoded"])
        headers = {**keys_for(_caller(ROUTES[(method, path)])), "content-type": ctype}
        return f"body: {name}", method, _fill(path), headers, body

    def int_path_case() -> tuple[str, str, str, dict[str, str], bytes]:
        method, path = rng.choice(int_paths)
        value = rng.choice(_BAD_INTS)
        body = json.dumps({"status": "acknowledged"}).encode() if method == "POST" else b""
        headers = {**keys_for("admin"), "content-type": "application/json"}
        url = _fill(path, order_id=value, device_id=value, silence_id=value)
        return "path integer", method, url, headers, body

    def id_case() -> tuple[str, str, str, dict[str, str], bytes]:
        method, path = rng.choice(id_paths)
        value = rng.choice(
            ["no-such-machine", "x" * 300, "%E2%80%8B", "..%2F..%2Fetc", "eng-001%00", "%F0%9F%9A%9C"]
        )
        body = b"{}" if method == "POST" else b""
        headers = {**keys_for("admin"), "content-type": "application/json"}
        return "unknown id", method, _fill(path, machine_id=value, machine_type=value), headers, body

    def query_case() -> tuple[str, str, str, dict[str, str], bytes]:
        (method, path), names = rng.choice(sorted(queries.items()))
        url = _fill(path) + f"?{rng.choice(names)}={rng.choice(_BAD_QUERY)}"
        return "query integer", method, url, keys_for("admin"), b""

    def auth_case() -> tuple[str, str, str, dict[str, str], bytes]:
        method, path = rng.choice(protected)
        headers = {"Authorization": rng.choice(_BAD_TOKENS), "content-type": "application/json"}
        return "bad credentials", method, _fill(path), headers, b"{}" if method == "POST" else b""

    def method_case() -> tuple[str, str, str, dict[str, str], bytes]:
        path = rng.choice(sorted(methods_of))
        method = rng.choice(sorted({"PUT", "PATCH", "DELETE", "GET", "POST"} - methods_of[path] - {"HEAD"}))
        return "wrong method", method, _fill(path), keys_for("admin"), b""

    def oversize_case() -> tuple[str, str, str, dict[str, str], bytes]:
        method, path = rng.choice(sorted(ROUTES))
        headers = {**keys_for(_caller(ROUTES[(method, path)])), "content-type": "application/json"}
        return (
            "body over the cap",
            "POST" if method == "POST" else method,
            _fill(path),
            headers,
            b" " * (MAX_BODY + 1),
        )

    def long_url_case() -> tuple[str, str, str, dict[str, str], bytes]:
        method, path = rng.choice(api)
        return "URL too long", method, _fill(path) + "?q=" + "a" * 9000, keys_for("admin"), b""

    def unknown_route_case() -> tuple[str, str, str, dict[str, str], bytes]:
        tail = "".join(rng.choice("abcdefghij/-_.") for _ in range(rng.randint(1, 40)))
        return "unknown route", rng.choice(["GET", "POST"]), f"/api/v1/zz{tail}", keys_for("admin"), b""

    families = [
        body_case, body_case, body_case, int_path_case, id_case, query_case,
        auth_case, method_case, oversize_case, long_url_case, unknown_route_case,
    ]  # fmt: skip
    return [rng.choice(families)() for _ in range(size)]


_KEYS: dict[str, dict[str, str]] = {}


def keys_for(caller: str) -> dict[str, str]:
    return dict(_KEYS[caller])


@pytest.mark.heavy
def test_ten_thousand_malformed_requests_are_all_clean_4xx_and_store_nothing(target: Target) -> None:
    _KEYS.update(target.keys)
    before = _stored(target.platform)
    corpus = _corpus(target.client.app, CORPUS_SIZE)
    statuses: Counter[int] = Counter()
    families: Counter[str] = Counter()
    failures: list[str] = []
    for family, method, url, headers, body in corpus:
        response = target.client.request(method, url, headers=headers, content=body)
        statuses[response.status_code] += 1
        families[family] += 1
        if not (400 <= response.status_code < 500 and _error_shaped(response)):
            failures.append(f"{family}: {method} {url[:120]} -> {response.status_code} {response.text[:160]}")
    print(f"malformed corpus: {len(corpus)} requests, statuses {dict(sorted(statuses.items()))}")
    print(f"families: {dict(families)}")
    assert not failures, f"{len(failures)} not a clean 4xx, e.g.:\n" + "\n".join(failures[:15])
    assert _stored(target.platform) == before, "a malformed request stored something"
    assert len({f.split(":")[0] for f in families}) == 9 and len(corpus) == CORPUS_SIZE


def test_the_readings_media_type_is_matched_exactly(target: Target) -> None:
    # a device of its own: the fuzzing above may have disabled or rotated the others
    from pitstop.ingest.devices import DeviceRegistry

    _, token = DeviceRegistry(target.platform.db).add("eng-001")
    device = {"Authorization": f"Bearer {token}"}
    good = json.dumps(readings("eng-001", 1, 0, 1)).encode()
    for media in ("text/notjson", "application/jsonx", "text/json", "application/json-patch+json"):
        r = target.client.post("/api/v1/readings", content=good, headers={**device, "content-type": media})
        assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type", media
    fine = target.client.post(
        "/api/v1/readings",
        content=good,
        headers={**device, "content-type": "Application/JSON; charset=utf-8"},
    )
    assert fine.status_code == 202, fine.text


def test_a_chunked_body_over_the_cap_is_refused_as_it_arrives(target: Target) -> None:
    chunks = (b" " * 8192 for _ in range(MAX_BODY // 8192 + 2))  # no Content-Length: chunked
    r = target.client.post(
        "/api/v1/predict",
        content=chunks,
        headers={**target.keys["viewer"], "content-type": "application/json"},
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
