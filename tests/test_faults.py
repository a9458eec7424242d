"""Kill the server, then the processor, with SIGKILL while readings stream in: every acknowledged
reading must land in the lake exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import orjson
import polars as pl
import pytest
from deltalake import DeltaTable

from pitstop.config import load_settings
from pitstop.ingest import DeviceRegistry
from pitstop.platform import Platform
from pitstop.schema import TURBOFAN
from pitstop.sim import shipped
from tests.conftest import free_port

pytestmark = pytest.mark.slow

MACHINES = 100
BATCH = 500
PER_MACHINE = 2000  # 100 machines x 2,000 = 200,000 readings
KILLS = 5


class Stack:
    """``pitstop serve --no-processor`` and ``pitstop process`` over one data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # small micro-batches: many commits, so kills land between and inside them
        self.env = {
            **os.environ,
            "OMP_WAIT_POLICY": "PASSIVE",
            "MLFLOW_LOGGING_LEVEL": "WARNING",
            "PITSTOP_PROCESSOR_MAX_MESSAGES": "4",
        }
        self.server: subprocess.Popen[bytes] | None = None
        self.processor: subprocess.Popen[bytes] | None = None
        self.orphans: list[int] = []

    def _spawn(self, *args: str) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "pitstop", *args, "--data-dir", str(self.data_dir)]
        return subprocess.Popen(cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start_server(self) -> None:
        self.server = self._spawn("serve", "--no-processor", "--port", str(self.port))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert self.server.poll() is None, "server died on start"
            time.sleep(0.1)
        raise AssertionError("server did not start")

    def start_processor(self) -> None:
        self.processor = self._spawn("process")

    def kill(self, which: str) -> None:
        proc = getattr(self, which)
        self.orphans.extend(children(proc.pid))  # the server's validation workers, for one
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        for proc in (self.server, self.processor):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(30)


def children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            kids += [int(k) for k in (task / "children").read_text().split()]
    return kids


def running(pid: int) -> bool:
    """Whether a process exists and is not a zombie (an exited child nobody has reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@pytest.fixture
def stack(trained_dir: Path, tmp_path: Path) -> Stack:
    data_dir = tmp_path / "data"
    shutil.copytree(trained_dir, data_dir)
    return Stack(data_dir)


def register(data_dir: Path) -> dict[str, str]:
    platform = Platform.open(
        load_settings(None, data_dir=data_dir, device_rate_limit=1000, device_rate_burst=1000)
    )
    try:
        registry = DeviceRegistry(platform.db)
        return {
            f"f-{i:03d}": registry.add(f"f-{i:03d}", "turbofan", platform.fleet)[1] for i in range(MACHINES)
        }
    finally:
        platform.close()


def send_all(url: str, tokens: dict[str, str], acked: list[tuple[str, int, int]]) -> None:
    """Each machine sends its batches in order; a batch is retried until acknowledged."""
    values = shipped("fd001_test").select(TURBOFAN.sensor_names).head(PER_MACHINE).to_dicts()

    async def machine(client: httpx.AsyncClient, machine_id: str, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}", "content-type": "application/json"}
        for first in range(1, PER_MACHINE + 1, BATCH):
            ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            body = orjson.dumps(
                [
                    {"machine_id": machine_id, "ts": ts, "seq": s, "values": values[s - 1]}
                    for s in range(first, first + BATCH)
                ]
            )
            while True:
                try:
                    r = await client.post("/api/v1/readings", content=body, headers=headers)
                except httpx.HTTPError:
                    await asyncio.sleep(0.2)
                    continue
                if r.status_code == 202:
                    acked.append((machine_id, first, BATCH))
                    break
                assert r.status_code >= 500 or r.status_code == 429, r.text
                await asyncio.sleep(0.2)

    async def run() -> None:
        limits = httpx.Limits(max_connections=8)
        async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits) as client:
            sem = asyncio.Semaphore(8)

            async def guarded(m: str, t: str) -> None:
                async with sem:
                    await machine(client, m, t)

            await asyncio.gather(*(guarded(m, t) for m, t in tokens.items()))

    asyncio.run(run())


def lake_rows(data_dir: Path, tokens: dict[str, str]) -> pl.DataFrame:
    table = DeltaTable(str(data_dir / "lake" / "telemetry")).to_pyarrow_table(columns=["machine_id", "seq"])
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame.filter(pl.col("machine_id").is_in(list(tokens)))


def wait_landed(data_dir: Path, tokens: dict[str, str], expected: int, timeout: float = 180) -> pl.DataFrame:
    deadline = time.monotonic() + timeout
    while True:
        rows = lake_rows(data_dir, tokens)
        if rows.unique().height >= expected or time.monotonic() > deadline:
            return rows
        time.sleep(1)


def check_exactly_once(rows: pl.DataFrame, acked: list[tuple[str, int, int]]) -> None:
    expected = pl.DataFrame(
        [(m, s) for m, first, n in acked for s in range(first, first + n)],
        schema=["machine_id", "seq"],
        orient="row",
    )
    assert expected.height == MACHINES * PER_MACHINE
    missing = expected.join(rows, on=["machine_id", "seq"], how="anti")
    assert missing.height == 0, f"{missing.height} acknowledged readings are not in the lake"
    assert rows.height == rows.unique().height == expected.height, "duplicates in the lake"


def processor_position(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "bus.db", timeout=30) as conn:
        row = conn.execute("SELECT position FROM consumers WHERE name = 'processor'").fetchone()
    return int(row[0]) if row else 0


def killer(stack: Stack, which: str, done: threading.Event, kills: list[float]) -> None:
    """SIGKILL the named process KILLS times, restarting it each time; each kill lands while it
    works: the server after it answers and requests are in flight, the processor after it has
    committed a batch since its restart."""
    rng = random.Random(7)
    restart = stack.start_server if which == "server" else stack.start_processor
    total = MACHINES * PER_MACHINE // BATCH
    while len(kills) < KILLS:
        if done.is_set() and (which == "server" or processor_position(stack.data_dir) >= total):
            return  # nothing left to interrupt
        if which == "processor":
            start = processor_position(stack.data_dir)
            deadline = time.monotonic() + 30
            while (
                processor_position(stack.data_dir) == start
                and time.monotonic() < deadline
                and not done.is_set()
            ):
                time.sleep(0.05)
        time.sleep(rng.uniform(0.2, 1.0))
        stack.kill(which)
        kills.append(time.monotonic())
        restart()


@pytest.mark.parametrize(
    "victim", ["server", pytest.param("processor", marks=pytest.mark.heavy)]
)  # a processor killed mid-batch also: test_processor.py's crash tests
def test_sigkill_loses_and_duplicates_nothing(stack: Stack, victim: str) -> None:
    tokens = register(stack.data_dir)
    stack.start_server()
    stack.start_processor()
    acked: list[tuple[str, int, int]] = []
    kills: list[float] = []
    done = threading.Event()
    chaos = threading.Thread(target=killer, args=(stack, victim, done, kills))
    try:
        chaos.start()
        send_all(stack.url, tokens, acked)
        done.set()  # the server victim stops here; the processor one goes on through the backlog
        chaos.join()
        rows = wait_landed(stack.data_dir, tokens, MACHINES * PER_MACHINE)
    finally:
        done.set()
        stack.stop()
    assert len(kills) == KILLS, f"only {len(kills)} kills happened while there was work"
    check_exactly_once(rows, acked)
    if victim == "server":  # its validation workers followed it, no orphans left behind
        assert stack.orphans, "the server had no worker processes to check"
        deadline = time.monotonic() + 10
        while any(running(pid) for pid in stack.orphans) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in stack.orphans if running(pid)]
