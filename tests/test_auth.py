"""Users, roles, sessions and keys: every route checked against the permission table."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import update

from pitstop.cli import cli
from pitstop.errors import ValidationError
from pitstop.platform import Platform
from pitstop.processor import Processor
from pitstop.store import WebSession, utcnow
from pitstop.web import create_app
from pitstop.web.guard import api_routes
from pitstop.web.permissions import DEVICE, METRICS, PUBLIC, ROLES, ROUTES, role_has
from pitstop.web.users import Users
from tests.conftest import make_settings

# a value for each path parameter: real where the route can answer 200
SAMPLE = {
    "machine_id": "eng-001",
    "order_id": "999999",
    "device_id": "999999",
    "silence_id": "999999",
    "machine_type": "turbofan",
    "conversation_id": "abc123",
}
# allowed GETs that may not answer 200 on the sample data (and why)
NOT_200 = {
    "/api/v1/machines/{machine_id}/explanation": 404,  # eng-001 has no readings yet
    "/api/v1/assistant/conversations/{conversation_id}": 404,  # nobody has that conversation
    "/api/v1/features": 422,  # no machine_ids asked
}


def _url(path: str) -> str:
    for name, value in SAMPLE.items():
        path = path.replace("{" + name + "}", value)
    return path


def _keys(platform: Platform) -> dict[str, dict[str, str]]:
    users = Users(platform.db)
    keys = {}
    for role in ROLES:
        users.add(f"user-{role}", role)
        keys[role] = {"Authorization": f"Bearer {users.create_key(f'user-{role}')}"}
    return keys


@pytest.fixture(scope="module")
def app_and_keys(
    trained_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, dict[str, dict[str, str]]]]:
    """One trained platform for every route and role (the calls change nothing they read)."""
    copy = tmp_path_factory.mktemp("roles") / "data"
    shutil.copytree(trained_dir, copy)
    platform = Platform.open(make_settings(copy))
    platform.scorer.reload()
    proc = Processor(platform)
    proc.bootstrap()
    keys = _keys(platform)
    with TestClient(create_app(platform, proc), follow_redirects=False) as client:
        yield client, keys
    platform.close()


def test_the_permission_table_names_every_route_and_only_routes(trained: Platform) -> None:
    app = create_app(trained)
    declared = {(m, r.path_format) for r in api_routes(app.routes) for m in r.methods or ()}
    assert declared == set(ROUTES), "pitstop.web.permissions.ROUTES must match the app's routes"


def test_a_route_without_a_rule_stops_the_app_from_starting(
    trained: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pitstop.errors import ConfigError

    monkeypatch.delitem(ROUTES, ("GET", "/api/v1/lake"))
    with pytest.raises(ConfigError, match="GET /api/v1/lake has no rule"):
        create_app(trained)


@pytest.mark.parametrize(("method", "path"), sorted(ROUTES))
def test_every_route_answers_each_role_by_the_table(
    app_and_keys: tuple[TestClient, dict[str, dict[str, str]]], method: str, path: str
) -> None:
    client, keys = app_and_keys
    rule = ROUTES[(method, path)]
    url = _url(path)
    page = not path.startswith("/api/") and path not in ("/logout", "/login", "/metrics", "/healthz")

    def call(headers: dict[str, str]) -> Any:
        if method == "GET":
            return client.get(url, headers=headers)
        if method == "DELETE":
            return client.delete(url, headers=headers)
        return client.post(url, json={}, headers=headers)

    anonymous = call({})
    if rule in (PUBLIC, DEVICE) or rule == METRICS:
        assert anonymous.status_code not in (403,) and anonymous.status_code < 500
        return
    if page:
        assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login?next=")
    else:
        assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "not_authenticated"
    for role in ROLES:
        response = call(keys[role])
        if role_has(role, rule):
            assert response.status_code not in (401, 403), (role, response.text)
            if method == "GET":
                assert response.status_code == NOT_200.get(path, 200), (role, response.text[:300])
        else:
            assert response.status_code == 403, (role, response.text[:300])
            if not page:
                assert response.json()["error"]["code"] == "forbidden"


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[TestClient, Platform, Users]]:
    """An app over an empty platform, with keys and sessions checked on every request."""
    platform = Platform.open(make_settings(tmp_path / "data", auth_cache_s=0, login_max_failures=3))
    users = Users(platform.db)
    with TestClient(create_app(platform), follow_redirects=False) as client:
        yield client, platform, users
    platform.close()


def login(client: TestClient, user: str, password: str, **extra: str) -> Any:
    return client.post("/login", data={"username": user, "password": password, **extra})


def test_login_sets_a_safe_session_cookie_and_logout_ends_it(
    web: tuple[TestClient, Platform, Users],
) -> None:
    client, _, users = web
    users.add("tess", "technician", "correct horse battery")
    assert client.get("/").status_code == 303
    assert client.get("/login").status_code == 200
    response = login(client, "tess", "correct horse battery", next="/work-orders")
    assert response.status_code == 303 and response.headers["location"] == "/work-orders"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "pitstop_session=" in cookie
    assert "secure" not in cookie  # plain http here; https (or a proxy saying so) adds Secure
    me = client.get("/api/v1/me").json()
    assert me["user"] == "tess" and me["role"] == "technician" and me["csrf_token"]
    assert "work_orders.transition" in me["permissions"] and "models.promote" not in me["permissions"]
    assert client.get("/").status_code == 200
    # a browser write needs the CSRF token, and must come from this origin
    ask = {"question": "which machines need attention?"}
    assert client.post("/api/v1/assistant/ask", json=ask).json()["error"]["code"] == "csrf_failed"
    token = {"X-CSRF-Token": me["csrf_token"]}
    assert client.post("/api/v1/assistant/ask", json=ask, headers=token).status_code == 200
    evil = {**token, "Origin": "https://evil.example"}
    assert client.post("/api/v1/assistant/ask", json=ask, headers=evil).status_code == 403
    # logout needs the token too, then the session is gone
    assert client.post("/logout", data={"csrf_token": "wrong"}).status_code == 403
    out = client.post("/logout", data={"csrf_token": me["csrf_token"]})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    client.cookies.clear()
    client.cookies.set("pitstop_session", response.cookies["pitstop_session"])  # replaying it
    assert client.get("/api/v1/me").status_code == 401


def test_failed_logins_do_not_tell_which_names_exist_and_are_throttled(
    web: tuple[TestClient, Platform, Users],
) -> None:
    client, _, users = web
    users.add("vic", "viewer", "the right password")
    as_json = {"headers": {"content-type": "application/json"}}
    wrong = client.post("/login", json={"username": "vic", "password": "nope nope"}, **as_json)
    unknown = client.post("/login", json={"username": "nobody", "password": "nope nope"}, **as_json)
    assert wrong.status_code == unknown.status_code == 401
    same = [{k: v for k, v in r.json()["error"].items() if k != "request_id"} for r in (wrong, unknown)]
    assert same[0] == same[1]  # the same answer, but for each request's own id
    assert wrong.json()["error"]["code"] == "invalid_credentials"
    assert login(client, "vic", "still wrong").headers["location"].startswith("/login?error=invalid")
    # the third failure for this name reaches the limit: even the right password waits now
    login(client, "vic", "wrong again")
    throttled = client.post("/login", json={"username": "vic", "password": "the right password"}, **as_json)
    assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) > 0
    # other names are not locked out by vic's failures
    users.add("val", "viewer", "another password")
    assert login(client, "val", "another password").status_code == 303


def test_sessions_end_after_idle_and_absolute_timeouts(web: tuple[TestClient, Platform, Users]) -> None:
    client, platform, users = web
    users.add("eng", "engineer", "engineer password")
    assert login(client, "eng", "engineer password").status_code == 303
    assert client.get("/api/v1/me").status_code == 200
    idle = timedelta(seconds=platform.settings.session_idle_s + 5)
    with platform.db.session() as s:
        s.execute(update(WebSession).values(last_seen=utcnow() - idle))
    assert client.get("/api/v1/me").status_code == 401
    assert login(client, "eng", "engineer password").status_code == 303
    too_old = timedelta(seconds=platform.settings.session_max_s + 5)
    with platform.db.session() as s:
        s.execute(update(WebSession).values(created_at=utcnow() - too_old))
    assert client.get("/api/v1/me").status_code == 401


def test_disabling_revoking_and_role_changes_apply_to_the_next_request(
    web: tuple[TestClient, Platform, Users],
) -> None:
    client, _, users = web
    users.add("root", "admin", "admin password")
    users.add("ed", "engineer", "engineer password")
    key = {"Authorization": f"Bearer {users.create_key('ed')}"}
    assert client.get("/api/v1/audit", headers=key).status_code == 200
    users.set_role("ed", "viewer")
    assert client.get("/api/v1/audit", headers=key).status_code == 403
    users.revoke_key("ed")
    assert client.get("/api/v1/me", headers=key).json()["error"]["code"] == "not_authenticated"
    key = {"Authorization": f"Bearer {users.create_key('ed')}"}
    assert client.get("/api/v1/me", headers=key).status_code == 200
    assert login(client, "ed", "engineer password").status_code == 303
    users.disable("ed")
    assert client.get("/api/v1/me", headers=key).status_code == 401
    assert client.get("/api/v1/me").status_code == 401  # the session ended too
    assert login(client, "ed", "engineer password").headers["location"].startswith("/login?error")
    # the admin token still works, as an admin
    admin = {"Authorization": f"Bearer {_admin_token(client)}"}
    assert client.get("/api/v1/me", headers=admin).json()["role"] == "admin"


def _admin_token(client: TestClient) -> str:
    platform: Platform = client.app.state.platform  # type: ignore[attr-defined]
    return platform.admin_token()


def test_a_one_time_login_link_works_once_and_never_redirects_off_site(
    web: tuple[TestClient, Platform, Users],
) -> None:
    client, _, users = web
    users.add("boss", "admin", "admin password")
    token = users.login_link_token("boss")
    first = client.get(f"/login?token={token}")
    assert first.status_code == 303 and first.headers["location"] == "/"
    assert client.get("/api/v1/me").json()["user"] == "boss"
    client.cookies.clear()
    again = client.get(f"/login?token={token}")
    assert again.status_code == 303 and "error=expired_link" in again.headers["location"]
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        response = login(client, "boss", "admin password", next=target)
        assert response.headers["location"] == "/"


def test_no_secret_reaches_a_log_line(
    web: tuple[TestClient, Platform, Users], caplog: pytest.LogCaptureFixture
) -> None:
    client, _, users = web
    caplog.set_level(logging.DEBUG)
    password = users.add("logme", "viewer", "a secret password")
    key = users.create_key("logme")
    login(client, "logme", password)
    login(client, "logme", "a wrong secret")
    client.get("/api/v1/me", headers={"Authorization": f"Bearer {key}"})
    text = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (password, "a wrong secret", key):
        assert secret not in text


def test_the_users_command(tmp_path: Path) -> None:
    runner = CliRunner()
    data = ["--data-dir", str(tmp_path / "data")]
    made = runner.invoke(cli, ["users", "add", "ana", "--role", "technician", *data])
    assert made.exit_code == 0, made.output
    password = made.stdout.strip().splitlines()[-1]
    assert len(password) >= 12 and "password" in made.stderr
    chosen = runner.invoke(
        cli, ["users", "add", "root", "--role", "admin", "--password-stdin", *data], input="typed pw 123\n"
    )
    assert chosen.exit_code == 0 and "typed pw 123" not in chosen.output
    listed = runner.invoke(cli, ["users", "list", "--json", *data])
    assert [line.count('"name"') for line in listed.stdout.splitlines()] == [1, 1]
    assert runner.invoke(cli, ["users", "set-role", "ana", "engineer", *data]).exit_code == 0
    key = runner.invoke(cli, ["users", "api-key", "ana", *data]).stdout.strip().splitlines()[-1]
    assert key.startswith("psk_")
    platform = Platform.open(make_settings(tmp_path / "data"))
    try:
        users = Users(platform.db)
        assert users.resolve_key(key) is not None and users.resolve_key(key).role == "engineer"  # type: ignore[union-attr]
        assert users.authenticate("ana", password) is not None
        assert users.authenticate("root", "typed pw 123") is not None
        reset = runner.invoke(cli, ["users", "reset-password", "ana", *data])
        assert users.authenticate("ana", password) is None
        assert users.authenticate("ana", reset.stdout.strip().splitlines()[-1]) is not None
        assert runner.invoke(cli, ["users", "api-key", "ana", "--revoke", "all", *data]).exit_code == 0
        assert users.resolve_key(key) is None
        assert runner.invoke(cli, ["users", "disable", "ana", *data]).exit_code == 0
        assert users.authenticate("ana", reset.stdout.strip().splitlines()[-1]) is None
        last = runner.invoke(cli, ["users", "disable", "root", *data])
        assert last.exit_code == 2 and "last_admin" in last.output
        bad = runner.invoke(cli, ["users", "add", "x y", "--role", "viewer", *data])
        assert bad.exit_code == 2 and "invalid_user_name" in bad.output
        actions = [e["action"] for e in platform.db.audit_entries(limit=20)]
        assert {"user_added", "user_role_set", "api_key_created", "user_disabled"} <= set(actions)
        rows = runner.invoke(cli, ["audit", "--json", "--action", "user_added", *data]).stdout.splitlines()
        assert {json.loads(r)["actor"] for r in rows} == {"cli"}
    finally:
        platform.close()


def test_parallel_guesses_count_before_the_password_is_checked() -> None:
    """A burst of guesses all waiting on argon2 at once is limited like a sequence of them."""
    from pitstop.errors import RateLimitedError
    from pitstop.web.login import LoginThrottle

    throttle = LoginThrottle(max_failures=3, window_s=60)
    stamps = [throttle.attempt("eng", "10.0.0.1") for _ in range(3)]  # none has finished yet
    with pytest.raises(RateLimitedError):
        throttle.attempt("eng", "10.0.0.2")
    throttle.succeeded("eng", "10.0.0.1", stamps[0])  # the right password: the name starts afresh
    throttle.attempt("eng", "10.0.0.1")
    # hostile names share one bucket: they cannot grow the table
    for i in range(5):
        with contextlib.suppress(RateLimitedError):
            throttle.attempt("x" * 10_000 + str(i), "10.0.0.3")
    assert len({key for key in throttle._failures if key[0] == "user"}) == 2


def test_a_login_link_is_spent_once_even_when_raced_and_dies_with_a_new_password(
    web: tuple[TestClient, Platform, Users],
) -> None:
    _, _, users = web
    users.add("root", "admin", "admin password")
    users.add("op", "admin", "admin password")
    token = users.login_link_token("root")
    with ThreadPoolExecutor(8) as pool:
        won = [p for p in pool.map(lambda _: users.redeem_login_token(token), range(8)) if p is not None]
    assert len(won) == 1
    token = users.login_link_token("root")
    users.reset_password("root")
    assert users.redeem_login_token(token) is None
    token, key = users.login_link_token("op"), users.create_key("op")
    users.disable("op")
    users.enable("op")
    assert users.redeem_login_token(token) is None and users.resolve_key(key) is None


def test_hostile_login_input_gets_a_clear_4xx(web: tuple[TestClient, Platform, Users]) -> None:
    client, _, users = web
    users.add("tess", "technician", "correct horse battery")
    form = {"username": "tess", "password": "correct horse battery"}
    bad_origin = client.post("/login", data=form, headers={"Origin": "http://["})
    assert bad_origin.status_code == 403 and bad_origin.json()["error"]["code"] == "csrf_failed"
    nested = client.post("/login", content=b"[" * 5000, headers={"content-type": "application/json"})
    assert nested.status_code == 422
    admin = {"Authorization": f"Bearer {_admin_token(client)}", "content-type": "application/json"}
    assert client.post("/api/v1/predict", content=b"[" * 5000, headers=admin).status_code == 422
    for name in ("ana\n", "admin-token", "cli"):
        with pytest.raises(ValidationError):
            users.add(name, "viewer", "a fine password")
    # logging in again ends the session this browser held
    first = login(client, "tess", "correct horse battery").cookies["pitstop_session"]
    login(client, "tess", "correct horse battery")
    client.cookies.clear()
    client.cookies.set("pitstop_session", first)
    assert client.get("/api/v1/me").status_code == 401


def test_a_route_outside_the_guard_stops_the_app_from_starting(trained: Platform) -> None:
    from starlette.routing import Route

    from pitstop.errors import ConfigError
    from pitstop.web.guard import check_every_route

    app = create_app(trained)
    app.router.routes.append(Route("/sneaky", lambda request: None))
    with pytest.raises(ConfigError, match="/sneaky does not pass the guard"):
        check_every_route(app.routes)
