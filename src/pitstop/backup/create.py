"""``backup``: a consistent copy of a data dir while the server and processor may be running.

Each store is copied at a moment of its own, in the order the stream writes them backwards, so the
copy is a state a crash could have left, which a restart already knows how to finish:

1. the ops DB, and the bus position up to which it holds the processor's results;
2. the lake, each table pinned at its version now (it holds at least those results' readings);
3. the bus, which holds every message the pinned lake has rows from; its consumers are set back to
   the ops DB's positions, so a restored processor records the later readings (the lake's
   idempotent commits skip the rows it has already);
4. the MLflow store and any other SQLite database, then the lake tables' files;
5. every other file (model artifacts, after the MLflow store that names them; secrets; state).

Databases go through SQLite's online backup API; the manifest ``backup.json`` lists every file's
size and sha256, the lake tables' versions and the ops DB's migration.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import closing, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pitstop import __version__
from pitstop.backup.files import (
    DATA,
    MANIFEST,
    SIDECARS,
    Progress,
    copy_file,
    embedded_only,
    inventory,
    is_sqlite,
    quiet,
    refuse_non_empty,
    sqlite_copy,
    staging,
    write_private,
)
from pitstop.backup.lake import copy_table, tables_now
from pitstop.backup.registry_paths import adopt_artifact_roots
from pitstop.config import Settings
from pitstop.errors import NotFoundError, ValidationError

FORMAT = 1


def backup(settings: Settings, dest: Path, progress: Progress = quiet) -> dict[str, Any]:
    """Back up the settings' data dir into ``dest`` (a new or empty folder); returns a summary."""
    embedded_only(settings.ops_db_url, "back it up with pg_dump; this command backs up")
    started = time.monotonic()
    local_stores_only(settings, "backup")
    source = settings.data_dir.expanduser().resolve()
    dest = Path(dest).expanduser().resolve()
    ops_db, mlflow_db = _db_path(settings.ops_db_url), _db_path(settings.mlflow_uri)
    if not ops_db.is_file():
        raise NotFoundError(
            f"{source} is not a Pitstop data dir (it has no {ops_db.name}): name it with --data-dir",
            code="data_dir_not_found",
        )
    if dest.is_relative_to(source):
        raise ValidationError(
            f"the backup folder {dest} is inside the data dir {source}: name a folder outside it",
            code="backup_inside_data_dir",
        )
    refuse_non_empty(dest, "backup_exists", "backup folder")
    lake_dir = settings.lake_dir.resolve()
    bus = settings.bus_path.resolve() if settings.bus_backend == "sqlite" else None
    with staging(dest, "backup_exists") as stage:
        data = stage / DATA
        sqlite_copy(ops_db, data / ops_db.relative_to(source))
        revision, recorded = _ops_state(data / ops_db.relative_to(source))
        tables = tables_now(lake_dir)
        databases = [p for p in _files(source, lake_dir) if p != ops_db and is_sqlite(p)]
        databases.sort(key=lambda p: p != bus)  # the bus first, right after the lake was pinned
        positions: dict[str, int] = {}
        for i, path in enumerate(databases, 1):
            sqlite_copy(path, data / path.relative_to(source))
            if path == bus:
                positions = _rewind(data / path.relative_to(source), recorded)
            progress("databases", i, len(databases))
        for i, table in enumerate(tables, 1):
            copy_table(table, data / table.root.relative_to(source))
            progress("lake", i, len(tables))
        _copy_files(
            source, data, [p for p in _files(source, lake_dir) if p != ops_db and not is_sqlite(p)], progress
        )
        # a data dir copied or moved by hand: its MLflow store still names the old artifacts folder
        artifacts_uri = settings.mlflow_artifacts_dir.as_uri()
        adopted, outside = adopt_artifact_roots(
            data / mlflow_db.relative_to(source),
            artifacts_uri,
            data / settings.mlflow_artifacts_dir.relative_to(source),
        )
        files = inventory(data, progress)
        manifest = {
            "format": FORMAT,
            "pitstop_version": __version__,
            "created_at": datetime.now(UTC).isoformat(),
            "source": str(source),
            "mlflow_db": mlflow_db.relative_to(source).as_posix(),
            "mlflow_artifacts_uri": artifacts_uri,
            "mlflow_artifacts_outside": outside,
            "ops_db_revision": revision,
            "bus_positions": positions,
            "lake": {
                t.root.relative_to(source).as_posix(): {"version": t.version, "rows": t.rows} for t in tables
            },
            "files": files,
        }
        write_private(stage / MANIFEST, json.dumps(manifest, indent=1).encode())
    return {
        "backup": str(dest),
        "files": len(files),
        "bytes": sum(f["size"] for f in files),
        "lake": {t.name: t.version for t in tables},
        "ops_db_revision": revision,
        "bus": "sqlite"
        if bus is not None
        else f"{settings.bus_backend}: outside the data dir, not backed up",
        "mlflow_paths_adopted": adopted,
        "mlflow_artifacts_outside": outside,
        "seconds": round(time.monotonic() - started, 2),
    }


def local_stores_only(settings: Settings, verb: str) -> None:
    """Refuse (one line, code ``backup_remote_store``) when the lake or MLflow is not in the data
    dir: a backup copies files, and object storage and database servers have their own tools."""
    remote = []
    if not settings.lake_is_local:
        remote.append(f"the lake is on {settings.lake_uri} (use the bucket's versioning and replication)")
    if not settings.mlflow_tracking_uri.startswith("sqlite:"):
        remote.append("MLflow's store is on a database server (back it up with pg_dump)")
    if settings.mlflow_artifacts_uri.startswith("s3://"):
        remote.append(f"model artifacts are on {settings.mlflow_artifacts_uri} (use the bucket's versioning)")
    if remote:
        raise ValidationError(
            f"pitstop {verb} copies a local data dir only, and " + "; ".join(remote),
            code="backup_remote_store",
        )


def _copy_files(source: Path, data: Path, paths: list[Path], progress: Progress) -> None:
    for i, path in enumerate(paths, 1):
        with suppress(FileNotFoundError):  # removed meanwhile (a cache replaced)
            copy_file(path, data / path.relative_to(source))
        progress("files", i, len(paths))


def _db_path(url: str) -> Path:
    """The file of a ``sqlite:///`` URL the settings derive from the data dir."""
    return Path(url.removeprefix("sqlite:///")).resolve()


def _files(source: Path, lake_dir: Path) -> list[Path]:
    """The data dir's files outside the lake, without live journals and temporary files."""
    out = []
    for folder, dirs, names in os.walk(source):
        dirs[:] = sorted(d for d in dirs if Path(folder, d) != lake_dir)
        for name in sorted(names):
            path = Path(folder, name)
            if name.endswith(".tmp") or not path.is_file():
                continue
            if name.endswith(SIDECARS) and Path(folder, name.rsplit("-", 1)[0]).exists():
                continue
            out.append(path)
    return out


def _ops_state(copy: Path) -> tuple[str | None, dict[str, int]]:
    """The copied ops DB's migration, and each processor's last bus position whose results it holds."""
    with closing(sqlite3.connect(copy)) as conn:
        try:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            recorded = dict(conn.execute("SELECT consumer, position FROM processor_positions").fetchall())
        except sqlite3.OperationalError:
            return None, {}  # a data dir not migrated this far: nothing recorded to match
    return (row[0] if row else None), {str(k): int(v) for k, v in recorded.items()}


def _rewind(bus_copy: Path, recorded: dict[str, int]) -> dict[str, int]:
    """Set the copied bus's consumers back to the ops DB's positions where they are past them
    (the bus was copied later), so a restored processor records those readings' results."""
    with closing(sqlite3.connect(bus_copy, isolation_level=None)) as conn:
        try:
            for name, position in recorded.items():
                conn.execute(
                    "UPDATE consumers SET position = ? WHERE name = ? AND position > ?",
                    (position, name, position),
                )
            return {str(k): int(v) for k, v in conn.execute("SELECT name, position FROM consumers")}
        except sqlite3.OperationalError:
            return {}  # not a Pitstop bus
