"""Ingest benchmark: sustained readings/s accepted and landed in the lake, against the floor.

Runs ``pitstop serve --no-processor`` and ``pitstop process`` as two processes over a fresh data dir
(seeded and trained as the demo does), drives the HTTP endpoint over loopback with batches of
``--batch`` readings from ``--machines`` devices for ``--seconds``, and watches the lake's committed
bus position to time each batch's landing. The floor is measured in this process on the same
bodies: orjson parse + Arrow table + SQLite (WAL, synchronous=FULL) commit. The request bodies are
built before the clock starts, so the load generator's CPU goes to sending them.

    python bench/ingest.py [--seconds 20] [--machines 100] [--batch 500] [--concurrency 8] [--runs 3]

The last line is one JSON object: readings_per_s, floor_readings_per_s, landing_lag_p99_s, lost,
duplicated (and more); with ``--runs N`` each figure is the median of N runs (lost and duplicated
their sums), each run's own figures under ``per_run``. ``cpu_us_per_reading`` splits the CPU the
run cost (server with its validation workers, processor, this load generator) per reading.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
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
from typing import Any

import httpx
import orjson
import polars as pl
import psutil
import pyarrow as pa
from deltalake import DeltaTable
from loadgen import Connection

from pitstop.config import load_settings
from pitstop.demo import ensure_champion, seed_last_season
from pitstop.ingest import DeviceRegistry
from pitstop.platform import Platform
from pitstop.schema import TURBOFAN
from pitstop.sim import shipped


def cpu_seconds(pid: int, children: bool) -> float:
    """User + system CPU so far of a process, or of its children (the server's validation
    workers; the processor has none)."""
    proc = psutil.Process(pid)
    total = 0.0
    for p in proc.children(recursive=True) if children else [proc]:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


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


class Fleet:
    """A seeded, trained data dir and ``machines`` registered bench devices (fresh ones per run)."""

    def __init__(self, data_dir: Path, machines: int) -> None:
        self.data_dir, self.machines = data_dir, machines
        self.runs = 0

    def setup(self) -> None:
        platform = Platform.open(load_settings(None, data_dir=self.data_dir))
        seed_last_season(platform, echo=lambda _: None)
        ensure_champion(platform, echo=lambda _: None)
        platform.close()

    def device(self, machine: str) -> str:
        platform = Platform.open(load_settings(None, data_dir=self.data_dir))
        token = DeviceRegistry(platform.db).add(machine, "turbofan", platform.fleet)[1]
        platform.close()
        return token

    def devices(self, names: list[str] | None = None) -> dict[str, str]:
        """Fresh machines (so a run's lake check sees only its own readings): name → token."""
        self.runs += 1
        platform = Platform.open(load_settings(None, data_dir=self.data_dir))
        registry = DeviceRegistry(platform.db)
        stamp = f"{int(time.time())}-{self.runs}"
        tokens = {}
        for machine in names or [f"bench-{i:04d}-{stamp}" for i in range(self.machines)]:
            tokens[machine] = registry.add(machine, "turbofan", platform.fleet)[1]
        platform.close()
        return tokens


def warm_up(url: str, fleet: Fleet, values: list[dict[str, float]]) -> None:
    """One batch from a machine of its own, so that the server's validation workers are running."""
    machine = f"warm-{int(time.time())}-{fleet.runs}"
    token = fleet.device(machine)
    reply = httpx.post(
        f"{url}/api/v1/readings",
        content=make_body(machine, 1, 10, values),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=120,
    )
    reply.raise_for_status()


def measure(
    args: argparse.Namespace, fleet: Fleet, values: list[dict[str, float]], scratch: Path
) -> dict[str, Any]:
    """One run: the in-run floor, then a fresh server and processor driven for ``args.seconds``."""
    data_dir = fleet.data_dir
    tokens = fleet.devices()
    sample = [
        make_body(m, 1 + k * args.batch, args.batch, values) for k in range(3) for m in sorted(tokens)[:50]
    ]
    floor_path = scratch / f"floor-{fleet.runs}.db"
    floor_rps = floor(sample, floor_path)
    floor_path.unlink(missing_ok=True)
    print(
        f"floor (orjson + Arrow + SQLite FULL commit, one process): {floor_rps:,.0f} readings/s", flush=True
    )

    # Bodies are built before the clock starts (enough for ~120k readings/s), so that the load
    # generator spends its CPU on sending rather than on JSON encoding: the server under test
    # shares the machine with it. Each keeps the time it was built at as its readings' ts.
    rounds = int(args.build_rate * args.seconds / args.batch / args.machines) + 1
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
    processor_log = scratch / f"processor-{fleet.runs}.log"
    with processor_log.open("wb") as log:
        processor = subprocess.Popen(
            [*pitstop, "process", "--data-dir", str(data_dir)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    pids = {"server": server.pid, "processor": processor.pid, "bench": os.getpid()}
    own = {"server": False, "validators": True, "processor": False, "bench": False}
    pids["validators"] = server.pid
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        # the processor replays the lake's history into its online state before it reads the bus
        # (it prints "processing …" then), and the server spawns its validation workers: both are
        # start-up, not intake, so the clock starts after them
        while b"processing" not in processor_log.read_bytes() and processor.poll() is None:
            time.sleep(0.1)
        warm_up(url, fleet, values)
        watcher = LandingWatcher(str(data_dir / "lake" / "telemetry"))
        watcher.start()
        print(
            f"driving {url} for {args.seconds:g}s: {args.machines} machines, batches of {args.batch}, "
            f"{args.concurrency} in flight …",
            flush=True,
        )
        cpu_before = {name: cpu_seconds(p, own[name]) for name, p in pids.items()}
        spies = [
            subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--subprocesses",
                    "-f",
                    "raw",
                    "-r",
                    "50",
                    "-o",
                    f"{args.py_spy}/{name}-{fleet.runs}.txt",
                    "-p",
                    str(pid),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for name, pid in pids.items()
            if args.py_spy and name in ("server", "processor")
        ]
        started = time.monotonic()
        acks = asyncio.run(drive(url, tokens, args.seconds, args.batch, args.concurrency, values, bodies))
        send_seconds = time.monotonic() - started
        bodies.clear()
        last_position = max(a[2] for a in acks)
        deadline = time.monotonic() + 120
        while watcher.landed_at(last_position) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        watcher.stop.set()
        watcher.join()
        cpu = {name: cpu_seconds(p, own[name]) - cpu_before[name] for name, p in pids.items()}
        for spy in spies:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
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
        DeltaTable(str(data_dir / "lake" / "telemetry")).to_pyarrow_table(
            columns=["machine_id", "seq"], filters=[("machine_id", "in", list(tokens))]
        )
    )
    assert isinstance(lake, pl.DataFrame)
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
    return {
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
        # CPU (user + system, children included) per reading from the first send until all landed
        "cpu_us_per_reading": {name: round(sec * 1e6 / accepted, 1) for name, sec in cpu.items()},
    }


def report(result: dict[str, Any]) -> None:
    print()
    print(f"{'':34}{'readings/s':>12}")
    print(f"{'pitstop, accepted (HTTP → bus)':34}{result['readings_per_s']:>12,}")
    print(f"{'pitstop, landed in the lake':34}{result['landed_readings_per_s']:>12,}")
    print(f"{'floor (same data, one process)':34}{result['floor_readings_per_s']:>12,}")
    print(
        f"batch latency p50 {result['batch_latency_p50_ms']} ms, p99 {result['batch_latency_p99_ms']} ms; "
        f"landing lag p50 {result['landing_lag_p50_s']} s, p99 {result['landing_lag_p99_s']} s; "
        f"lost {result['lost']}, duplicated {result['duplicated']}; "
        f"CPU µs/reading {result['cpu_us_per_reading']}",
        flush=True,
    )


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the runs (lost and duplicated: their sums)."""
    out: dict[str, Any] = {}
    for key, value in runs[0].items():
        if key in ("lost", "duplicated", "accepted"):
            out[key] = sum(r[key] for r in runs)
        elif isinstance(value, dict):
            out[key] = {k: statistics.median(r[key][k] for r in runs) for k in value}
        else:
            out[key] = statistics.median(r[key] for r in runs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--machines", type=int, default=100)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--runs", type=int, default=1, help="measure this often; the JSON has the medians")
    parser.add_argument(
        "--build-rate", type=int, default=120_000, help="readings/s of bodies built ahead of the clock"
    )
    parser.add_argument("--py-spy", type=Path, default=None, help="profile server and processor into DIR")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a temporary folder")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

    tmp = tempfile.TemporaryDirectory()
    fleet = Fleet(args.data_dir or Path(tmp.name) / "data", args.machines)
    values = templates()
    print(f"setting up {fleet.data_dir} (seed + train as the demo does) …", flush=True)
    fleet.setup()

    runs = []
    for k in range(args.runs):
        if args.runs > 1:
            print(f"run {k + 1} of {args.runs}", flush=True)
        runs.append(measure(args, fleet, values, Path(tmp.name)))
        report(runs[-1])
    result = runs[0] if len(runs) == 1 else median_of(runs)
    result.update(batch=args.batch, machines=args.machines, seconds=args.seconds, runs=len(runs))
    if len(runs) > 1:
        print(f"\nmedian of {len(runs)} runs:")
        report(result)
        result["per_run"] = runs
    print(json.dumps(result))


if __name__ == "__main__":
    main()
