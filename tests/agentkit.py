"""Test parts for the device agent: a real server on a port, a device's token file, the lake's rows."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import uvicorn
from deltalake import DeltaTable

from pitstop.ingest import DeviceRegistry
from pitstop.platform import Platform
from pitstop.processor import Processor
from pitstop.schema import TURBOFAN
from pitstop.sim import shipped
from pitstop.web import create_app
from tests.conftest import free_port


@contextmanager
def serve(platform: Platform, port: int | None = None) -> Iterator[str]:
    """The platform's API (intake, agent routes) served by uvicorn on a free port, no processor."""
    port = port or free_port()
    app = create_app(platform)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        # the alias follower may be inside a registry call (MLflow's store runs alembic on first
        # use): let it finish, so it cannot race the next test's Platform.open and its alembic
        for follower in [t for t in threading.enumerate() if t.name == "pitstop-follow-alias"]:
            follower.join(30)


def token_file(platform: Platform, folder: Path, machine_id: str, machine_type: str = "turbofan") -> Path:
    """Register a device for ``machine_id`` and write its token where an agent reads it."""
    _, token = DeviceRegistry(platform.db).add(machine_id, machine_type, platform.fleet)
    path = folder / f"{machine_id}.token"
    path.write_text(token + "\n")
    return path


def turbofan_rows(n: int) -> list[dict[str, float]]:
    """``n`` real C-MAPSS sensor rows (cycled), as a source would read them."""
    rows = shipped("fd001_test").select(TURBOFAN.sensor_names).to_dicts()
    return [rows[i % len(rows)] for i in range(n)]


def landed(platform: Platform, machine_id: str) -> pl.DataFrame:
    """Drain the bus into the lake, then the machine's telemetry rows (seq order)."""
    processor = Processor(platform)
    idle = 0
    while idle < 3:  # a micro-batch may carry no readings (a quarantine-only or empty poll)
        idle = 0 if processor.run_once().readings else idle + 1
    path = platform.settings.lake_dir / "telemetry"
    frame = pl.from_arrow(DeltaTable(str(path)).to_pyarrow_table())
    assert isinstance(frame, pl.DataFrame)
    return frame.filter(pl.col("machine_id") == machine_id).sort("seq")
