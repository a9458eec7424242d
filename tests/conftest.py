from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from pitstop.config import Settings, load_settings
from pitstop.platform import Platform

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def admin_headers(platform: Platform) -> dict[str, str]:
    """The admin token as a bearer header: automation's way in (tests of roles use real users)."""
    return {"Authorization": f"Bearer {platform.admin_token()}"}


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    return load_settings(None, data_dir=data_dir, **overrides)


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    """A fresh, empty platform (no model) under a temporary folder."""
    p = Platform.open(make_settings(tmp_path / "data"))
    yield p
    p.close()


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with last season seeded, the live fleet registered and a champion trained (once)."""
    from pitstop.demo import ensure_champion, ensure_live_fleet, seed_last_season

    root = tmp_path_factory.mktemp("trained") / "data"
    p = Platform.open(make_settings(root))
    try:
        seed_last_season(p, echo=lambda _: None)
        ensure_live_fleet(p)
        ensure_champion(p, echo=lambda _: None)
    finally:
        p.close()
    return root


@pytest.fixture
def trained(trained_dir: Path, tmp_path: Path) -> Iterator[Platform]:
    """A private copy of the trained data dir, opened, with the champion loaded."""
    copy = tmp_path / "data"
    shutil.copytree(trained_dir, copy)
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
