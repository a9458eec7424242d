"""Files of a backup: private copies that are hashed as they are written, consistent copies of live
SQLite databases, and a staging folder that becomes the target only when everything is in it."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from pitstop.errors import ConflictError, PitstopError, ValidationError

MANIFEST = "backup.json"
DATA = "data"  # the copies sit under DEST/data, laid out as in the data dir
FILE_MODE, DIR_MODE = 0o600, 0o700
SQLITE_HEADER = b"SQLite format 3\x00"
SIDECARS = ("-wal", "-shm", "-journal")  # a live database's journal: its backup copy holds it
_CHUNK = 1 << 20

Progress = Callable[[str, int, int], None]
"""``(phase, done, total)``: how far a phase of a backup or restore is."""


def embedded_only(ops_db_url: str, how: str) -> None:
    """Refuse an ops DB that is not the embedded SQLite file: a PostgreSQL one is the server's
    to back up (``pg_dump``), and a copy of the data dir without it would not be consistent."""
    if not ops_db_url.startswith("sqlite"):
        raise ValidationError(
            f"the ops DB is PostgreSQL: {how} the embedded store (ops_db_url empty)",
            code="ops_db_not_embedded",
        )


def quiet(phase: str, done: int, total: int) -> None:
    """No progress shown."""


def ensure_dir(path: Path) -> None:
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)


def _new_file(path: Path) -> int:
    ensure_dir(path.parent)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)


def copy_file(src: Path, dst: Path) -> str:
    """Copy ``src`` into the new private file ``dst``; returns the sha256 of the bytes written."""
    digest = hashlib.sha256()
    with open(src, "rb") as fin, os.fdopen(_new_file(dst), "wb") as fout:
        while chunk := fin.read(_CHUNK):
            digest.update(chunk)
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return digest.hexdigest()


def write_private(path: Path, data: bytes) -> None:
    with os.fdopen(_new_file(path), "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def is_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except OSError:
        return False


def sqlite_copy(src: Path, dst: Path) -> None:
    """A consistent copy of a live SQLite database through the online backup API. One step: the
    copy is the database at one moment (in WAL mode writers go on meanwhile), written as a single
    file without a journal beside it."""
    os.close(_new_file(dst))
    try:
        uri = src.resolve().as_uri() + "?mode=rw"  # never creates a database that is not there
        with (
            closing(sqlite3.connect(uri, uri=True, timeout=30)) as source,
            closing(sqlite3.connect(dst)) as target,
        ):
            source.backup(target)
            target.execute("PRAGMA journal_mode=DELETE")
            (check,) = target.execute("PRAGMA quick_check").fetchone()
    except sqlite3.Error as exc:
        raise PitstopError(
            f"cannot back up the database {src}: {exc}; check the file and run the backup again",
            code="backup_failed",
        ) from exc
    if check != "ok":
        raise PitstopError(
            f"the database {src} fails SQLite's quick_check ({check}): repair it before backing it up",
            code="backup_failed",
        )


def make_private(root: Path) -> None:
    """Folders 0700, files 0600, under ``root`` (what a library wrote may have other modes)."""
    os.chmod(root, DIR_MODE)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(Path(folder, name), DIR_MODE)
        for name in files:
            os.chmod(Path(folder, name), FILE_MODE)


def inventory(root: Path, progress: Progress = quiet) -> list[dict[str, Any]]:
    """Every file under ``root``: relative path, size and sha256, in path order."""
    paths = sorted(p for p in root.rglob("*") if p.is_file())
    out = []
    for i, path in enumerate(paths, 1):
        out.append(
            {
                "path": path.relative_to(root).as_posix(),
                "size": path.stat().st_size,
                "sha256": sha256_of(path),
            }
        )
        progress("checksums", i, len(paths))
    return out


def refuse_non_empty(path: Path, code: str, what: str) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConflictError(f"{what} {path} exists and is not empty: name a new or empty folder", code=code)


@contextmanager
def staging(target: Path, code: str) -> Iterator[Path]:
    """A private folder beside ``target`` that is renamed to it when the block succeeds and removed
    when it fails, so a half-done copy is never left under the target's name."""
    ensure_dir(target.parent)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield stage
        make_private(stage)
        try:
            if target.exists():
                target.rmdir()  # found empty before the copy; fails if something was put there since
            os.rename(stage, target)
        except OSError as exc:
            raise ConflictError(f"cannot move the copy into {target}: {exc}", code=code) from exc
        parent = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(parent)
        finally:
            os.close(parent)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
