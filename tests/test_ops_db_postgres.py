"""The ops DB on PostgreSQL: what differs from the embedded SQLite file (a server that may be
down, sequences, session time zones, row locks, several processes at once). The store, API and
processor modules run on both backends through the ``ops_db`` fixture (conftest)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest
import sqlalchemy
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

import pitstop.lake.outbox
from pitstop.cli import cli
from pitstop.cluster.postgres import Postgres
from pitstop.errors import ConflictError, StorageError
from pitstop.maintenance import transition
from pitstop.platform import Platform
from pitstop.store import Database, LakeOutbox, WorkOrder
from pitstop.web import create_app
from tests.conftest import admin_headers, free_port, make_settings
from tests.test_crash_windows import _order


@pytest.fixture
def pg_url(postgres: Postgres, monkeypatch: pytest.MonkeyPatch) -> str:
    url = postgres.create_database(f"t{uuid4().hex[:12]}")
    monkeypatch.setenv("PITSTOP_OPS_DB_URL", url)
    return url


@pytest.fixture
def pg_platform(pg_url: str, tmp_path: Path) -> Iterator[Platform]:
    p = Platform.open(make_settings(tmp_path / "data"))
    yield p
    p.close()


def _event(platform: Platform, detail: str) -> None:
    with platform.db.session() as s:
        pitstop.lake.outbox.enqueue(
            s,
            "events",
            {"machine_id": "eng-007", "ts": datetime.now(UTC), "kind": "inspection", "detail": detail},
        )
    platform.outbox.drain()


def test_an_unreachable_postgresql_is_one_line_naming_its_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()  # nothing listens there
    monkeypatch.setenv("PITSTOP_OPS_DB_URL", f"postgresql://pitstop@127.0.0.1:{port}/ops")
    with pytest.raises(StorageError) as caught:
        Platform.open(make_settings(tmp_path / "data"))
    assert caught.value.code == "ops_db_unreachable"
    assert f"PostgreSQL at 127.0.0.1:{port}/ops" in caught.value.message
    for command in (["users", "list"], ["alerts", "list"], ["audit"]):
        result = CliRunner().invoke(cli, [*command, "--data-dir", str(tmp_path / "data")])
        assert result.exit_code == 2, (command, result.output)
        assert result.output.startswith(
            f"error [ops_db_unreachable]: cannot connect to the ops DB, PostgreSQL at 127.0.0.1:{port}/ops"
        ), (command, result.output)
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_backup_and_restore_refuse_a_postgresql_ops_db_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PITSTOP_OPS_DB_URL", "postgresql+psycopg://pitstop@127.0.0.1:5432/ops")
    data = ["--data-dir", str(tmp_path / "data")]
    backed = CliRunner().invoke(cli, ["backup", str(tmp_path / "copy"), *data])
    assert backed.exit_code == 2
    assert backed.output.startswith(
        "error [ops_db_not_embedded]: the ops DB is PostgreSQL: back it up with pg_dump"
    )
    (tmp_path / "copy").mkdir()
    restored = CliRunner().invoke(cli, ["restore", str(tmp_path / "copy"), *data])
    assert restored.exit_code == 2
    assert restored.output.startswith("error [ops_db_not_embedded]: the ops DB is PostgreSQL: restore it")
    assert not (tmp_path / "data").exists()


def test_outbox_ids_restart_above_the_lake_after_an_older_postgresql_ops_db_comes_back(
    pg_platform: Platform,
) -> None:
    for n in range(3):
        _event(pg_platform, f"round {n}")
    # the ops DB goes back to before the last two (a pg_restore of a dump taken mid-way, say)
    with pg_platform.db.session() as s:
        s.execute(LakeOutbox.__table__.delete().where(LakeOutbox.id > 1))
        s.execute(text("SELECT setval(pg_get_serial_sequence('lake_outbox', 'id'), 1)"))
    data_dir = pg_platform.settings.data_dir
    pg_platform.close()
    restarted = Platform.open(make_settings(data_dir))
    try:
        _event(restarted, "after the restore")
        assert restarted.outbox.pending() == 0
        details = sorted(str(e["detail"]) for e in restarted.lake.read("events").iter_rows(named=True))
        assert details == ["after the restore", "round 0", "round 1", "round 2"]  # not taken as stored
    finally:
        restarted.close()


def test_times_read_back_in_utc_whatever_the_servers_time_zone(pg_url: str, tmp_path: Path) -> None:
    database = sqlalchemy.make_url(pg_url).database
    engine = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f"ALTER DATABASE \"{database}\" SET timezone TO 'Asia/Kolkata'"))
    engine.dispose()
    platform = Platform.open(make_settings(tmp_path / "data"))
    try:
        platform.db.audit("cli", "checked")
        (entry,) = platform.db.audit_entries(action="checked")
        assert entry["ts"].endswith("+00:00"), entry["ts"]
    finally:
        platform.close()


def test_a_work_order_racing_another_close_sees_it_and_closes_once(pg_platform: Platform) -> None:
    order_id = _order(pg_platform)
    outcome: list[object] = []
    holder = pg_platform.db.engine.connect()
    try:
        holder.begin()
        holder.execute(text("SELECT id FROM work_orders WHERE id = :id FOR UPDATE"), {"id": order_id})

        def close() -> None:
            try:
                outcome.append(transition(pg_platform, order_id, "done", finding="fault_confirmed"))
            except ConflictError as exc:
                outcome.append(exc)

        racer = threading.Thread(target=close)
        racer.start()
        assert _someone_waits_for_a_lock(pg_platform.db), "the racer never waited for the row"
        holder.execute(
            WorkOrder.__table__.update().where(WorkOrder.id == order_id).values(status="cancelled")
        )
        holder.commit()
    finally:
        holder.close()
    racer.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], ConflictError), outcome
    assert outcome[0].code == "invalid_transition"


def _someone_waits_for_a_lock(db: Database, within: float = 10) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with db.engine.connect() as conn:  # a fresh statistics snapshot each time
            query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            if conn.execute(text(query)).scalar():
                return True
        time.sleep(0.02)
    return False


def test_processes_starting_at_once_migrate_one_after_the_other(pg_url: str) -> None:
    # separate processes, as in a deployment (API servers and processor workers starting together):
    # each imports, says so, and migrates when told, all at the same moment
    script = (
        "import sys; from pitstop.store import Database; db = Database(sys.argv[1]); "
        "print('ready', flush=True); sys.stdin.readline(); db.migrate()"
    )
    starts = [
        subprocess.Popen(
            [sys.executable, "-c", script, pg_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for p in starts:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in starts:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    errors = [p.communicate(timeout=120)[1] for p in starts]
    assert [p.returncode for p in starts] == [0, 0, 0], errors


def test_a_postgresql_lost_mid_run_is_a_503_and_the_pool_reconnects_when_it_is_back(
    pg_platform: Platform, postgres: Postgres
) -> None:
    database = sqlalchemy.make_url(pg_platform.settings.ops_db_url).database

    def server(allow: bool) -> None:  # as if it went down (every connection cut) and came back
        postgres.psql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allow).lower()}')
        if not allow:
            postgres.psql(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"
            )

    with TestClient(create_app(pg_platform), headers=admin_headers(pg_platform)) as client:
        assert client.get("/api/v1/work-orders").status_code == 200
        server(allow=False)
        lost = client.get("/api/v1/work-orders")
        assert lost.status_code == 503, lost.text
        assert lost.json()["error"]["code"] == "ops_db_unavailable"
        assert lost.headers["Retry-After"]
        server(allow=True)
        assert client.get("/api/v1/work-orders").status_code == 200


def test_a_server_restart_between_two_transactions_is_not_an_error(pg_url: str, postgres: Postgres) -> None:
    db = Database(pg_url)
    try:
        with db.session() as s:
            s.execute(text("SELECT 1"))
        database = sqlalchemy.make_url(pg_url).database
        postgres.psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'")
        with db.session() as s:  # the pooled connection is dead: checked and replaced, not raised
            assert s.execute(text("SELECT 1")).scalar() == 1
    finally:
        db.close()


def test_a_postgresql_user_who_may_not_create_tables_is_told_so_in_one_line(
    pg_url: str, postgres: Postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = sqlalchemy.make_url(pg_url).database
    role = f"r{uuid4().hex[:8]}"
    postgres.psql(f"CREATE ROLE {role} LOGIN")
    postgres.psql("REVOKE CREATE ON SCHEMA public FROM PUBLIC", database=database)
    monkeypatch.setenv("PITSTOP_OPS_DB_URL", pg_url.replace("pitstop@", f"{role}@"))
    result = CliRunner().invoke(cli, ["users", "list", "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error [ops_db_unavailable]: cannot migrate the ops DB, PostgreSQL at ")
    assert "permission denied" in result.output and len(result.output.strip().splitlines()) == 1


def test_two_processes_draining_the_outbox_at_once_take_turns_and_append_each_event_once(
    pg_platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pg_platform.db.session() as s:
        for n in range(3):
            pitstop.lake.outbox.enqueue(
                s,
                "events",
                {"machine_id": "eng-007", "ts": datetime.now(UTC), "kind": "inspection", "detail": str(n)},
            )
    other = Platform.open(make_settings(pg_platform.settings.data_dir))  # a second server, say
    inside, go = threading.Event(), threading.Event()
    append = pg_platform.lake.append

    def slow_append(*args: object, **kwargs: object) -> bool:
        inside.set()
        go.wait(10)
        return append(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pg_platform.lake, "append", slow_append)
    try:
        first = threading.Thread(target=pg_platform.outbox.drain)
        first.start()
        assert inside.wait(10)
        second = threading.Thread(target=other.outbox.drain)
        second.start()
        # the second waits for the first (the lake's position check alone leaves a window between
        # its check and its commit, in two processes)
        waited = _someone_waits_for_a_lock(pg_platform.db, within=2)
        go.set()
        first.join(10)
        second.join(10)
        details = sorted(str(e["detail"]) for e in other.lake.read("events").iter_rows(named=True))
        assert details == ["0", "1", "2"]
        assert waited
    finally:
        other.close()
