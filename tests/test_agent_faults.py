"""The agent under faults (issue 20's test): a real server behind a proxy that drops, stalls and
resets connections, the agent a real ``pitstop agent`` process SIGKILLed at random moments while it
tails a growing NDJSON file. Every reading must reach the lake exactly once, in order."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from pitstop.agent.buffer import Buffer
from pitstop.agent.runner import status
from pitstop.cli import cli
from pitstop.platform import Platform
from pitstop.schema import TURBOFAN
from tests.agentkit import landed, serve, token_file, turbofan_rows
from tests.conftest import free_port
from tests.faultproxy import FaultProxy

SENSORS = TURBOFAN.sensor_names
MACHINE = "edge-f"


def agent_toml(folder: Path, server: str, token: Path, source: Path, **more: object) -> Path:
    """The agent's settings file: big batches, short waits, no edge scoring."""
    values: dict[str, object] = {
        "agent_server": server,
        "agent_token_file": str(token),
        "agent_machine_id": MACHINE,
        "agent_source": f"tail:{source}",
        "agent_dir": str(folder / "agent"),
        "agent_batch_max": 2000,
        "agent_send_interval_s": 0.05,
        "agent_retry_max_s": 1.0,
        "agent_edge_scoring": False,
        **more,
    }
    path = folder / "agent.toml"
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
    return path


def start_agent(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "pitstop", "--config", str(config), "agent"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
        )


def counts(folder: Path) -> dict[str, int]:
    """The buffer's counts as a power loss left them (the buffer opened as the next agent would)."""
    buffer = Buffer(folder / "buffer.db")
    try:
        return buffer.counts()
    finally:
        buffer.close()


def ndjson(rows: list[dict[str, float]]) -> str:
    return "".join(json.dumps({"values": r}) + "\n" for r in rows)


class Appender:
    """Appends the source's lines in chunks on a thread, as a data logger would."""

    def __init__(self, path: Path, rows: list[dict[str, float]], chunk: int, pause_s: float) -> None:
        self.path, self.rows, self.chunk, self.pause_s = path, rows, chunk, pause_s
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for start in range(0, len(self.rows), self.chunk):
            with self.path.open("a") as fh:
                fh.write(ndjson(self.rows[start : start + self.chunk]))
            time.sleep(self.pause_s)
        self.done.set()


@pytest.mark.heavy
@pytest.mark.slow
def test_a_killed_agent_behind_a_faulty_link_lands_every_reading_once_in_order(
    platform: Platform, tmp_path: Path
) -> None:
    total, kills = 100_000, 5
    rng = random.Random(20)
    rows = turbofan_rows(total)
    source = tmp_path / "logger.ndjson"
    source.touch()
    token = token_file(platform, tmp_path, MACHINE)
    log = tmp_path / "agent.log"
    with serve(platform) as url, FaultProxy(("127.0.0.1", int(url.rsplit(":", 1)[1])), seed=20) as proxy:
        config = agent_toml(tmp_path, proxy.url, token, source)
        proxy.cycle(seed=20)
        appender = Appender(source, rows, chunk=2500, pause_s=0.1)
        appender.thread.start()
        at_kill = []
        for _ in range(kills):
            agent = start_agent(config, log)
            time.sleep(rng.uniform(1.0, 4.0))  # import, open, read, send: killed somewhere in there
            assert agent.poll() is None, log.read_text()[-2000:]
            agent.send_signal(signal.SIGKILL)
            agent.wait(10)
            at_kill.append(counts(tmp_path / "agent"))  # for the messages below
        assert appender.done.wait(60)
        agent = start_agent(config, log)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                report = status(tmp_path / "agent")
                if report["buffer_depth"] == 0 and report["next_seq"] >= total:
                    break
                assert agent.poll() is None, log.read_text()[-2000:]
                time.sleep(0.2)
            else:
                pytest.fail(f"the agent did not drain: {report}\n{log.read_text()[-2000:]}")
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(15)
        faults = dict(proxy.stats)
    shown = subprocess.run(
        [sys.executable, "-m", "pitstop", "agent", "status", "--dir", str(tmp_path / "agent"), "--json"],
        capture_output=True,
        check=True,
    )
    assert json.loads(shown.stdout)["buffer_depth"] == 0
    lake = landed(platform, MACHINE)
    seqs = lake["seq"].to_list()
    twice = len(seqs) - len(set(seqs))
    missing, extra = sorted(set(range(total)) - set(seqs)), sorted(set(seqs) - set(range(total)))
    assert (twice, len(missing), len(extra)) == (0, 0, 0), (
        f"every reading once: {twice} landed twice, {len(missing)} lost (e.g. seq {missing[:5]}), "
        f"{len(extra)} under seqs never given (e.g. {extra[:5]})"
    )
    for sensor in SENSORS[:3]:
        wrong = [k for k, v in enumerate(lake[sensor].to_list()) if v != rows[k][sensor]]
        assert not wrong, f"seq k carries the source's line k: not at {len(wrong)} seqs, e.g. {wrong[:5]}"
    stamps = lake["ts"].to_list()
    assert stamps == sorted(stamps), "in order per machine"
    kills_at = [(r["next_seq"], r["depth"]) for r in at_kill]
    assert all(faults.get(k) for k in ("reset", "stalled")) and faults.get("refused", 0) + faults.get(
        "dropped", 0
    ), f"the proxy did not break things: {faults}"
    assert report["duplicates"] > 0, (
        f"no batch was re-sent after the server took it (a cut response, a kill before the delete): "
        f"{faults}, {kills_at}"
    )


@pytest.mark.slow
def test_power_loss_in_heavy_appends_leaves_no_half_batch(tmp_path: Path) -> None:
    """SIGKILL while the agent appends as fast as it can (no server): after each, the buffer holds
    exactly the lines before its committed source position, each once."""
    total = 60_000
    rows = turbofan_rows(total)
    source = tmp_path / "logger.ndjson"
    source.write_text(ndjson(rows))
    data = source.read_bytes()
    token = tmp_path / "t.token"
    token.write_text("not-used\n")
    config = agent_toml(tmp_path, f"http://127.0.0.1:{free_port()}", token, source)
    rng = random.Random(3)
    log = tmp_path / "agent.log"
    seen = []
    for _ in range(4):
        agent = start_agent(config, log)
        time.sleep(rng.uniform(1.0, 2.5))
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        buffer = Buffer(tmp_path / "agent" / "buffer.db")
        try:
            position = buffer.get("source_position")
            readings = buffer.oldest(total + 1)
            buffer.release()
        finally:
            buffer.close()
        offset = json.loads(position)["offset"] if position else 0
        lines = data[:offset].count(b"\n")
        seen.append(lines)
        assert [r.seq for r in readings] == list(range(lines)), "each line before the position, once"
        assert [r.values for r in readings[-1:]] == [dict(rows[lines - 1])][: len(readings)]
    assert seen[-1] > seen[0], f"the agent made progress between kills: {seen}"


# -- the proxy itself ------------------------------------------------------------------------------


class _Echo(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a reset from the proxy is the point


@contextmanager
def echo_server() -> Iterator[tuple[str, int]]:
    server = _QuietServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ("127.0.0.1", int(server.server_address[1]))
    finally:
        server.shutdown()
        server.server_close()


def test_the_fault_proxy_passes_drops_stalls_and_resets() -> None:
    body = b"x" * 200_000
    with echo_server() as upstream, FaultProxy(upstream, seed=1) as proxy:
        with httpx.Client(base_url=proxy.url, timeout=1.0) as client:
            assert client.post("/", content=body).content == body
            proxy.set("drop")
            with pytest.raises(httpx.TransportError):
                client.post("/", content=body)
            proxy.set("stall")
            with pytest.raises(httpx.TimeoutException):
                client.post("/", content=body)
            proxy.set("reset")
            for _ in range(5):  # each connection is cut somewhere in its request or its response
                with pytest.raises(httpx.TransportError):
                    httpx.post(proxy.url, content=body, timeout=2.0)
            proxy.set("pass")
            assert client.post("/", content=body).content == body
        raw = socket.create_connection(("127.0.0.1", proxy.port))
        time.sleep(0.2)  # accepted and linked in pass mode: then dropped while open
        proxy.set("drop")
        time.sleep(0.2)
        with pytest.raises(ConnectionResetError):
            raw.sendall(b"GET / HTTP/1.1\r\n\r\n")
            raw.recv(10)
        raw.close()
    assert proxy.stats["refused"] >= 1 and proxy.stats["reset"] >= 5 and proxy.stats["dropped"] >= 1


def test_a_device_hanging_up_mid_body_is_not_a_server_error(
    platform: Platform, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pitstop.web.errors")
    token = token_file(platform, tmp_path, MACHINE).read_text().strip()
    with serve(platform) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as raw:
            raw.sendall(
                b"POST /api/v1/readings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Authorization: Bearer {token}\r\nContent-Length: 100000\r\n\r\n".encode()
                + b'{"readings": ['
            )
            time.sleep(0.2)
        time.sleep(0.5)
        assert httpx.get(f"{url}/healthz").status_code == 200
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    assert any("disconnected before its request body" in r.getMessage() for r in caplog.records)


def test_agent_status_while_the_buffer_is_being_created_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "agent"
    folder.mkdir()
    sqlite3.connect(folder / "buffer.db").close()  # the file exists, its tables not yet
    result = CliRunner().invoke(cli, ["agent", "status", "--dir", str(folder), "--json"])
    assert result.exit_code == 2, result.output
    assert "agent_buffer" in result.output and "try again" in result.output
