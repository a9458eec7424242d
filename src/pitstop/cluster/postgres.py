"""A throwaway PostgreSQL cluster on this machine: for ``pitstop cluster up`` and the tests.

Debian's ``postgresql-15`` binaries (``/usr/lib/postgresql/15/bin``) or any ``initdb`` on PATH. The
server refuses to run as root, so as root it runs as the ``postgres`` user, on a folder that user owns.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pitstop.errors import ServerError

USER = "pitstop"


def _bin(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
        found = versions[-1] if versions else None
    if found is None:
        raise ServerError(
            f"PostgreSQL's {name} was not found: `apt-get install postgresql-15` (Debian) or put its "
            "bin folder on PATH"
        )
    return found


def _run(cmd: list[str], *, as_owner: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL program (as ``postgres`` when asked and we are root); never raises on its
    exit code: the callers read it."""
    return subprocess.run(_as_owner(cmd) if as_owner else cmd, capture_output=True, text=True, check=False)


def _as_owner(cmd: list[str]) -> list[str]:
    """Run as ``postgres`` when we are root (the server will not run as root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@dataclass(frozen=True)
class Postgres:
    """A running local cluster: its folder, port and SQLAlchemy URL (user ``pitstop``, trust auth
    on 127.0.0.1 only)."""

    folder: Path
    port: int

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, database: str = "pitstop") -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run one statement with ``psql`` (outside a transaction: CREATE DATABASE works)."""
        out = _run(
            [
                _bin("psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                USER,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-Atc",
                sql,
            ]
        )
        if out.returncode != 0:
            raise ServerError(f"psql failed: {out.stderr.strip()}")
        return out.stdout.strip()

    def create_database(self, name: str, template: str | None = None) -> str:
        """A new empty database (or a copy of ``template``); returns its URL."""
        suffix = f' TEMPLATE "{template}"' if template else ""
        self.psql(f'CREATE DATABASE "{name}"{suffix}')
        return self.url(name)

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def stop(self, mode: str = "fast") -> None:
        if not self.running():
            return
        _run([_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"], as_owner=True)

    def start(self) -> None:
        """Start (or start again) the server on its port; waits until it takes connections."""
        log = self.folder / "postgres.log"
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c max_connections=300"
        out = _run(
            [
                _bin("pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(log),
                "-o",
                options,
                "-w",
                "-t",
                "30",
                "start",
            ],
            as_owner=True,
        )
        if out.returncode != 0:
            tail = log.read_text()[-800:] if log.exists() else out.stderr
            raise ServerError(f"PostgreSQL did not start on port {self.port}: {tail.strip()}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready = _run([_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)])
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise ServerError(f"PostgreSQL on port {self.port} did not take connections within 30 s")


def start_postgres(folder: Path, port: int, database: str = "pitstop") -> Postgres:
    """Make (once) and start a cluster in ``folder``; the database ``database`` exists after."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:  # the postgres user must own its folder and reach it
        shutil.chown(folder, "postgres", "postgres")
        for parent in folder.parents:
            if parent == Path("/"):
                break
            mode = parent.stat().st_mode
            if not mode & 0o001:
                raise ServerError(
                    f"{parent} is not reachable by the postgres user (PostgreSQL will not run as root): "
                    "put the cluster's folder under /tmp or a folder others may traverse"
                )
    server = Postgres(folder, port)
    if not (server.data / "PG_VERSION").exists():
        out = _run(
            [
                _bin("initdb"),
                "-D",
                str(server.data),
                "-U",
                USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            as_owner=True,
        )
        if out.returncode != 0:
            raise ServerError(f"initdb failed: {out.stderr.strip() or out.stdout.strip()}")
    server.start()
    if server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}'") != "1":
        server.create_database(database)
    return server
