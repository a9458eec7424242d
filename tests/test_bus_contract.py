"""One contract, every bus backend: the embedded SQLite log and NATS JetStream."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pitstop.bus import Bus, SqliteBus
from pitstop.bus.nats import NatsBus
from tests.conftest import admin_headers


@pytest.fixture(params=["sqlite", "nats"])
def make_bus(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    opened: list[Bus] = []
    stream = f"T{uuid.uuid4().hex[:8]}".upper()

    def make() -> Bus:
        bus: Bus
        if request.param == "sqlite":
            bus = SqliteBus(tmp_path / "bus.db")
        else:
            bus = NatsBus(request.getfixturevalue("nats_url"), stream=stream)
        opened.append(bus)
        return bus

    yield make
    for bus in opened:
        bus.close()


def test_publish_read_commit(make_bus: object) -> None:
    bus = make_bus()  # type: ignore[operator]
    assert bus.head() == 0 and bus.position("c") == 0 and bus.read("c", 10) == []
    positions = [bus.publish(f"m{i}".encode()) for i in range(5)]
    assert positions == sorted(positions) and len(set(positions)) == 5
    assert bus.head() == positions[-1]
    first = bus.read("c", 3)
    assert [m.payload for m in first] == [b"m0", b"m1", b"m2"]
    assert bus.read("c", 3) == first  # nothing committed: the same batch again
    bus.commit("c", first[-1].position)
    assert bus.position("c") == first[-1].position
    assert [m.payload for m in bus.read("c", 10)] == [b"m3", b"m4"]
    assert bus.read("other", 1)[0].payload == b"m0"  # consumers are independent


def test_position_survives_reopen_and_uncommitted_reads_come_back(make_bus: object) -> None:
    bus = make_bus()  # type: ignore[operator]
    for i in range(4):
        bus.publish(f"m{i}".encode())
    batch = bus.read("c", 2)
    bus.commit("c", batch[-1].position)
    bus.read("c", 10)  # read but never committed: a crash before the commit
    again = make_bus()  # type: ignore[operator]  # a new process
    assert again.position("c") == batch[-1].position
    assert [m.payload for m in again.read("c", 10)] == [b"m2", b"m3"]
    assert again.head() == bus.head()


def test_large_batches_and_concurrent_publishers(make_bus: object) -> None:
    bus = make_bus()  # type: ignore[operator]
    big = b"x" * (2 * 1024 * 1024)  # a 5,000-reading batch is about 1 MB of Arrow
    assert bus.read("c", 1) == [] and bus.publish(big) >= 1
    assert bus.read("c", 1)[0].payload == big

    def publish(k: int) -> None:
        for i in range(50):
            bus.publish(f"{k}-{i}".encode())

    threads = [threading.Thread(target=publish, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    payloads = [m.payload for m in bus.read("d", 1000)]
    assert len(payloads) == 201 and len(set(payloads)) == 201


def test_pipeline_runs_unchanged_over_nats(trained_dir: Path, tmp_path: Path, nats_url: str) -> None:
    """Ingest → NATS JetStream → processor → lake: only the settings differ from the embedded default."""
    import json
    import shutil

    from fastapi.testclient import TestClient

    from pitstop.config import load_settings
    from pitstop.platform import Platform
    from pitstop.processor import Processor
    from pitstop.web import create_app
    from tests.test_api import post, readings

    data_dir = tmp_path / "data"
    shutil.copytree(trained_dir, data_dir)
    settings = load_settings(
        None, data_dir=data_dir, bus_backend="nats", nats_url=nats_url, nats_stream="E2E"
    )
    platform = Platform.open(settings)
    tokens = json.loads((data_dir / "demo-devices.json").read_text())
    try:
        assert isinstance(platform.bus, NatsBus)
        proc = Processor(platform)
        proc.bootstrap()
        with TestClient(create_app(platform, proc), headers=admin_headers(platform)) as client:
            for i in range(3):
                assert post(client, tokens["eng-007"], readings("eng-007", 7, 10 * i, 10)).status_code == 202
            report = proc.run_once()
            assert (report.messages, report.written, report.scored) == (3, 30, 1)
            assert post(client, tokens["eng-007"], readings("eng-007", 7, 30, 5)).status_code == 202
        restarted = Processor(platform)  # a new processor resumes at the committed position
        restarted.bootstrap()
        assert restarted.run_once().written == 5
        assert restarted.lag() == 0
        assert platform.lake.read("telemetry", machine_ids=["eng-007"]).height == 35
    finally:
        platform.close()
