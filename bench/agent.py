"""Edge agent benchmark: the fault scenario at full speed, throughput beside a floor, and footprint.

One run on this machine, every part real: ``pitstop serve --no-processor`` over a fresh data dir,
``pitstop agent`` processes tailing NDJSON files of real C-MAPSS rows (zstd batches of ``--batch``).

1. **Throughput**: an agent forwards ``--readings`` readings (the file written before it starts)
   straight to the server: readings/s from the agent's start to its buffer empty. The floor is the
   same readings posted by this process straight to the server in the same batches (encoded and
   zstd-compressed as the agent does, one connection, no buffer, no file).
2. **Faults**: ``--readings`` more, appended to the tailed file as fast as it can be written, the
   agent SIGKILLed ``--kills`` times at random moments (restarted each time) behind a proxy cycling
   through drop/stall/reset (tests/faultproxy.py). At the end the lake must hold seq 0..N-1 once
   each, seq k carrying the file's line k. Peak RSS over every incarnation: VmHWM.
3. **Footprint at 10 readings/s**: an agent reading ``sim:harvester?rate=10`` for ``--sim-seconds``:
   its CPU share (utime + stime over wall time, after a warm-up) and its peak RSS.

    python bench/agent.py [--readings 100000] [--kills 5] [--seed 20] [--batch 2000] [--sim-seconds 30]

The last line is one JSON object: readings, landed, lost, duplicated, kills, rss_mb (target
<= 150), agent_readings_per_s, direct_readings_per_s, cpu_pct_10hz, rss_mb_10hz (and more).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import polars as pl
import zstandard
from deltalake import DeltaTable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/faultproxy.py

from tests.faultproxy import FaultProxy

from pitstop.agent.runner import status
from pitstop.config import load_settings
from pitstop.demo_harvesters import open_platform
from pitstop.errors import AgentError
from pitstop.ingest import DeviceRegistry
from pitstop.platform import Platform
from pitstop.processor import Processor
from pitstop.schema import TURBOFAN
from pitstop.sim import shipped

RSS_TARGET_MB = 150
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    command = ["serve", "--no-processor", "--data-dir", str(data_dir), "--port", str(port)]
    return subprocess.Popen(
        [sys.executable, "-m", "pitstop", *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )


def wait_up(url: str) -> None:
    for _ in range(600):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"the server at {url} did not start")


def source_rows(n: int) -> list[dict[str, float]]:
    rows = shipped("fd001_test").select(TURBOFAN.sensor_names).to_dicts()
    return [rows[i % len(rows)] for i in range(n)]


def ndjson(rows: list[dict[str, float]]) -> str:
    return "".join(json.dumps({"values": r}) + "\n" for r in rows)


class Agent:
    """One ``pitstop agent`` process at a time for one machine; tracks the peak RSS of all."""

    def __init__(self, root: Path, name: str, settings: dict[str, object]) -> None:
        self.folder = root / name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.config = self.folder / "agent.toml"
        values = {"agent_dir": str(self.folder / "agent"), **settings}
        self.config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
        self.log = self.folder / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.peak_kb = 0

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pitstop", "--config", str(self.config), "agent"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def proc_status(self, key: str) -> int:
        assert self.proc is not None
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def cpu_s(self) -> float:
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime

    def watch(self) -> None:
        self.peak_kb = max(self.peak_kb, self.proc_status("VmHWM"))

    def stop(self, sig: int) -> None:
        assert self.proc is not None
        self.watch()
        self.proc.send_signal(sig)
        self.proc.wait(30)

    def drained(self, total: int) -> bool:
        try:
            report = status(self.folder / "agent")
        except (AgentError, sqlite3.Error):  # not created yet, or being created
            return False
        return bool(report["buffer_depth"] == 0 and report["next_seq"] >= total)

    def wait_drained(self, total: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.drained(total):
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise SystemExit(f"the agent exited: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"the agent did not drain in {timeout:.0f} s: {status(self.folder / 'agent')}"
                )
            self.watch()
            time.sleep(0.05)


def direct(url: str, token: str, machine: str, rows: list[dict[str, float]], batch: int) -> float:
    """The floor: the same readings posted straight to the server, batch by batch; readings/s."""
    zstd = zstandard.ZstdCompressor(level=3)
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Content-Encoding": "zstd",
    }
    started = time.perf_counter()
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        for start in range(0, len(rows), batch):
            ts = datetime.now(UTC).isoformat()
            body = [
                {"machine_id": machine, "ts": ts, "seq": start + i, "values": r}
                for i, r in enumerate(rows[start : start + batch])
            ]
            raw = json.dumps({"readings": body}, separators=(",", ":")).encode()
            while True:
                r = client.post("/api/v1/readings", content=zstd.compress(raw))
                if r.status_code == 202:
                    break
                if r.status_code not in (429, 503):
                    raise SystemExit(f"direct post refused: {r.status_code} {r.text[:300]}")
                time.sleep(float(r.headers.get("retry-after", "0.5")))
    return len(rows) / (time.perf_counter() - started)


def fault_run(
    agent: Agent, proxy: FaultProxy, source: Path, rows: list[dict[str, float]], kills: int, seed: int
) -> tuple[float, list[tuple[int, int]]]:
    """Append the rows as fast as possible while the agent is killed ``kills`` times; seconds to drain."""
    rng = random.Random(seed)
    proxy.cycle(seed=seed)

    def append() -> None:
        for start in range(0, len(rows), 5000):
            with source.open("a") as fh:
                fh.write(ndjson(rows[start : start + 5000]))

    writer = threading.Thread(target=append, daemon=True)
    started = time.monotonic()
    writer.start()
    at_kill = []
    for _ in range(kills):
        agent.start()
        until = time.monotonic() + rng.uniform(1.0, 4.0)
        while time.monotonic() < until:
            agent.watch()
            time.sleep(0.05)
        agent.stop(signal.SIGKILL)
        report = status(agent.folder / "agent")
        at_kill.append((int(report["next_seq"]), int(report["buffer_depth"])))
    writer.join()
    agent.start()
    agent.wait_drained(len(rows), 600)
    seconds = time.monotonic() - started
    agent.stop(signal.SIGTERM)
    proxy.calm()
    return seconds, at_kill


def footprint(agent: Agent, seconds: float) -> tuple[float, float]:
    """CPU share (%) and peak RSS (MB) of an agent at 10 readings/s, after a 3 s warm-up."""
    agent.start()
    time.sleep(3)
    cpu0, t0 = agent.cpu_s(), time.monotonic()
    time.sleep(seconds)
    cpu = (agent.cpu_s() - cpu0) / (time.monotonic() - t0) * 100
    agent.stop(signal.SIGTERM)
    return cpu, agent.peak_kb / 1024


def lake_check(data_dir: Path, machine: str, rows: list[dict[str, float]]) -> dict[str, int]:
    """Drain the bus into the lake; lost, duplicated and out-of-place readings of ``machine``."""
    platform = Platform.open(load_settings(None, data_dir=data_dir))
    try:
        processor = Processor(platform)
        idle = 0
        while idle < 3:
            idle = 0 if processor.run_once().readings else idle + 1
    finally:
        platform.close()
    sensor = TURBOFAN.sensor_names[0]
    lake = pl.from_arrow(
        DeltaTable(str(data_dir / "lake" / "telemetry")).to_pyarrow_table(
            columns=["machine_id", "seq", sensor]
        )
    )
    assert isinstance(lake, pl.DataFrame)
    lake = lake.filter(pl.col("machine_id") == machine).sort("seq")
    seqs = lake["seq"].to_list()
    unique = set(seqs)
    expected = range(len(rows))
    misplaced = sum(
        1 for s, v in zip(seqs, lake[sensor].to_list(), strict=True) if s in expected and rows[s][sensor] != v
    )
    return {
        "landed": len(unique & set(expected)),
        "lost": sum(1 for s in expected if s not in unique),
        "duplicated": len(seqs) - len(unique) + len(unique - set(expected)),
        "misplaced": misplaced,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", type=int, default=100_000)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--sim-seconds", type=float, default=30)
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    tmp = tempfile.TemporaryDirectory()
    root = Path(tmp.name)
    data_dir = root / "data"
    platform = Platform.open(load_settings(None, data_dir=data_dir))
    devices = DeviceRegistry(platform.db)
    machines = {"clean": "bench-agent", "direct": "bench-direct", "fault": "bench-fault", "sim": "H-001"}
    tokens: dict[str, Path] = {}
    for role, machine in machines.items():
        if role != "sim":
            tokens[role] = root / f"{role}.token"
            tokens[role].write_text(devices.add(machine, "turbofan", platform.fleet)[1] + "\n")
    platform.close()
    # the harvester simulator's machine lives in a data dir of its own, with the harvester fleet
    sim_settings = load_settings(None, data_dir=root / "harvesters")
    sim_platform = open_platform(sim_settings, echo=lambda _: None)
    tokens["sim"] = root / "sim.token"
    token = DeviceRegistry(sim_platform.db).add(machines["sim"], "harvester", sim_platform.fleet)[1]
    tokens["sim"].write_text(token + "\n")
    sim_platform.close()
    rows = source_rows(args.readings)

    port, sim_port = free_port(), free_port()
    url, sim_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{sim_port}"
    server = serve(data_dir, port)
    common = {
        "agent_batch_max": args.batch,
        "agent_send_interval_s": 0.05,
        "agent_retry_max_s": 1.0,
        "agent_edge_scoring": False,
    }
    try:
        wait_up(url)

        print(f"1. throughput: {args.readings:,} readings in batches of {args.batch} …", flush=True)
        clean_source = root / "clean.ndjson"
        clean_source.write_text(ndjson(rows))
        clean = Agent(
            root,
            "clean",
            {
                **common,
                "agent_server": url,
                "agent_token_file": str(tokens["clean"]),
                "agent_machine_id": machines["clean"],
                "agent_source": f"tail:{clean_source}",
            },
        )
        started = time.monotonic()
        clean.start()
        clean.wait_drained(args.readings, 600)
        agent_rps = args.readings / (time.monotonic() - started)
        clean.stop(signal.SIGTERM)
        direct_rps = direct(url, tokens["direct"].read_text().strip(), machines["direct"], rows, args.batch)
        print(f"   agent {agent_rps:,.0f} readings/s, direct {direct_rps:,.0f} readings/s", flush=True)

        print(f"2. faults: {args.kills} SIGKILLs, the link dropping, stalling and resetting …", flush=True)
        fault_source = root / "fault.ndjson"
        fault_source.touch()
        with FaultProxy(("127.0.0.1", port), seed=args.seed) as proxy:
            fault = Agent(
                root,
                "fault",
                {
                    **common,
                    "agent_server": proxy.url,
                    "agent_token_file": str(tokens["fault"]),
                    "agent_machine_id": machines["fault"],
                    "agent_source": f"tail:{fault_source}",
                },
            )
            fault_s, at_kill = fault_run(fault, proxy, fault_source, rows, args.kills, args.seed)
            faults = dict(proxy.stats)
        report = status(fault.folder / "agent")
        print(f"   drained in {fault_s:.1f} s; at each kill (next seq, waiting): {at_kill}", flush=True)
        print(f"   proxy: {faults}; the server dropped {report['duplicates']:,} re-sent readings", flush=True)

        print(f"3. footprint at 10 readings/s for {args.sim_seconds:g} s …", flush=True)
        sim = Agent(
            root,
            "sim",
            {
                **common,
                "agent_server": sim_url,
                "agent_token_file": str(tokens["sim"]),
                "agent_machine_id": machines["sim"],
                "agent_source": "sim:harvester?rate=10",
            },
        )
        sim_server = serve(root / "harvesters", sim_port)
        try:
            wait_up(sim_url)
            cpu_10hz, rss_10hz = footprint(sim, args.sim_seconds)
        finally:
            sim_server.terminate()
            sim_server.wait(30)
    finally:
        server.terminate()
        server.wait(30)

    check = lake_check(data_dir, machines["fault"], rows)
    rss_mb = fault.peak_kb / 1024
    result = {
        "readings": args.readings,
        "landed": check["landed"],
        "lost": check["lost"],
        "duplicated": check["duplicated"],
        "misplaced": check["misplaced"],
        "kills": len(at_kill),
        "rss_mb": round(rss_mb, 1),
        "rss_target_mb": RSS_TARGET_MB,
        "agent_readings_per_s": round(agent_rps),
        "direct_readings_per_s": round(direct_rps),
        "fault_run_readings_per_s": round(args.readings / fault_s),
        "resent_dropped_by_server": int(report["duplicates"]),
        "proxy": faults,
        "cpu_pct_10hz": round(cpu_10hz, 2),
        "rss_mb_10hz": round(rss_10hz, 1),
        "batch": args.batch,
        "seed": args.seed,
        "cores": os.cpu_count(),
    }
    print()
    print(f"{'':40}{'readings/s':>12}")
    print(f"{'agent (tail → buffer → zstd HTTP)':40}{agent_rps:>12,.0f}")
    print(f"{'floor: direct posts, same batches':40}{direct_rps:>12,.0f}")
    print(f"{'agent under faults and kills':40}{args.readings / fault_s:>12,.0f}")
    print(
        f"faults: {len(at_kill)} kills, landed {check['landed']:,} of {args.readings:,}, "
        f"lost {check['lost']}, duplicated {check['duplicated']}, misplaced {check['misplaced']}; "
        f"peak RSS {rss_mb:.1f} MB (target <= {RSS_TARGET_MB})"
    )
    print(f"at 10 readings/s: CPU {cpu_10hz:.2f} % of a core, peak RSS {rss_10hz:.1f} MB")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
