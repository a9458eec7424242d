"""Artifact locations in a copy of the MLflow store.

MLflow records them as absolute paths or file URIs (experiment artifact location, run artifact
URI, model version source and storage location), so a copy of the store still names the folder it
was copied from. These functions move whole path prefixes inside a copy, never the original.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from urllib.parse import unquote, urlparse

# the MLflow store's columns that hold an artifact location
_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("model_versions", "source"),
    ("model_versions", "storage_location"),
    ("logged_models", "artifact_location"),
)


def rewrite_artifact_paths(mlflow_db: Path, old_uri: str, new_uri: str) -> int:
    """Point the locations under ``old_uri`` (or its plain path) at the same place under
    ``new_uri``; returns how many values changed."""
    if old_uri == new_uri or not mlflow_db.is_file():
        return 0
    with closing(sqlite3.connect(mlflow_db)) as conn, conn:
        return _replace(conn, old_uri, new_uri) + _replace(conn, _plain(old_uri), _plain(new_uri))


def adopt_artifact_roots(mlflow_db: Path, artifacts_uri: str, artifacts: Path) -> tuple[int, list[str]]:
    """Point experiments stored elsewhere at ``artifacts_uri`` where ``artifacts`` (the copied
    artifacts folder) holds their runs' folders: the store of a data dir copied or moved by
    hand still names the old folder. Returns the values changed, and the artifact roots whose runs
    are not in the copy (their models are not in the backup)."""
    if not mlflow_db.is_file():
        return 0, []
    changed, outside = 0, []
    with closing(sqlite3.connect(mlflow_db)) as conn, conn:
        experiments = conn.execute("SELECT experiment_id, artifact_location FROM experiments").fetchall()
        for experiment, location in experiments:
            root = (location or "").rstrip("/")
            if not root or _under(root, artifacts_uri) or _under(root, _plain(artifacts_uri)):
                continue
            runs = conn.execute("SELECT artifact_uri FROM runs WHERE experiment_id = ?", (experiment,))
            folders = [unquote(u[len(root) + 1 :]) for (u,) in runs if u and _under(u, root)]
            if not folders:
                continue  # no run stored anything there (MLflow's Default experiment)
            if any((artifacts / folder).is_dir() for folder in folders):
                changed += _replace(conn, root, artifacts_uri)
            else:
                outside.append(root)
    return changed, outside


def _under(value: str, prefix: str) -> bool:
    return value == prefix or value.startswith(prefix.rstrip("/") + "/")


def _replace(conn: sqlite3.Connection, old: str, new: str) -> int:
    """Replace the whole-path prefix ``old`` by ``new`` in every artifact-location column."""
    old, new = old.rstrip("/"), new.rstrip("/")
    changed = 0
    for table, column in _COLUMNS:
        if column not in {row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')}:
            continue  # another MLflow schema version
        changed += conn.execute(
            f'UPDATE "{table}" SET "{column}" = ? || substr("{column}", ?) '
            f'WHERE "{column}" = ? OR substr("{column}", 1, ?) = ?',
            (new, len(old) + 1, old, len(old) + 1, old + "/"),
        ).rowcount
    return changed


def _plain(uri: str) -> str:
    return unquote(urlparse(uri).path) if uri.startswith("file:") else uri
