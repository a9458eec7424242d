"""Ingest benchmark: sustained readings/s accepted and landed in the lake, against the floor.

Runs ``pitstop serve --no-processor`` and ``pitstop process`` as two processes over a fresh data dir
(seeded and trained as the demo does), drives the HTTP endpoint over loopback with batches of
``--batch`` readings from ``--machines`` devices for ``--seconds``, and watches the lake's committed
bus position to time each batch's landing. The floor is measured in this process on the same
bodies: orjson parse + Arrow table + SQLite (WAL, synchronous=FULL) commit. The request bodies are
built before the clock starts, so the load generator's CPU goes to sending them.

    python bench/ingest.py [--seconds 20] [--machines 100] [--batch 500] [--concurrency 8]

The last line is one JSON object: readings_per_s, floor_readings_per_s, landing_lag_p99_s, lost,
duplicated (and more).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import polars as pl
import pyarrow as pa
from deltalake import DeltaTable
from loadgen import Connection

from pitstop.config import load_settings
from pitstop.demo import ensure_champion, seed_last_season
from pitstop.ingest import DeviceRegistry
from pitstop.platform import Platform
from pitstop.schema import TURBOFAN
from pitstop.sim import shipped


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def templates() -> list[dict[str, float]]:
    rows = shipped("fd001_test").select(TURBOFAN.sensor_names).head(2000).to_dicts()
    return rows


def make_body(machine_id: str, start_seq: int, n: int, values: list[dict[str, float]]) -> bytes:
    ts = datetime.now(UTC).isoformat()
    k = len(values)
    return orjson.dumps(
        [
            {"machine_id": machine_id, "ts": ts, "seq": start_seq + i, "values": values[(start_seq + i) % k]}
            for i in range(n)
        ]
    )


def floor(bodies: list[bytes], path: Path) -> float:
    """orjson parse + Arrow table + SQLite FULL commit, per batch, in one process."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS m (p INTEGER PRIMARY KEY, b BLOB)")
    sensors = TURBOFAN.sensor_names
    n = 0
    started = time.perf_counter()
    for body in bodies:
        rows = orjson.loads(body)
        table = pa.table(
            {
                "machine_id": [r["machine_id"] for r in rows],
                "ts": [r["ts"] for r in rows],
                "seq": [r["seq"] for r in rows],
                **{s: [r["values"][s] for r in rows] for s in sensors},
            }
        )
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
        conn.execute("INSERT INTO m(b) VALUES (?)", (sink.getvalue().to_pybytes(),))
        n += len(rows)
    elapsed = time.perf_counter() - started
    conn.close()
    return n / elapsed


class LandingWatcher(threading.Thread):
    """Polls the telemetry table's committed bus position (Delta app transaction)."""

    def __init__(self, table: str, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.table = table
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        dt = DeltaTable(self.table)
        while not self.stop.is_set():
            dt.update_incremental()
            self.samples.append((time.monotonic(), int(dt.transaction_version("processor") or 0)))
            self.stop.wait(self.interval)

    def landed_at(self, position: int) -> float | None:
        for t, committed in self.samples:
            if committed >= position:
                return t
        return None


async def drive(
    url: str,
    tokens: dict[str, str],
    seconds: float,
    batch: int,
    concurrency: int,
    values: list[dict[str, float]],
    bodies: dict[tuple[str, int], bytes],
) -> list[tuple[float, float, int, str, int, int]]:
    """Closed loop: ``concurrency`` connections, machines round-robin. Returns (sent, acked, position,
    machine, first seq, n) per acknowledged batch."""
    host, port = url.removeprefix("http://").split(":")
    machines = sorted(tokens)
    next_seq = dict.fromkeys(machines, 1)
    busy: set[str] = set()
    acks: list[tuple[float, float, int, str, int, int]] = []
    deadline = time.monotonic() + seconds
    turn = 0

    async def sender() -> None:
        nonlocal turn
        conn = Connection(host, int(port))
        while time.monotonic() < deadline:
            for _ in range(len(machines)):
                machine = machines[turn % len(machines)]
                turn += 1
                if machine not in busy:
                    break
            else:
                await asyncio.sleep(0.001)
                continue
            busy.add(machine)
            seq = next_seq[machine]
            body = bodies.pop((machine, seq), None) or make_body(machine, seq, batch, values)
            sent = time.monotonic()
            status, reply = await conn.post("/api/v1/readings", body, tokens[machine])
            if status == 202:
                acks.append(
                    (sent, time.monotonic(), int(orjson.loads(reply)["position"]), machine, seq, batch)
                )
                next_seq[machine] = seq + batch
            else:
                print(f"rejected {status}: {reply[:200]!r}", file=sys.stderr)
            busy.discard(machine)
        conn.close()

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return acks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--machines", type=int, default=100)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a temporary folder")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

    tmp = tempfile.TemporaryDirectory()
    data_dir = args.data_dir or Path(tmp.name) / "data"
    values = templates()

    print(f"setting up {data_dir} (seed + train as the demo does) …", flush=True)
    platform = Platform.open(load_settings(None, data_dir=data_dir))
    seed_last_season(platform, echo=lambda _: None)
    ensure_champion(platform, echo=lambda _: None)
    registry = DeviceRegistry(platform.db)
    tokens = {}
    for i in range(args.machines):
        machine = f"bench-{i:04d}-{int(time.time())}"
        tokens[machine] = registry.add(machine, "turbofan", platform.fleet)[1]
    platform.close()

    sample = [
        make_body(m, 1 + k * args.batch, args.batch, values) for k in range(3) for m in sorted(tokens)[:50]
    ]
    floor_rps = floor(sample, Path(tmp.name) / "floor.db")
    print(
        f"floor (orjson + Arrow + SQLite FULL commit, one process): {floor_rps:,.0f} readings/s", flush=True
    )

    # Bodies are built before the clock starts (enough for ~120k readings/s), so that the load
    # generator spends its CPU on sending rather than on JSON encoding: the server under test
    # shares the machine with it. Each keeps the time it was built at as its readings' ts.
    rounds = int(120_000 * args.seconds / args.batch / args.machines) + 1
    bodies = {
        (m, 1 + k * args.batch): make_body(m, 1 + k * args.batch, args.batch, values)
        for k in range(rounds)
        for m in sorted(tokens)
    }

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    pitstop = [sys.executable, "-m", "pitstop"]
    server = subprocess.Popen(
        [*pitstop, "serve", "--no-processor", "--data-dir", str(data_dir), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    processor = subprocess.Popen(
        [*pitstop, "process", "--data-dir", str(data_dir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        watcher = LandingWatcher(str(data_dir / "lake" / "telemetry"))
        watcher.start()
        print(
            f"driving {url} for {args.seconds:g}s: {args.machines} machines, batches of {args.batch}, "
            f"{args.concurrency} in flight …",
            flush=True,
        )
        started = time.monotonic()
        acks = asyncio.run(drive(url, tokens, args.seconds, args.batch, args.concurrency, values, bodies))
        send_seconds = time.monotonic() - started
        last_position = max(a[2] for a in acks)
        deadline = time.monotonic() + 120
        while watcher.landed_at(last_position) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        watcher.stop.set()
        watcher.join()
    finally:
        for proc in (server, processor):
            proc.terminate()
        for proc in (server, processor):
            proc.wait(30)

    accepted = sum(a[5] for a in acks)
    lags = []
    for _sent, acked, position, *_ in acks:
        landed = watcher.landed_at(position)
        lags.append((landed - acked) if landed is not None else float("inf"))
    all_landed = watcher.landed_at(last_position)
    landed_seconds = (all_landed - started) if all_landed else float("inf")
    latencies = sorted((acked - sent) * 1000 for sent, acked, *_ in acks)

    lake = pl.from_arrow(
        DeltaTable(str(data_dir / "lake" / "telemetry")).to_pyarrow_table(columns=["machine_id", "seq"])
    )
    assert isinstance(lake, pl.DataFrame)
    lake = lake.filter(pl.col("machine_id").is_in(list(tokens)))
    expected = pl.DataFrame(
        [(m, s) for *_, m, first, n in acks for s in range(first, first + n)],
        schema=["machine_id", "seq"],
        orient="row",
    )
    lost = expected.join(lake.unique(), on=["machine_id", "seq"], how="anti").height
    duplicated = lake.height - lake.unique().height

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))]

    lags.sort()
    result = {
        "readings_per_s": round(accepted / send_seconds),
        "landed_readings_per_s": round(accepted / landed_seconds) if landed_seconds != float("inf") else 0,
        "floor_readings_per_s": round(floor_rps),
        "ratio_to_floor": round(accepted / send_seconds / floor_rps, 3),
        "batch_latency_p50_ms": round(statistics.median(latencies), 1),
        "batch_latency_p99_ms": round(pct(latencies, 0.99), 1),
        "landing_lag_p50_s": round(statistics.median(lags), 3),
        "landing_lag_p99_s": round(pct(lags, 0.99), 3),
        "accepted": accepted,
        "lost": lost,
        "duplicated": duplicated,
        "batch": args.batch,
        "machines": args.machines,
        "seconds": args.seconds,
    }
    print()
    print(f"{'':34}{'readings/s':>12}")
    print(f"{'pitstop, accepted (HTTP → bus)':34}{result['readings_per_s']:>12,}")
    print(f"{'pitstop, landed in the lake':34}{result['landed_readings_per_s']:>12,}")
    print(f"{'floor (same data, one process)':34}{result['floor_readings_per_s']:>12,}")
    print(
        f"batch latency p50 {result['batch_latency_p50_ms']} ms, p99 {result['batch_latency_p99_ms']} ms; "
        f"landing lag p50 {result['landing_lag_p50_s']} s, p99 {result['landing_lag_p99_s']} s; "
        f"lost {lost}, duplicated {duplicated}"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
