"""A full disk, for real: the data dir on a small tmpfs that is filled to the last byte. New
readings are refused with a clear 503 (never a 500), what is stored stays readable, the processor
says so once (not a traceback every second), and when space returns everything accepted lands in
the lake exactly once."""

from __future__ import annotations

import errno
import logging
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pitstop.ingest.devices import DeviceRegistry
from pitstop.platform import Platform
from pitstop.processor import Processor
from pitstop.schema import default_fleet
from pitstop.web import create_app
from tests.conftest import admin_headers, make_settings

TURBOFAN = default_fleet().machine_types["turbofan"]
MIDDLE = {s.name: (s.low + s.high) / 2 for s in TURBOFAN.sensors}  # in range: into telemetry


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if made.returncode != 0:  # needs root with mount rights (CI and the dev machine have them)
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _readings(first: int, n: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    return [
        {
            "machine_id": "eng-001",
            "ts": (now - timedelta(seconds=n - i)).isoformat(),
            "seq": first + i,
            "values": {name: value + (i % 7) * 1e-3 for name, value in MIDDLE.items()},
        }
        for i in range(n)
    ]


def _fill(disk: Path) -> Path:
    ballast = disk / "ballast"
    with open(ballast, "wb", buffering=0) as fh:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    fh.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    return ballast


def test_a_full_disk_refuses_readings_cleanly_and_loses_nothing(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    platform = Platform.open(make_settings(small_disk / "data", lake_upkeep_every_s=0))
    _, token = DeviceRegistry(platform.db).add("eng-001", "turbofan", platform.fleet)
    device = {"Authorization": f"Bearer {token}"}
    proc = Processor(platform)
    proc.bootstrap()
    try:
        with TestClient(create_app(platform, proc), raise_server_exceptions=False) as client:
            assert client.post("/api/v1/readings", json=_readings(1, 50), headers=device).status_code == 202
            proc.run_once()
            assert platform.lake.read("telemetry").height == 50
            # accepted, then the disk fills before the processor gets to them
            assert client.post("/api/v1/readings", json=_readings(51, 50), headers=device).status_code == 202
            ballast = _fill(small_disk)

            refused = client.post("/api/v1/readings", json=_readings(101, 4000), headers=device)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "bus_unavailable"
            assert "full" in refused.json()["error"]["message"]
            # what is stored can still be read
            machines = client.get("/api/v1/machines", headers=admin_headers(platform))
            assert machines.status_code == 200 and client.get("/healthz").status_code == 200

            with caplog.at_level(logging.WARNING, logger="pitstop"):
                proc.start()
                time.sleep(3.5)  # long enough for three failed attempts (1 s, then 2 s)
                failures = [r for r in caplog.records if "processor batch failed" in r.getMessage()]
                assert len(failures) == 1 and failures[0].exc_info is None  # one line, no traceback
                assert "full" in failures[0].getMessage() or "space" in failures[0].getMessage()

                ballast.unlink()  # space again: the processor carries on by itself
                deadline = time.monotonic() + 40
                while platform.lake.read("telemetry").height < 100:
                    assert time.monotonic() < deadline, "the processor did not recover"
                    time.sleep(0.2)
                assert any("succeed again" in r.getMessage() for r in caplog.records)
            proc.stop()

            again = client.post("/api/v1/readings", json=_readings(101, 4000), headers=device)
            assert again.status_code == 202, again.text
            proc.run_once()
        seqs = platform.lake.read("telemetry")["seq"].to_list()
        assert sorted(seqs) == list(range(1, 4101))  # every accepted reading once
    finally:
        platform.close()


def test_a_read_only_data_dir_is_one_clear_line(small_disk: Path) -> None:
    from click.testing import CliRunner

    from pitstop.cli import cli

    data = small_disk / "data"
    Platform.open(make_settings(data)).close()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    run = CliRunner().invoke(cli, ["audit", "--data-dir", str(data)])
    assert run.exit_code == 2 and "Traceback" not in run.output, run.output
    (line,) = [x for x in run.output.splitlines() if x.strip()]
    assert line.startswith("error [storage_unavailable]: cannot use the data dir") and "read-only" in line
