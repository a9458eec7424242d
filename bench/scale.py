"""Scale-out benchmark: processor workers over NATS partitions, on real engines, with failures.

One run, this machine, every engine real and local: PostgreSQL 15 (ops DB), nats-server (JetStream
bus, 12 partitions, leases), the lake as Delta tables, MLflow holding a champion trained once as
the demo does (every run scores with it).

1. **Throughput**: a backlog of ``--backlog`` readings (``--machines`` machines, batches of 100)
   published to the bus, then drained into the lake by 1, 2 and 3 ``pitstop process`` workers;
   readings/s from the first publish to the last row landed. The embedded default (SQLite bus and
   ops DB, one processor) drains the same backlog beside them.
2. **Failures**: ``--readings`` readings sent over HTTP to two ``pitstop serve --no-processor`` API
   servers (devices alternate between them, resend on 503/429 after Retry-After), processed by 3
   workers. During the load one worker is SIGKILLed ``--kills`` times (a new one started after each,
   as a supervisor would); nats-server and PostgreSQL are each stopped for a few seconds and started
   again. Takeover time: from the kill to every partition of the dead worker owned by a live one.
   At the end the lake must hold every acknowledged reading once.

    python bench/scale.py [--readings 200000] [--backlog 60000] [--kills 5]

Last line: one JSON object with ``readings_per_s_by_workers`` ({"1", "2", "3"}), ``embedded_readings_per_s``,
``lost``, ``duplicated``, ``takeover_p99_s`` (and more).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import polars as pl
from deltalake import DeltaTable

from pitstop.bus.leases import Leases
from pitstop.bus.nats import NatsBus
from pitstop.bus.nats_server import start_server
from pitstop.cluster.postgres import Postgres, start_postgres
from pitstop.config import load_settings
from pitstop.errors import RateLimitedError
from pitstop.ingest import DeviceRegistry
from pitstop.platform import Platform
from pitstop.schema import TURBOFAN, Reading, encode_readings
from pitstop.sim import shipped

PARTITIONS = 12
PROBE = "f-probe"
BATCH = 100
PITSTOP = [sys.executable, "-m", "pitstop"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


VALUES = shipped("fd001_test").select(TURBOFAN.sensor_names).head(2000).to_dicts()


def batch_of(machine: str, first_seq: int, n: int = BATCH) -> list[Reading]:
    now = datetime.now(UTC)
    return [
        Reading(
            machine_id=machine,
            ts=now - timedelta(milliseconds=n - i),
            seq=first_seq + i,
            values=VALUES[(first_seq + i) % len(VALUES)],
        )
        for i in range(n)
    ]


def body_of(machine: str, first_seq: int, n: int = BATCH) -> bytes:
    ts = datetime.now(UTC)
    return orjson.dumps(
        [
            {
                "machine_id": machine,
                "ts": (ts - timedelta(milliseconds=n - i)).isoformat(),
                "seq": first_seq + i,
                "values": VALUES[(first_seq + i) % len(VALUES)],
            }
            for i in range(n)
        ]
    )


def landed(lake_dir: Path) -> pl.DataFrame:
    """(machine_id, seq) of every row in telemetry and quarantine."""
    frames = []
    for table in ("telemetry", "quarantine"):
        arrow = DeltaTable(str(lake_dir / table)).to_pyarrow_table(columns=["machine_id", "seq"])
        frame = pl.from_arrow(arrow)
        assert isinstance(frame, pl.DataFrame)
        frames.append(frame)
    return pl.concat(frames)


def count_landed(lake_dir: Path, tables: dict[str, DeltaTable]) -> int:
    total = 0
    for table in ("telemetry", "quarantine"):
        dt = tables.get(table)
        if dt is None:
            dt = tables[table] = DeltaTable(str(lake_dir / table))
        else:
            dt.update_incremental()
        total += int(dt.count())
    return total


class Bench:
    def __init__(self, root: Path, pg: Postgres, nats_port: int, model_dir: Path) -> None:
        self.root, self.pg, self.nats_port, self.model_dir = root, pg, nats_port, model_dir
        self.nats_url = f"nats://127.0.0.1:{nats_port}"
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_WAIT_POLICY": "PASSIVE"}

    def config(self, name: str, scaled: bool, **extra: object) -> Path:
        """A settings file for one run: its own data dir, ops DB, stream; the shared champion."""
        values: dict[str, object] = {
            "data_dir": str(self.root / name),
            "mlflow_tracking_uri": f"sqlite:///{self.model_dir / 'mlflow.db'}",
            "mlflow_artifacts_uri": str(self.model_dir / "mlartifacts"),
            "lake_upkeep_every_s": 0.0,
            "intake_workers": 0,
        }
        if scaled:
            values |= {
                "ops_db_url": self.pg.create_database(name),
                "bus_backend": "nats",
                "nats_url": self.nats_url,
                "nats_stream": name.upper(),
                "bus_partitions": PARTITIONS,
                "lease_ttl_s": 2.0,
            }
        values |= extra
        path = self.root / f"{name}.toml"
        path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
        return path

    def spawn(self, config: Path, *args: str, log: str) -> subprocess.Popen[bytes]:
        with open(self.root / f"{log}.log", "ab") as out:
            return subprocess.Popen(
                [*PITSTOP, "--config", str(config), *args], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )

    # -- throughput ------------------------------------------------------------------------------
    def drain_rate(self, name: str, workers: int | None, backlog: int, machines: int) -> float:
        """Readings/s from the first publish of the backlog to the last row landed."""
        config = self.config(name, scaled=workers is not None)
        settings = load_settings(config)
        platform = Platform.open(settings)  # migrates the ops DB, makes the lake and the stream
        lake_dir = settings.lake_dir
        procs = []
        try:
            if workers is None:
                procs.append(self.spawn(config, "process", log=name))
            else:
                assert isinstance(platform.bus, NatsBus)
                procs += [self.spawn(config, "process", log=f"{name}-w{i}") for i in range(workers)]
                leases = Leases(platform.bus, "bench-observer", settings.lease_ttl_s)
                _wait(lambda: _balanced(leases, workers), 120, "workers to share the partitions")
            per_machine = backlog // machines
            ids = [f"{name}-m{i:04d}" for i in range(machines)]
            registry = DeviceRegistry(platform.db)
            for machine in ids:  # as intake would have them: registered, with a type
                registry.add(machine, "turbofan", platform.fleet)
            # warm-up: one reading per machine (seq 0), landed before the clock starts, so every
            # worker has loaded the champion and built its partitions' state
            for machine in ids:
                platform.bus.publish(encode_readings(batch_of(machine, 0, 1), platform.lake.sensors), machine)
            tables: dict[str, DeltaTable] = {}
            _wait(lambda: count_landed(lake_dir, tables) >= machines, 600, "the warm-up readings to land")
            started = time.monotonic()
            for first in range(1, per_machine + 1, BATCH):
                for machine in ids:
                    n = min(BATCH, per_machine - first + 1)
                    platform.bus.publish(
                        encode_readings(batch_of(machine, first, n), platform.lake.sensors), machine
                    )
            total = per_machine * machines
            _wait(
                lambda: count_landed(lake_dir, tables) >= total + machines, 600, f"{total} readings to land"
            )
            elapsed = time.monotonic() - started
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(60)
            platform.close()
        rows = landed(lake_dir)
        assert rows.height == rows.unique().height == total + machines, (rows.height, rows.unique().height)
        return total / elapsed

    # -- failures --------------------------------------------------------------------------------
    def failures(self, readings: int, machines: int, kills: int, nats: list[subprocess.Popen[bytes]]) -> dict:
        name = "faults"
        config = self.config(name, scaled=True)
        settings = load_settings(config)
        platform = Platform.open(settings)
        registry = DeviceRegistry(platform.db)
        ids = [f"f-m{i:04d}" for i in range(machines)]
        tokens = {m: registry.add(m, "turbofan", platform.fleet)[1] for m in ids}
        assert isinstance(platform.bus, NatsBus)
        leases = Leases(platform.bus, "bench-observer", settings.lease_ttl_s)
        ports = [free_port(), free_port()]
        servers = [
            self.spawn(config, "serve", "--no-processor", "--port", str(p), log=f"api-{p}") for p in ports
        ]
        workers = [self.spawn(config, "process", log=f"faults-w{i}") for i in range(3)]
        for port in ports:
            _wait(lambda port=port: _healthy(port), 120, f"API server on {port}")
        _wait(lambda: _balanced(leases, 3), 120, "3 workers to share the partitions")

        per_machine = readings // machines
        total = per_machine * machines
        sent = [0]
        refusals: list[tuple[float, str, str | None]] = []  # (when, error code, Retry-After) of 503s
        windows: list[tuple[str, float, float]] = []  # (engine, stopped, started again)
        lock = threading.Lock()
        errors: list[str] = []

        def device_loop(chunk: list[str], worker: int) -> None:
            clients = [httpx.Client(base_url=f"http://127.0.0.1:{p}", timeout=30) for p in ports]
            seqs = dict.fromkeys(chunk, 1)
            turn = worker
            while any(seqs[m] <= per_machine for m in chunk):
                for machine in chunk:
                    first = seqs[machine]
                    if first > per_machine:
                        continue
                    n = min(BATCH, per_machine - first + 1)
                    body = body_of(machine, first, n)
                    while True:
                        turn += 1
                        client = clients[turn % 2]  # devices alternate between the two servers
                        try:
                            reply = client.post(
                                "/api/v1/readings",
                                content=body,
                                headers={
                                    "Authorization": f"Bearer {tokens[machine]}",
                                    "content-type": "application/json",
                                },
                            )
                        except httpx.HTTPError as exc:
                            with lock:
                                errors.append(f"{type(exc).__name__}: {exc}")
                            time.sleep(1)
                            continue
                        if reply.status_code == 202:
                            break
                        if reply.status_code in (503, 429):
                            with lock:
                                if reply.status_code == 503:
                                    code = reply.json().get("error", {}).get("code", "?")
                                    refusals.append(
                                        (time.monotonic(), code, reply.headers.get("Retry-After"))
                                    )
                            time.sleep(float(reply.headers.get("Retry-After", "1")))
                            continue
                        with lock:
                            errors.append(f"{reply.status_code}: {reply.text[:200]}")
                        time.sleep(1)
                    seqs[machine] = first + n
                    with lock:
                        sent[0] += n
            for c in clients:
                c.close()

        threads = [threading.Thread(target=device_loop, args=(ids[i::8], i), daemon=True) for i in range(8)]
        probe_acked: list[tuple[int, int]] = []  # (first seq, n) of the probe's acknowledged batches

        def probe() -> None:
            """One more device, open loop: a batch every 0.2 s whatever happens, so some requests
            arrive while an engine is away (the closed-loop devices above are all mid-request when
            it goes, and those wait it out)."""
            seq = 1
            with httpx.Client(timeout=30) as client:
                turn = 0
                while any(t.is_alive() for t in threads):
                    turn += 1
                    try:
                        reply = client.post(
                            f"http://127.0.0.1:{ports[turn % 2]}/api/v1/readings",
                            content=body_of(PROBE, seq, 10),
                            headers={
                                "Authorization": f"Bearer {probe_token}",
                                "content-type": "application/json",
                            },
                        )
                    except httpx.HTTPError:
                        time.sleep(0.2)
                        continue
                    if reply.status_code == 202:
                        probe_acked.append((seq, 10))
                        seq += 10
                    elif reply.status_code == 503:
                        with lock:
                            code = reply.json().get("error", {}).get("code", "?")
                            refusals.append((time.monotonic(), code, reply.headers.get("Retry-After")))
                    time.sleep(0.2)

        probe_token = registry.add(PROBE, "turbofan", platform.fleet)[1]
        prober = threading.Thread(target=probe, daemon=True)
        started = time.monotonic()
        for t in threads:
            t.start()
        prober.start()

        takeovers: list[float] = []
        events: list[str] = []
        plan = sorted(
            [(total * f, "kill") for f in (0.1, 0.2, 0.45, 0.7, 0.85)[:kills]]
            + [(total * 0.3, "nats"), (total * 0.55, "postgresql")]
        )
        rng = random.Random(7)

        def chaos() -> None:
            """The failures, in order, as the load reaches each one's share of the readings."""
            for at, what in plan:
                while sent[0] < at:
                    if not any(t.is_alive() for t in threads):
                        events.append(f"load finished before {what} at {at:,.0f} readings: not done")
                        return
                    time.sleep(0.02)
                if what == "kill":
                    # a worker that owns partitions (a fresh one may own none yet)
                    _wait(lambda: _owning(leases, workers), 60, "a worker owning partitions", raise_=False)
                    owners = leases.owners()
                    victim = rng.choice(_owning(leases, workers) or workers)
                    theirs = sorted(p for p, w in owners.items() if f"-{victim.pid}-" in w)
                    at_kill = sent[0]
                    victim.send_signal(signal.SIGKILL)
                    killed = time.monotonic()
                    victim.wait()
                    workers.remove(victim)
                    ok = _wait(
                        lambda victim=victim, theirs=theirs: _taken_over(leases, victim.pid, theirs),
                        60,
                        "the dead worker's partitions to be taken over",
                        raise_=False,
                    )
                    takeovers.append(time.monotonic() - killed if ok else float("inf"))
                    events.append(
                        f"killed worker pid {victim.pid} (partitions {theirs}) at {at_kill:,} readings: "
                        f"taken over by the others in {takeovers[-1]:.2f} s"
                    )
                    # then, as a supervisor would, a new worker (it takes its share back later)
                    workers.append(self.spawn(config, "process", log="faults-w-new"))
                elif what == "nats":
                    began = time.monotonic()
                    nats[0].terminate()
                    nats[0].wait(30)
                    time.sleep(3)
                    nats[0] = start_server(self.root / "nats", self.nats_port)
                    windows.append(("nats", began, time.monotonic()))
                    events.append(f"nats-server stopped for 3 s at {at:,.0f} readings and started again")
                else:
                    began = time.monotonic()
                    self.pg.stop()
                    time.sleep(3)
                    self.pg.start()
                    windows.append(("postgresql", began, time.monotonic()))
                    events.append(f"PostgreSQL stopped for 3 s at {at:,.0f} readings and started again")

        chaos_thread = threading.Thread(target=chaos, daemon=True)
        chaos_thread.start()
        for t in threads:
            t.join()
        send_seconds = time.monotonic() - started
        unavailable: dict[str, object] = {"total": len(refusals)}
        for engine, began, ended in windows:  # the 503s while each engine was away (and 5 s after)
            during = [r for r in refusals if began <= r[0] <= ended + 5]
            unavailable[engine] = {
                "503s": len(during),
                "with_retry_after": sum(1 for r in during if r[2]),
                "codes": sorted({r[1] for r in during}),
                "down_s": round(ended - began, 1),
            }
        chaos_thread.join(120)
        tables: dict[str, DeltaTable] = {}
        ok = _wait(
            lambda: count_landed(settings.lake_dir, tables) >= total,
            300,
            "every reading to land",
            raise_=False,
        )
        time.sleep(3)  # anything written twice would show now
        for proc in (*servers, *workers):
            proc.terminate()
        for proc in (*servers, *workers):
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        rows = landed(settings.lake_dir)
        unique = rows.unique()
        prober.join(30)
        expected = pl.DataFrame(
            [(m, s) for m in ids for s in range(1, per_machine + 1)]
            + [(PROBE, s) for first, n in probe_acked for s in range(first, first + n)],
            schema=["machine_id", "seq"],
            orient="row",
        )
        lost = expected.join(unique, on=["machine_id", "seq"], how="anti").height
        platform.close()
        return {
            "readings": total,
            "probe_readings": sum(n for _, n in probe_acked),
            "lost": lost,
            "duplicated": rows.height - unique.height,
            "all_landed": ok,
            "takeover_s": [round(t, 2) for t in takeovers],
            "unavailable_503": unavailable,
            "http_errors": errors[:5],
            "send_readings_per_s": round(total / send_seconds),
            "events": events,
        }


def intake_cost(root: Path, pg: Postgres, batches: int = 300) -> dict[str, float]:
    """Milliseconds per 100-reading batch through ``Intake.submit`` (validate, seq check, publish to
    the SQLite bus), with the seq and rate state in memory (SQLite ops DB) and shared in PostgreSQL."""
    from pitstop.ingest import Intake

    out = {}
    for name, extra in (("memory", {}), ("postgresql", {"ops_db_url": pg.create_database("intake")})):
        settings = load_settings(None, data_dir=root / f"intake-{name}", intake_workers=0, **extra)
        platform = Platform.open(settings)
        try:
            token = DeviceRegistry(platform.db).add("intake-m", "turbofan", platform.fleet)[1]
            intake = Intake(platform)
            identity = intake.authenticate(token)
            bodies = [
                [r.model_dump(mode="json") for r in batch_of("intake-m", 1 + i * BATCH)]
                for i in range(batches)
            ]
            started = time.perf_counter()
            for body in bodies:
                assert intake.submit(identity, body).accepted == BATCH
            out[name] = (time.perf_counter() - started) * 1000 / batches
            started = time.perf_counter()
            for _ in range(batches):  # the rate check the route does before each batch
                with contextlib.suppress(RateLimitedError):
                    intake.admit(identity)
            out[f"{name}_rate_check"] = (time.perf_counter() - started) * 1000 / batches
        finally:
            platform.close()
    return {k: round(v, 3) for k, v in out.items()}


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _owning(leases: Leases, workers: list[subprocess.Popen[bytes]]) -> list[subprocess.Popen[bytes]]:
    """The workers that hold a partition now."""
    owners = set(leases.owners().values())
    return [w for w in workers if any(f"-{w.pid}-" in o for o in owners)]


def _taken_over(leases: Leases, pid: int, partitions: list[int]) -> bool:
    owners = leases.owners()
    return all(p in owners and f"-{pid}-" not in owners[p] for p in partitions)


def _balanced(leases: Leases, workers: int) -> bool:
    owners = leases.owners()
    counts: dict[str, int] = {}
    for worker in owners.values():
        counts[worker] = counts.get(worker, 0) + 1
    return (
        len(owners) == PARTITIONS
        and len(counts) == workers
        and max(counts.values()) - min(counts.values()) <= 1
    )


def _wait(check: object, timeout: float, what: str, raise_: bool = True) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return True
        except Exception:
            pass
        time.sleep(0.05)
    if raise_:
        raise SystemExit(f"timed out after {timeout:g} s waiting for {what}")
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", type=int, default=200_000, help="readings sent in the failure run")
    parser.add_argument("--backlog", type=int, default=60_000, help="readings drained per throughput run")
    parser.add_argument("--machines", type=int, default=200)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

    root = Path(tempfile.mkdtemp(prefix="pitstop-scale-"))
    root.chmod(0o755)
    print(f"working in {root}", flush=True)
    pg = start_postgres(root / "pg", free_port())
    nats_port = free_port()
    nats = [start_server(root / "nats", nats_port)]
    try:
        from pitstop.demo import ensure_champion, seed_last_season

        model_dir = root / "model"
        print("training the champion once (as the demo does) …", flush=True)
        platform = Platform.open(load_settings(None, data_dir=model_dir))
        seed_last_season(platform, echo=lambda _: None)
        ensure_champion(platform, echo=lambda _: None)
        platform.close()

        print("intake cost per 100-reading batch, state in memory vs shared in PostgreSQL …", flush=True)
        intake = intake_cost(root, pg)
        print(f"  {intake}", flush=True)
        bench = Bench(root, pg, nats_port, model_dir)
        rates: dict[str, float] = {}
        print(f"draining {args.backlog:,} readings: the embedded default …", flush=True)
        embedded = bench.drain_rate("embedded", None, args.backlog, args.machines)
        print(f"  {embedded:,.0f} readings/s", flush=True)
        for workers in (1, 2, 3):
            print(f"draining {args.backlog:,} readings: {workers} worker(s) over NATS …", flush=True)
            rates[str(workers)] = bench.drain_rate(f"w{workers}", workers, args.backlog, args.machines)
            print(f"  {rates[str(workers)]:,.0f} readings/s", flush=True)
        print(
            f"failure run: {args.readings:,} readings over HTTP, {args.kills} SIGKILLs, nats-server and "
            "PostgreSQL restarted …",
            flush=True,
        )
        faults = bench.failures(args.readings, args.machines, args.kills, nats)
        for line in faults["events"]:
            print(f"  {line}", flush=True)
    finally:
        nats[0].terminate()
        pg.stop("immediate")
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    takeovers = sorted(faults["takeover_s"])
    p99 = takeovers[min(len(takeovers) - 1, int(0.99 * len(takeovers)))] if takeovers else None
    print()
    print(f"{'':36}{'readings/s':>12}")
    print(f"{'embedded default (SQLite, 1 proc.)':36}{embedded:>12,.0f}")
    for workers, rate in rates.items():
        print(f"{f'NATS + PostgreSQL, {workers} worker(s)':36}{rate:>12,.0f}")
    print(
        f"failures: lost {faults['lost']}, duplicated {faults['duplicated']}, "
        f"takeovers {faults['takeover_s']} s, 503s {faults['unavailable_503']}"
    )
    result = {
        "readings_per_s_by_workers": {k: round(v) for k, v in rates.items()},
        "embedded_readings_per_s": round(embedded),
        "lost": faults["lost"],
        "duplicated": faults["duplicated"],
        "takeover_p99_s": p99,
        "takeover_median_s": round(statistics.median(takeovers), 2) if takeovers else None,
        "kills": len(takeovers),
        "readings": faults["readings"],
        "all_landed": faults["all_landed"],
        "unavailable_503": faults["unavailable_503"],
        "http_errors": faults["http_errors"],
        "intake_ms_per_batch": intake,
        "partitions": PARTITIONS,
        "cores": os.cpu_count(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
