from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from pitstop.cluster.postgres import Postgres
from pitstop.config import Settings, load_settings
from pitstop.platform import Platform

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``heavy`` (the heaviest scale-out variants, full-data and end-to-end runs with
    a lighter sibling in the suite) run only with PITSTOP_ALL_TESTS=1:
    CI runs a representative subset to stay within its time; run them all before a release."""
    if os.environ.get("PITSTOP_ALL_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="heavy: run with PITSTOP_ALL_TESTS=1")
    for item in items:
        if "heavy" in item.keywords:
            item.add_marker(skip)


def admin_headers(platform: Platform) -> dict[str, str]:
    """The admin token as a bearer header: automation's way in (tests of roles use real users)."""
    return {"Authorization": f"Bearer {platform.admin_token()}"}


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    return load_settings(None, data_dir=data_dir, **overrides)


# The modules whose every test runs on both ops DBs (test IDs say which: ``[sqlite]``,
# ``[postgresql]``); elsewhere the ops DB is the embedded SQLite one. To try more modules on both:
# PITSTOP_TEST_BOTH_OPS_DBS=test_auth,test_alerts pytest tests/test_auth.py tests/test_alerts.py
BOTH_OPS_DBS = {"test_store", "test_api", "test_processor"} | {
    m for m in os.environ.get("PITSTOP_TEST_BOTH_OPS_DBS", "").split(",") if m
}
OPS_DBS = ("sqlite", "postgresql")
HEAVY_ON_POSTGRESQL = {"test_api"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if module in BOTH_OPS_DBS and "ops_db" in metafunc.fixturenames:
        # CI's representative subset: the store and processor modules on PostgreSQL; the API
        # module's PostgreSQL variants are heavy (PITSTOP_ALL_TESTS=1 runs them)
        heavy = module in HEAVY_ON_POSTGRESQL
        params = [
            pytest.param(db, marks=pytest.mark.heavy) if db == "postgresql" and heavy else db
            for db in OPS_DBS
        ]
        metafunc.parametrize("ops_db", params, indirect=True, ids=OPS_DBS)


@pytest.fixture
def ops_db_env() -> Iterator[pytest.MonkeyPatch]:
    """The environment the ops DB fixtures set: not the test's ``monkeypatch``, whose ``undo()``
    (a test ending a fault mid-way) must not take the ops DB away."""
    with pytest.MonkeyPatch.context() as env:
        yield env


@pytest.fixture(autouse=True)
def ops_db(request: pytest.FixtureRequest) -> str:
    """The test's ops DB backend. For ``postgresql``: a fresh database in the session's cluster,
    handed to every ``Settings`` through ``PITSTOP_OPS_DB_URL``."""
    backend: str = getattr(request, "param", "sqlite")
    if backend == "postgresql":
        server: Postgres = request.getfixturevalue("postgres")
        env: pytest.MonkeyPatch = request.getfixturevalue("ops_db_env")
        env.setenv("PITSTOP_OPS_DB_URL", server.create_database(f"t{uuid4().hex[:12]}"))
    return backend


@pytest.fixture
def platform(ops_db: str, tmp_path: Path) -> Iterator[Platform]:
    """A fresh, empty platform (no model) under a temporary folder."""
    p = Platform.open(make_settings(tmp_path / "data"))
    yield p
    p.close()


def _train(root: Path, **overrides: object) -> Path:
    """A data dir with last season seeded, the live fleet registered and a champion trained."""
    from pitstop.demo import ensure_champion, ensure_live_fleet, seed_last_season

    p = Platform.open(make_settings(root, **overrides))
    try:
        seed_last_season(p, echo=lambda _: None)
        ensure_live_fleet(p)
        ensure_champion(p, echo=lambda _: None)
    finally:
        p.close()
    return root


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with last season seeded, the live fleet registered and a champion trained (once)."""
    return _train(tmp_path_factory.mktemp("trained") / "data")


@pytest.fixture(scope="session")
def trained_pg(tmp_path_factory: pytest.TempPathFactory, postgres: Postgres) -> tuple[Path, str]:
    """The trained data dir with its ops DB in PostgreSQL (once): the folder and the database
    that tests copy (``CREATE DATABASE … TEMPLATE``)."""
    name = f"trained{uuid4().hex[:8]}"
    url = postgres.create_database(name)
    return _train(tmp_path_factory.mktemp("trained-pg") / "data", ops_db_url=url), name


@pytest.fixture
def trained(ops_db: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Platform]:
    """A private copy of the trained data dir (and, on PostgreSQL, of its ops DB), opened, with
    the champion loaded."""
    copy = tmp_path / "data"
    if ops_db == "postgresql":
        source, template = request.getfixturevalue("trained_pg")
        server: Postgres = request.getfixturevalue("postgres")
        shutil.copytree(source, copy)
        url = server.create_database(f"t{uuid4().hex[:12]}", template=template)
        request.getfixturevalue("ops_db_env").setenv("PITSTOP_OPS_DB_URL", url)
        p = Platform.open(make_settings(copy))
    else:
        shutil.copytree(request.getfixturevalue("trained_dir"), copy)
        p = Platform.open(make_settings(copy))
    p.scorer.reload()
    yield p
    p.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A real nats-server: JetStream on file storage, sync_interval always, MQTT listener."""
    from pitstop.bus.nats_server import start_server

    port, mqtt_port = free_port(), free_port()
    proc = start_server(tmp_path_factory.mktemp("nats"), port, mqtt_port=mqtt_port)
    yield f"nats://127.0.0.1:{port}", mqtt_port
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def nats_url(nats_server: tuple[str, int]) -> str:
    return nats_server[0]


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A throwaway PostgreSQL cluster (Debian's postgresql-15, started in about a second); tests make
    their own databases in it with ``create_database``."""
    import tempfile

    from pitstop.cluster.postgres import start_postgres

    folder = Path(tempfile.mkdtemp(prefix="pitstop-pg-"))
    folder.chmod(0o755)  # the postgres user (the server will not run as root) must reach it
    server = start_postgres(folder / "cluster", free_port())
    yield server
    server.stop("immediate")
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local S3 endpoint (moto_server); buckets are made with ``pitstop.cluster.s3.create_bucket``."""
    from pitstop.cluster.s3 import CREDENTIALS, start_s3

    port = free_port()
    proc = start_s3(tmp_path_factory.mktemp("s3"), port)
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    yield f"http://127.0.0.1:{port}"
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    proc.terminate()
    proc.wait(10)
