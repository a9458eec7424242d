"""`pitstop cluster up | status | down` end to end: real PostgreSQL, moto, nats-server, API servers,
a processor and Dask, as background processes on this machine."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pitstop.cluster.local import down
from pitstop.cluster.postgres import Postgres
from tests.conftest import REPO


def _pitstop(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, "-m", "pitstop", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def _free_base_port() -> int:
    """A base port whose cluster ports (base … base+3, base+10, base+11) are all free, below the
    kernel's ephemeral range: a port picked inside it can be taken between the check and the
    cluster's start by any outgoing connection (the cluster's own clients among them)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    for _ in range(50):
        base = rng.randrange(20_000, max(20_001, low - 20))
        ports = [base, base + 1, base + 2, base + 3, base + 10, base + 11]
        try:
            for port in ports:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError("no free port range")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "cluster"
    yield folder
    down(folder)  # whatever the test left (in process: quicker than the CLI)
    state = folder / "cluster.json"
    if state.exists():  # PostgreSQL's folder may sit outside tmp_path (under /tmp as root)
        shutil.rmtree(Path(json.loads(state.read_text())["postgres"]["folder"]).parent, ignore_errors=True)


@pytest.mark.heavy
@pytest.mark.slow
def test_cluster_up_starts_everything_and_down_leaves_nothing_behind(
    cluster_dir: Path, tmp_path: Path
) -> None:
    base = _free_base_port()
    up = ["cluster", "up", "--data-dir", str(cluster_dir), "--base-port", str(base)]
    small = ["--api-servers", "2", "--processors", "1", "--dask-workers", "1"]
    started = _pitstop(*up, *small)
    assert started.returncode == 0, started.stdout + started.stderr
    assert (
        "api-2" in started.stdout and f"--config {cluster_dir.resolve() / 'cluster.toml'}" in started.stdout
    )

    state = json.loads((cluster_dir / "cluster.json").read_text())
    roles = sorted(p["role"] for p in state["processes"])
    assert roles == ["api", "api", "dask-scheduler", "dask-worker", "nats", "processor", "s3"]
    pids = [p["pid"] for p in state["processes"]]
    assert all(_alive(pid) for pid in pids)
    for url in state["urls"]["api"]:
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
            assert response.status == 200
    postgres = Postgres(Path(state["postgres"]["folder"]), state["postgres"]["port"])
    # `cluster init` migrated the ops DB and MLflow's store in PostgreSQL, once, before the API servers
    assert postgres.psql("SELECT count(*) FROM alembic_version", database="pitstop") == "1"
    assert int(postgres.psql("SELECT count(*) FROM experiments", database="mlflow")) >= 1

    logs = Path(state["logs"])
    assert "ops DB, MLflow store and lake ready" in (logs / "init.log").read_text()
    for name in ("api-1", "api-2", "processor-1"):  # none raced another to make MLflow's tables
        assert "cannot be used" not in (logs / f"{name}.log").read_text(), name

    _readings_land_once_in_the_s3_lake(cluster_dir, state["urls"]["api"])

    status = _pitstop("cluster", "status", "--data-dir", str(cluster_dir), "--json")
    rows = [json.loads(line) for line in status.stdout.splitlines()]
    assert len(rows) == 8 and all(row["up"] for row in rows), status.stdout

    down = _pitstop("cluster", "down", "--data-dir", str(cluster_dir))
    assert down.returncode == 0, down.stderr
    assert not [pid for pid in pids if _alive(pid)]
    assert not postgres.running()
    again = _pitstop("cluster", "down", "--data-dir", str(cluster_dir))
    assert again.returncode == 0 and "nothing was running" in again.stdout
    status = _pitstop("cluster", "status", "--data-dir", str(cluster_dir), "--json")
    assert not any(json.loads(line)["up"] for line in status.stdout.splitlines())


def _readings_land_once_in_the_s3_lake(cluster_dir: Path, apis: list[str]) -> None:
    """A device's batch through one API server, its re-send through the other: stored once, in the
    lake on the cluster's S3, by the partitioned processor."""
    import time

    import httpx

    from pitstop.config import load_settings
    from pitstop.lake import Lake
    from pitstop.lake.location import LakeLocation
    from tests.test_api import readings

    config = cluster_dir / "cluster.toml"
    env_file = cluster_dir / "cluster.env"
    env = dict(
        line.removeprefix("export ").split("=", 1)
        for line in env_file.read_text().splitlines()
        if "=" in line
    )
    added = subprocess.run(
        [
            sys.executable,
            "-m",
            "pitstop",
            "--config",
            str(config),
            "devices",
            "add",
            "eng-900",
            "--machine-type",
            "turbofan",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **env, "PYTHONPATH": str(REPO / "src")},
        timeout=120,
    )
    assert added.returncode == 0, added.stderr
    token = json.loads(added.stdout.strip().splitlines()[-1])["token"]
    batch = readings("eng-900", 1, 0, 20)
    headers = {"Authorization": f"Bearer {token}"}
    first = httpx.post(f"{apis[0]}/api/v1/readings", json=batch, headers=headers, timeout=30)
    assert first.status_code == 202 and first.json()["accepted"] == 20, first.text
    again = httpx.post(f"{apis[1]}/api/v1/readings", json=batch, headers=headers, timeout=30)
    assert again.status_code == 202 and again.json()["duplicates"] == 20, again.text
    settings = load_settings(config)
    lake = Lake(LakeLocation.from_settings(settings), [])
    deadline = time.monotonic() + 60
    rows = 0
    while time.monotonic() < deadline:
        rows = lake.read("telemetry", columns=["seq"], machine_ids=["eng-900"]).height
        if rows >= 20:
            break
        time.sleep(0.5)
    time.sleep(1)
    assert lake.read("telemetry", columns=["seq"], machine_ids=["eng-900"]).height == 20
