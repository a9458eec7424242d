"""End to end: ``pitstop demo`` in a subprocess, driven and checked through real HTTP."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from deltalake import DeltaTable

from pitstop.sim import shipped
from tests.conftest import free_port

pytestmark = pytest.mark.slow


class Demo:
    """A ``pitstop demo`` subprocess whose output is collected as it comes."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines)

    def login_link(self) -> str | None:
        found = re.search(r"log in \(one-time link[^)]*\): (\S+)", self.output())
        return found.group(1) if found else None

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)


def start_demo(data_dir: Path, port: int, *extra: str) -> Demo:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "pitstop",
        "demo",
        "--data-dir",
        str(data_dir),
        "--port",
        str(port),
        "--json",
        *extra,
    ]
    return Demo(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env))


def wait_for(predicate: Any, timeout: float, what: str, demo: Demo) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if demo.proc.poll() is not None:
            demo._reader.join(5)
            raise AssertionError(
                f"demo exited early ({demo.proc.returncode}) waiting for {what}:\n{demo.output()}"
            )
        try:
            value = predicate()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(0.5)
    demo.proc.kill()
    demo._reader.join(5)
    raise AssertionError(f"timed out waiting for {what}:\n{demo.output()}")


def finish(demo: Demo, timeout: float) -> tuple[dict[str, Any], str]:
    demo.proc.wait(timeout=timeout)
    demo._reader.join(10)
    out = demo.output()
    assert demo.proc.returncode == 0, out
    summary = json.loads(out.strip().splitlines()[-1])
    return summary, out


def log_in(http: httpx.Client, demo: Demo) -> None:
    """Follow the demo's one-time login link: the client holds an admin session after."""
    link = wait_for(demo.login_link, 30, "the login link", demo)
    first = http.get(link)
    assert first.status_code == 303 and first.headers["location"] == "/"
    me = http.get("/api/v1/me").json()
    assert me["role"] == "admin"
    http.headers["X-CSRF-Token"] = me["csrf_token"]  # the session's writes carry it, as the pages do
    again = http.get(link)  # spent
    assert again.status_code == 303 and "error=expired_link" in again.headers["location"]


def test_demo_end_to_end(tmp_path: Path) -> None:
    data_dir = tmp_path / "pitstop-data"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    live_total = shipped("fd001_test").height
    proc = start_demo(data_dir, port, "--speed", "100", "--for", "30")
    with httpx.Client(base_url=url, timeout=10, follow_redirects=False) as http:
        wait_for(lambda: http.get("/healthz").json() == {"status": "ok"}, 300, "healthz", proc)
        assert http.get("/api/v1/machines").status_code == 401  # not before logging in
        log_in(http, proc)

        def everything_scored() -> bool:
            machines = http.get("/api/v1/machines").json()["machines"]
            status = http.get("/api/v1/status").json()
            return (
                len(machines) == 100
                and all(m["predicted_rul"] is not None for m in machines)
                and status["replay"]["finished"]
                and status["bus"]["lag"] == 0
            )

        wait_for(everything_scored, 60, "every live machine scored", proc)
        assert "<table" in http.get("/").text or "fleet" in http.get("/").text
        assert "machine.html" not in http.get("/machines/eng-001").text  # the page itself, not a listing
        assert http.get("/api/v1/machines/eng-001/telemetry").json()["seq"]
        assert http.get("/api/v1/machines/eng-001/predictions").json()["rul"]
        orders = http.get("/api/v1/work-orders").json()
        assert orders["count"] >= 1
        metrics = http.get("/metrics").text
        assert f"pitstop_readings_accepted_total {float(live_total)}" in metrics
    summary, out = finish(proc, timeout=120)
    assert "trained version 1" in out
    assert summary["readings_accepted"] == live_total
    assert summary["live_readings_in_lake"] == live_total
    assert summary["machines_scored"] == 100
    assert summary["work_orders_open"] >= 1
    assert summary["replay"]["rejected"] == {}

    # every accepted reading is in the lake exactly once
    lake = pl.from_arrow(
        DeltaTable(str(data_dir / "lake" / "telemetry")).to_pyarrow_table(columns=["machine_id", "seq"])
    )
    assert isinstance(lake, pl.DataFrame)
    live = lake.filter(pl.col("machine_id").str.starts_with("eng-"))
    assert live.height == live_total
    assert live.unique(["machine_id", "seq"]).height == live_total
    assert lake.height == live_total + shipped("fd001_train").height

    # a second run reuses the data dir (no seeding, no training) and stops cleanly on Ctrl-C
    proc = start_demo(data_dir, port)
    with httpx.Client(base_url=url, timeout=10, follow_redirects=False) as http:
        wait_for(lambda: http.get("/healthz").status_code == 200, 120, "healthz (second run)", proc)
        log_in(http, proc)  # a fresh link on every run
        status = http.get("/api/v1/status").json()
        assert status["model"]["version"] == "1" and status["readings_processed"] == live_total
    proc.send_signal(signal.SIGINT)
    summary, out = finish(proc, timeout=60)
    assert "seeding" not in out and "training" not in out
    assert "champion model: pitstop-rul-turbofan version 1" in out
    assert summary["readings_accepted"] == 0 and summary["live_readings_in_lake"] == live_total


@pytest.mark.heavy
def test_harvester_demo_end_to_end(tmp_path: Path) -> None:
    """``pitstop demo --fleet harvesters``: the shipped fleet file applied, last season imported
    through the history importer, a harvester model trained (hours, regimes, components), and the
    live harvesters replayed with their recorded timestamps, scored by their type's model."""
    data_dir = tmp_path / "harvesters"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_demo(data_dir, port, "--fleet", "harvesters", "--speed", "400", "--for", "45")
    with httpx.Client(base_url=url, timeout=10, follow_redirects=False) as http:
        wait_for(lambda: http.get("/healthz").json() == {"status": "ok"}, 600, "healthz", proc)
        log_in(http, proc)

        def replayed() -> bool:
            status = http.get("/api/v1/status").json()
            return bool(status["replay"]["finished"] and status["bus"]["lag"] == 0)

        wait_for(replayed, 120, "the live harvesters replayed", proc)
        machines = [
            m for m in http.get("/api/v1/machines").json()["machines"] if m["machine_id"].startswith("HV-")
        ]
        assert machines and all(m["predicted_rul"] is not None for m in machines)
        models = http.get("/api/v1/models").json()
        assert list(models["machine_types"]) == ["harvester"]
        assert models["machine_types"]["harvester"]["serving"]["components"]  # learned from named failures
        prediction = http.post("/api/v1/predict", json={"machine_ids": [machines[0]["machine_id"]]}).json()
        assert prediction["predictions"][0]["model"]["name"] == "pitstop-rul-harvester"
        orders = http.get("/api/v1/work-orders?status=all").json()["work_orders"]
        for order in orders:  # each names the component the model expects to fail, and what to do
            assert order["component"] and order["procedure"]
    summary, out = finish(proc, timeout=180)
    assert "harvesters.toml applied" in out and "imported" in out
    assert summary["replay"]["rejected"] == {}
    # the simulator's sensor glitches (a probe reading -40) are accepted, then quarantined
    landed = summary["live_readings_in_lake"] + summary["live_readings_quarantined"]
    assert landed == summary["readings_accepted"] > 0


def test_the_demo_opens_a_work_order_within_a_minute_at_the_default_speed(
    trained_dir: Path, tmp_path: Path
) -> None:
    """The live fleet joins part-way through its history: a newcomer sees a work order in the
    first minute after the server answers, at the default speed of one reading per second."""
    data_dir = tmp_path / "data"
    shutil.copytree(trained_dir, data_dir)  # seeded and trained: the demo goes straight to serving
    port = free_port()
    demo = start_demo(data_dir, port, "--for", "90")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        wait_for(lambda: http.get("/healthz").status_code == 200, 120, "healthz", demo)
        started = time.monotonic()
        log_in(http, demo)

        def an_open_order() -> bool:
            return bool(http.get("/api/v1/work-orders?status=open").json()["count"])

        wait_for(an_open_order, 60, "an open work order", demo)
        assert time.monotonic() - started < 60
        demo.send_signal(signal.SIGINT)
    summary, _ = finish(demo, timeout=90)
    assert summary["work_orders_open"] >= 1
