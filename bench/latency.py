"""Reading → work-order latency under load: from the 202 of the reading that opens a work order to
the work order visible in ``GET /api/v1/work-orders``.

Runs one ``pitstop serve`` (with its processor, the default deployment; ``--separate``: beside a
``pitstop process``) over a data dir seeded and trained as the demo does. ``--machines`` background
machines post ``--rate`` readings/s in all (batches of ``--batch``, each machine about once a
second; early, healthy cycles of FD001 training engines, repeated), and every ``--every`` seconds
a target machine starts: it posts an FD001 training engine's history up to ``--head-rul`` cycles
before its failure in one batch, then the rest one reading per ``--tick`` seconds, as a machine
wearing out would. The processor opens a work order when the RUL interval's lower bound crosses
the threshold; the work order names the reading that opened it (``seq``). A poller reads the
newest ``POLL_PAGE`` work orders every ``--poll`` seconds (the whole list when none of them was
read before); latency =
first seen − the 202 of the batch that carried that reading.

    python bench/latency.py [--seconds 30] [--rate 10000] [--machines 200] [--every 0.5]

Last line: one JSON object with ``p50_s``, ``p99_s``, ``readings_per_s`` (sustained background +
targets), ``work_orders`` (how many were timed) and more.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from ingest import Fleet, free_port
from loadgen import Connection

from pitstop.schema import TURBOFAN
from pitstop.sim import shipped

POLL_PAGE = 10  # work orders read per poll, newest first


def body(machine: str, first_seq: int, rows: list[dict[str, float]]) -> bytes:
    ts = datetime.now(UTC).isoformat()
    return orjson.dumps(
        [{"machine_id": machine, "ts": ts, "seq": first_seq + i, "values": v} for i, v in enumerate(rows)]
    )


class Run:
    def __init__(self, url: str, admin: str, args: argparse.Namespace) -> None:
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        self.admin, self.args = admin, args
        self.accepted = 0
        self.rejected = 0
        self.acks: dict[str, list[tuple[int, int, float]]] = {}  # target → (first seq, last seq, acked)
        self.seen: dict[str, tuple[float, int]] = {}  # target → (first seen, seq of the opening reading)
        self.done = False
        self.stop_at = 0.0

    def connection(self) -> Connection:
        return Connection(self.host, self.port)

    async def background(self, tokens: dict[str, str], healthy: list[list[dict[str, float]]]) -> None:
        """Open loop: each machine posts ``batch`` readings every ``machines * batch / rate`` s."""
        a = self.args
        period = len(tokens) * a.batch / a.rate
        queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        machines = sorted(tokens)

        async def schedule() -> None:
            seq = dict.fromkeys(machines, 1)
            started = time.monotonic()
            k = 0
            while not self.done:
                for i, m in enumerate(machines):  # staggered over the period
                    due = started + k * period + i * period / len(machines)
                    delay = due - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    if self.done:
                        return
                    rows = healthy[i % len(healthy)]
                    start = seq[m]
                    chosen = [rows[(start + j) % len(rows)] for j in range(a.batch)]
                    queue.put_nowait((m, body(m, start, chosen)))
                    seq[m] = start + a.batch
                k += 1

        async def send() -> None:
            conn = self.connection()
            while not self.done:
                try:
                    machine, payload = await asyncio.wait_for(queue.get(), 0.5)
                except TimeoutError:
                    continue
                status, reply = await conn.post("/api/v1/readings", payload, tokens[machine])
                if status == 202:
                    self.accepted += a.batch
                else:
                    self.rejected += 1
                    print(f"rejected {status}: {reply[:200]!r}", file=sys.stderr)
            conn.close()

        await asyncio.gather(schedule(), *(send() for _ in range(a.connections)))

    async def target(self, machine: str, token: str, rows: list[dict[str, float]], head: int) -> None:
        """A wearing machine: its history in one batch, then a reading per tick until its order."""
        conn = self.connection()
        acks = self.acks.setdefault(machine, [])

        async def post(first: int, chunk: list[dict[str, float]]) -> None:
            status, reply = await conn.post("/api/v1/readings", body(machine, first, chunk), token)
            if status != 202:
                print(f"target rejected {status}: {reply[:200]!r}", file=sys.stderr)
                return
            acks.append((first, first + len(chunk) - 1, time.monotonic()))
            self.accepted += len(chunk)

        await post(1, rows[:head])
        for i in range(head, len(rows)):
            if machine in self.seen:  # it goes on past the end of the background load
                break
            await asyncio.sleep(self.args.tick)
            await post(i + 1, [rows[i]])
        conn.close()

    async def poll(self) -> None:
        conn = self.connection()
        known: set[int] = set()  # work orders already read
        while not self.done or any(m not in self.seen for m in self.acks):
            # the newest few (newest first): a client reading them all 50 times a second would load
            # the server it measures; the whole list when none of the few was read before
            status, reply = await conn.get(f"/api/v1/work-orders?status=all&limit={POLL_PAGE}", self.admin)
            now = time.monotonic()
            orders = orjson.loads(reply)["work_orders"] if status == 200 else []
            if len(orders) == POLL_PAGE and orders[-1]["id"] not in known:
                status, reply = await conn.get("/api/v1/work-orders?status=all&limit=5000", self.admin)
                orders = orjson.loads(reply)["work_orders"] if status == 200 else []
            known.update(order["id"] for order in orders)
            for order in orders:
                m = order["machine_id"]
                if m in self.acks and m not in self.seen:
                    self.seen[m] = (now, int(order["seq"] or 0))
            if self.done and now > self.stop_at + self.args.grace:
                break
            await asyncio.sleep(self.args.poll)
        conn.close()

    def latencies(self) -> list[float]:
        out = []
        for machine, (seen, seq) in self.seen.items():
            acked = next((t for first, last, t in self.acks[machine] if first <= seq <= last), None)
            if acked is not None:
                out.append(seen - acked)
        return sorted(out)

    async def drive(
        self,
        tokens: dict[str, str],
        healthy: list[list[dict[str, float]]],
        targets: list[tuple[str, str, list[dict[str, float]], int]],
    ) -> float:
        a = self.args
        self.stop_at = time.monotonic() + a.seconds
        started = time.monotonic()
        tasks = [asyncio.create_task(self.background(tokens, healthy)), asyncio.create_task(self.poll())]
        running = []
        for machine, token, rows, head in targets:
            if time.monotonic() >= self.stop_at:
                break
            running.append(asyncio.create_task(self.target(machine, token, rows, head)))
            await asyncio.sleep(a.every)
        await asyncio.sleep(max(0.0, self.stop_at - time.monotonic()))
        self.done = True
        elapsed = time.monotonic() - started
        await asyncio.gather(*running, *tasks)
        return elapsed


def engines(
    head_rul: int,
) -> tuple[list[list[dict[str, float]]], list[tuple[int, list[dict[str, float]], int]]]:
    """Healthy early cycles (background) and each engine's full run with its head length (targets)."""
    train = shipped("fd001_train").sort("unit", "cycle")
    healthy, wearing = [], []
    for (unit,), group in train.group_by("unit", maintain_order=True):
        rows = group.select(TURBOFAN.sensor_names).to_dicts()
        healthy.append(rows[:60])
        wearing.append((int(str(unit)), rows, max(1, len(rows) - head_rul)))
    return healthy, wearing


def processor_batches(url: str, admin: str) -> dict[str, float]:
    """The processor's micro-batches so far, from its Prometheus histogram: count and mean seconds."""
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {admin}"}, timeout=30).text
    found = {}
    for line in text.splitlines():
        for key in ("sum", "count"):
            if line.startswith(f"pitstop_processor_batch_seconds_{key} "):
                found[key] = float(line.split()[-1])
    count = found.get("count", 0.0)
    return {"batches": count, "batch_mean_s": round(found.get("sum", 0.0) / count, 3) if count else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--rate", type=float, default=10_000, help="background readings/s in all")
    parser.add_argument("--machines", type=int, default=200, help="background machines")
    parser.add_argument("--batch", type=int, default=50, help="background readings per request")
    parser.add_argument("--connections", type=int, default=16, help="background connections")
    parser.add_argument("--every", type=float, default=0.5, help="seconds between target starts")
    parser.add_argument("--head-rul", type=int, default=90, help="a target's first batch ends this early")
    parser.add_argument("--tick", type=float, default=0.05, help="seconds between a target's readings")
    parser.add_argument("--poll", type=float, default=0.02, help="work-order list poll interval")
    parser.add_argument("--grace", type=float, default=20, help="seconds to wait for late work orders")
    parser.add_argument(
        "--separate", action="store_true", help="pitstop serve --no-processor beside pitstop process"
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a temporary folder")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

    tmp = tempfile.TemporaryDirectory()
    fleet = Fleet(args.data_dir or Path(tmp.name) / "data", args.machines)
    print(f"setting up {fleet.data_dir} (seed + train as the demo does) …", flush=True)
    fleet.setup()
    tokens = fleet.devices()
    healthy, wearing = engines(args.head_rul)
    stamp = f"{int(time.time())}"
    wearing_tokens = fleet.devices([f"lat-{unit:03d}-{stamp}" for unit, _, _ in wearing])
    targets = [
        (f"lat-{unit:03d}-{stamp}", wearing_tokens[f"lat-{unit:03d}-{stamp}"], rows, head)
        for unit, rows, head in wearing
    ]

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    pitstop = [sys.executable, "-m", "pitstop"]
    where = ["--data-dir", str(fleet.data_dir)]
    logs = Path(tmp.name)
    procs = []
    with (logs / "serve.log").open("wb") as out:
        no_processor = ["--no-processor"] if args.separate else []
        procs.append(
            subprocess.Popen(
                [*pitstop, "serve", *no_processor, *where, "--port", str(port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        )
    if args.separate:
        with (logs / "process.log").open("wb") as out:
            procs.append(
                subprocess.Popen([*pitstop, "process", *where], env=env, stdout=out, stderr=subprocess.STDOUT)
            )
    try:
        for _ in range(1200):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        while args.separate and b"processing" not in (logs / "process.log").read_bytes():
            time.sleep(0.1)  # the processor replays the lake into its online state first
        admin = (fleet.data_dir / "admin-token").read_text().strip()
        print(
            f"driving {url} for {args.seconds:g}s: {args.rate:,.0f} readings/s from {args.machines} machines "
            f"(batches of {args.batch}), a wearing machine every {args.every:g}s …",
            flush=True,
        )
        run = Run(url, admin, args)
        elapsed = asyncio.run(run.drive(tokens, healthy, targets))
        batches = processor_batches(url, admin)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)

    lat = run.latencies()

    def pct(q: float) -> float:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))], 3) if lat else float("nan")

    started = len(run.acks)
    result: dict[str, Any] = {
        "p50_s": round(statistics.median(lat), 3) if lat else None,
        "p99_s": pct(0.99),
        "max_s": round(lat[-1], 3) if lat else None,
        "readings_per_s": round(run.accepted / elapsed),
        "target_rate": args.rate,
        "work_orders": len(lat),
        "targets": started,
        "targets_without_order": started - len(run.seen),
        "rejected_batches": run.rejected,
        "seconds": args.seconds,
        "poll_s": args.poll,
        "separate_processor": args.separate,
        "processor_batches": batches["batches"],
        "processor_batch_mean_s": batches["batch_mean_s"],
    }
    print()
    print(f"{'':38}{'seconds':>10}")
    print(f"{'202 → work order visible, p50':38}{result['p50_s']:>10}")
    print(f"{'202 → work order visible, p99':38}{result['p99_s']:>10}")
    print(f"{'target (issue)':38}{'< 1':>10}")
    print(
        f"{result['work_orders']} work orders timed of {started} wearing machines; "
        f"{result['readings_per_s']:,} readings/s sustained (asked {args.rate:,.0f}); "
        f"{run.rejected} batches rejected; the processor's micro-batches: {batches['batches']:.0f}, "
        f"{batches['batch_mean_s']} s on average"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
