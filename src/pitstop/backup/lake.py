"""Lake tables in a backup: each at one version, copied as its log up to that version and the data
files it reads, so the copy reads exactly that version however the table moves on meanwhile."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from pitstop.backup.files import copy_file
from pitstop.errors import LakeError, PitstopError

LOG = "_delta_log"
_LOG_FILE = re.compile(r"^(\d{20})\.(?:json|crc|checkpoint(?:\.\d+\.\d+)?\.parquet)$")


@dataclass(frozen=True)
class TableAt:
    """A lake table pinned at a version: its row count and the data files that version reads."""

    name: str
    root: Path
    version: int
    rows: int
    files: tuple[str, ...]  # relative to root


def tables_now(lake_dir: Path) -> list[TableAt]:
    """Every Delta table under ``lake_dir``, pinned at its newest version."""
    if not lake_dir.is_dir():
        return []
    found = []
    for root in sorted(p for p in lake_dir.iterdir() if p.is_dir()):
        if not DeltaTable.is_deltatable(str(root)):
            continue
        try:
            dt = DeltaTable(str(root))
            files = tuple(_relative(root, uri) for uri in dt.file_uris())
            found.append(TableAt(root.name, root, int(dt.version()), int(dt.count()), files))
        except (DeltaError, OSError) as exc:
            raise LakeError(f"cannot read lake table {root.name} for the backup: {exc}") from exc
    return found


def _relative(root: Path, uri: str) -> str:
    path = Path(unquote(urlparse(uri).path)) if uri.startswith("file:") else Path(uri)
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        raise LakeError(
            f"lake table {root.name} reads {uri}, outside its folder: only self-contained tables "
            "can be backed up"
        ) from None


def copy_table(table: TableAt, dest: Path) -> None:
    """Copy ``table`` at its pinned version into ``dest``, checkpoint the copy there, and check
    that the copy reads that version with the same row count."""
    source_log = table.root / LOG
    for name in sorted(os.listdir(source_log)):
        match = _LOG_FILE.match(name)
        if match is None or int(match.group(1)) > table.version:
            continue  # newer commits, _last_checkpoint (written afresh), temporary files
        try:
            copy_file(source_log / name, dest / LOG / name)
        except FileNotFoundError:
            continue  # an old commit cleaned up behind a checkpoint; the check below tells
    for rel in table.files:
        try:
            copy_file(table.root / rel, dest / rel)
        except FileNotFoundError:
            raise PitstopError(
                f"lake table {table.name}: {rel}, read by version {table.version}, was removed "
                "during the backup (a vacuum?); run the backup again",
                code="backup_failed",
            ) from None
    # files of older versions still on disk: time travel to them keeps working in the copy
    wanted = set(table.files)
    for path in sorted(table.root.rglob("*.parquet")):
        rel = path.relative_to(table.root).as_posix()
        if rel in wanted or rel.startswith((LOG + "/", ".", "_")):
            continue
        try:
            copy_file(path, dest / rel)
        except FileNotFoundError:
            continue  # vacuumed meanwhile: not read by the pinned version
    check_table(dest, table.name, table.version, table.rows, checkpoint=True, code="backup_failed")


def check_table(path: Path, name: str, version: int, rows: int, *, checkpoint: bool, code: str) -> None:
    """The table at ``path`` opens at ``version`` with ``rows`` rows (with ``checkpoint``, after
    writing a checkpoint there, so it opens without replaying its whole log)."""
    try:
        dt = DeltaTable(str(path))
        if checkpoint:
            dt.create_checkpoint()
        found, count = int(dt.version()), int(dt.count())
    except (DeltaError, OSError, ValueError) as exc:
        raise PitstopError(f"the copy of lake table {name} does not open: {exc}", code=code) from exc
    if (found, count) != (version, rows):
        raise PitstopError(
            f"the copy of lake table {name} reads version {found} with {count} rows, "
            f"not version {version} with {rows}",
            code=code,
        )
