"""Several API servers over one PostgreSQL ops DB: a re-send through another server is a duplicate,
a device's rate is counted across servers, and a store that is away is a 503 with Retry-After."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pitstop.cluster.postgres import Postgres
from pitstop.config import load_settings
from pitstop.errors import RateLimitedError, StorageError
from pitstop.ingest import Intake
from pitstop.platform import Platform
from tests.test_api import readings


@pytest.fixture
def servers(tmp_path: Path, postgres: Postgres) -> Iterator[tuple[Platform, Platform]]:
    """Two platforms (two API servers' worth) over one data dir's bus and one PostgreSQL ops DB."""
    url = postgres.create_database(f"t{uuid.uuid4().hex[:12]}")
    settings = load_settings(
        None, data_dir=tmp_path / "data", ops_db_url=url, intake_workers=0, device_rate_burst=3
    )
    a = Platform.open(settings)
    b = Platform.open(settings)
    yield a, b
    a.close()
    b.close()


def _device(platform: Platform, machine: str) -> str:
    from pitstop.ingest.devices import DeviceRegistry

    return DeviceRegistry(platform.db).add(machine, "turbofan")[1]


def test_a_resend_through_another_server_is_a_duplicate(servers: tuple[Platform, Platform]) -> None:
    a, b = servers
    token = _device(a, "eng-501")
    first, second = Intake(a), Intake(b)
    batch = readings("eng-501", 1, 0, 10)
    sent = first.submit(first.authenticate(token), batch)
    assert (sent.accepted, sent.duplicates) == (10, 0)
    again = second.submit(second.authenticate(token), batch)
    assert (again.accepted, again.duplicates, again.position) == (0, 10, None)
    assert a.bus.head() == 1, "published once"
    more = second.submit(second.authenticate(token), readings("eng-501", 1, 5, 10))
    assert (more.accepted, more.duplicates) == (5, 5)


def test_an_agent_asking_another_server_learns_the_last_seq_accepted_anywhere(
    servers: tuple[Platform, Platform],
) -> None:
    a, b = servers
    token = _device(a, "eng-503")
    first, second = Intake(a), Intake(b)
    assert second.last_seq("eng-503") == -1, "nothing accepted yet"
    first.submit(first.authenticate(token), readings("eng-503", 1, 0, 7))
    assert second.last_seq("eng-503") == 7, "the seq is shared state, not one server's memory"


def test_a_device_rate_is_counted_across_servers(servers: tuple[Platform, Platform]) -> None:
    a, b = servers
    token = _device(a, "eng-502")
    first, second = Intake(a), Intake(b)
    identity = first.authenticate(token)
    first.admit(identity)
    first.admit(identity)
    second.admit(identity)  # the burst of 3 is spent, whichever server took it
    with pytest.raises(RateLimitedError) as refused:
        second.admit(identity)
    assert int(refused.value.headers["Retry-After"]) >= 1


def test_postgresql_away_is_a_503_with_retry_after_and_intake_recovers(tmp_path: Path) -> None:
    """A PostgreSQL of its own, stopped under a serving intake and started again."""
    import tempfile

    from pitstop.cluster.postgres import start_postgres
    from tests.conftest import free_port

    folder = Path(tempfile.mkdtemp(prefix="pitstop-pg-"))
    folder.chmod(0o755)
    server = start_postgres(folder / "cluster", free_port())
    try:
        settings = load_settings(None, data_dir=tmp_path / "data", ops_db_url=server.url(), intake_workers=0)
        platform = Platform.open(settings)
        try:
            token = _device(platform, "eng-503")
            intake = Intake(platform)
            identity = intake.authenticate(token)
            assert intake.submit(identity, readings("eng-503", 1, 0, 3)).accepted == 3
            server.stop()
            with pytest.raises(StorageError) as away:
                intake.submit(identity, readings("eng-503", 1, 3, 3))
            assert away.value.status == 503 and away.value.headers["Retry-After"] == "2"
            server.start()
            results = []
            for _ in range(3):  # a pooled connection from before the restart may fail once
                try:
                    results.append(intake.submit(identity, readings("eng-503", 1, 3, 3)).accepted)
                    break
                except StorageError:
                    continue
            assert results == [3], "intake recovers on its own once PostgreSQL is back"
        finally:
            platform.close()
    finally:
        server.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)
