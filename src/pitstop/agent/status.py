"""``pitstop agent status``: what an agent's folder says about it, read beside a running agent;
and the folder's lock (one agent per folder)."""

from __future__ import annotations

import fcntl
import sqlite3
import time
from pathlib import Path
from typing import IO, Any

from pitstop.agent.clock import iso
from pitstop.errors import AgentError

LOCK_FILE = "agent.lock"


def hold_folder(folder: Path) -> IO[bytes]:
    """An exclusive lock on the agent's folder for as long as the file stays open: a second agent
    on the same buffer would give every reading of the source a second seq."""
    folder.mkdir(parents=True, exist_ok=True)
    fh = open(folder / LOCK_FILE, "a+b")  # noqa: SIM115 - held until stop()
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        fh.close()
        raise AgentError(
            f"another agent is running on {folder} (its lock {LOCK_FILE} is held): stop it first, or give "
            "this one its own --dir",
            code="agent_running",
        ) from exc
    return fh


def _held(folder: Path) -> bool:
    """Whether an agent holds the folder's lock now."""
    try:
        fh = open(folder / LOCK_FILE, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return False
    with fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return False


def status(folder: Path) -> dict[str, Any]:
    """What ``pitstop agent status`` shows, read from the buffer (the agent may be running)."""
    from pitstop.agent.buffer import open_readonly

    path = folder / "buffer.db"
    try:
        db = open_readonly(path)
        try:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            depth, oldest = db.execute("SELECT count(*), min(seq) FROM readings").fetchone()
            rejected = db.execute("SELECT count(*) FROM rejected").fetchone()[0]
            boots = db.execute(
                "SELECT boot, offset_us, source FROM boots ORDER BY first_seq DESC LIMIT 1"
            ).fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise AgentError(
            f"cannot read the agent buffer {path}: {exc} (not an agent buffer, damaged, or busy: try again)",
            code="agent_buffer",
        ) from exc
    pid = int(meta.get("pid") or 0)
    running = _held(folder)
    now = time.time()

    def when(key: str) -> str | None:
        value = meta.get(key)
        return iso(int(value)) if value else None

    return {
        "machine_id": meta.get("machine_id"),
        "server": meta.get("server"),
        "source": meta.get("source"),
        "running": running,
        "pid": pid if running else None,
        "link": meta.get("link", "unknown") if running else "stopped",
        "link_since": when("link_since_us"),
        "last_error": meta.get("last_error") or None,
        "buffer_depth": int(depth),
        "oldest_seq": oldest,
        "next_seq": int(meta.get("next_seq", 0) or 0),
        "last_send": when("last_send_us"),
        "seconds_since_send": round(now - int(meta["last_send_us"]) / 1e6, 1)
        if meta.get("last_send_us")
        else None,
        "sent": int(meta.get("sent", 0) or 0),
        "duplicates": int(meta.get("duplicates", 0) or 0),
        "thinned": int(meta.get("thinned", 0) or 0),
        "dropped": int(meta.get("dropped", 0) or 0),
        "rejected": int(rejected),
        "source_errors": int(meta.get("source_errors", 0) or 0),
        "source_ended": bool(int(meta.get("source_ended", 0) or 0)),
        "seq_conflicts": int(meta.get("seq_conflicts", 0) or 0),
        "ignored_fields": [f for f in str(meta.get("ignored_fields") or "").split(",") if f],
        "clock": {
            "offset_source": boots[2] if boots else None,
            "corrections": int(meta.get("clock_corrections", 0) or 0),
            "estimated_readings": int(meta.get("clock_estimated", 0) or 0),
        },
        "model_version": meta.get("model_version"),
        "last_alert": meta.get("last_alert"),
    }
