"""What ``pitstop cluster up`` started, kept in ``<data_dir>/cluster.json``: each process with its pid
and start time (a reused pid is not ours to signal), PostgreSQL's folder and port; and the
``cluster.toml`` settings file it writes for the user."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pitstop.errors import ServerError

if TYPE_CHECKING:
    from pitstop.cluster.postgres import Postgres

STATE = "cluster.json"


@dataclass
class Running:
    """One process ``up`` started: its pid and start time (a reused pid is not ours to signal)."""

    name: str
    role: str
    pid: int
    started: int | None
    port: int | None
    log: str
    group: bool  # leader of its own process group (our Popen): signal the group, children too

    def alive(self) -> bool:
        try:
            if os.waitpid(self.pid, os.WNOHANG)[0] == self.pid:
                return False  # our child, just reaped
        except ChildProcessError:
            pass
        if self.started is not None and start_time(self.pid) != self.started:
            return False  # gone, or the pid now names another process
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def signal(self, sig: signal.Signals) -> None:
        try:
            if self.group:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), None where /proc is missing
    or the process is gone (a zombie no one reaped yet is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


class State:
    """``cluster.json``: written after each start, so ``down`` can stop a half-made cluster."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / STATE
        self.data: dict[str, Any] = {"processes": []}

    @classmethod
    def load(cls, data_dir: Path) -> State | None:
        state = cls(data_dir)
        try:
            state.data = json.loads(state.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ServerError(f"cannot read {state.path}: {exc}", code="cluster_state_unreadable") from None
        return state

    def postgres(self) -> Postgres | None:
        from pitstop.cluster.postgres import Postgres

        pg = self.data.get("postgres")
        return Postgres(Path(pg["folder"]), pg["port"]) if pg else None

    def postgres_running(self) -> bool:
        server = self.postgres()
        return server is not None and server.running()

    def processes(self) -> list[Running]:
        return [Running(**p) for p in self.data["processes"]]

    def add(self, proc: Running) -> None:
        self.data["processes"].append(proc.__dict__)
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2) + "\n")
        tmp.replace(self.path)


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(str(value))  # a JSON string is a TOML basic string


def settings_toml(values: dict[str, Any]) -> str:
    lines = ["# written by `pitstop cluster up`: pitstop --config <this file> … talks to the cluster"]
    lines += [f"{name} = {_toml_value(value)}" for name, value in values.items()]
    return "\n".join(lines) + "\n"
