"""``restore``: a backup into a new data dir, every file checked against the manifest first.

The MLflow store names its artifacts by absolute file URI (experiment artifact location, run
artifact URI, model version source); a restore into another folder points them at the new one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path, PurePosixPath
from typing import Any

from pitstop.backup.create import FORMAT, local_stores_only
from pitstop.backup.files import (
    DATA,
    MANIFEST,
    Progress,
    copy_file,
    embedded_only,
    quiet,
    refuse_non_empty,
    sha256_of,
    staging,
)
from pitstop.backup.lake import check_table
from pitstop.backup.registry_paths import rewrite_artifact_paths
from pitstop.config import Settings
from pitstop.errors import NotFoundError, ValidationError


def read_manifest(src: Path) -> dict[str, Any]:
    """The backup's manifest, its file paths checked to stay inside the backup."""
    path = src / MANIFEST
    if not path.is_file():
        raise NotFoundError(
            f"{src} is not a Pitstop backup (it has no {MANIFEST}): name a folder `pitstop backup` wrote",
            code="backup_not_found",
        )
    try:
        manifest = json.loads(path.read_text())
        if manifest.get("format") != FORMAT:
            raise ValidationError(
                f"{path} has format {manifest.get('format')!r}; this Pitstop reads format {FORMAT}",
                code="backup_unsupported",
            )
        named = [f["path"] for f in manifest["files"]] + [manifest["mlflow_db"], *manifest["lake"]]
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise ValidationError(
            f"{path} is damaged ({exc}); use another backup", code="backup_corrupt"
        ) from exc
    outside = [name for name in named if not _inside(name)]
    if outside:
        raise ValidationError(f"{path} names files outside the backup: {outside[:3]}", code="backup_corrupt")
    return dict(manifest)


def _inside(path: str) -> bool:
    parts = PurePosixPath(path).parts
    return bool(parts) and not PurePosixPath(path).is_absolute() and ".." not in parts


def verify(src: Path, manifest: dict[str, Any], progress: Progress = quiet) -> list[dict[str, str]]:
    """The files of the backup that are missing or differ from the manifest (empty: all intact)."""
    problems = []
    files = manifest["files"]
    for i, entry in enumerate(files, 1):
        path = src / DATA / entry["path"]
        if not path.is_file():
            problems.append({"path": entry["path"], "problem": "missing"})
        elif path.stat().st_size != entry["size"]:
            problems.append({"path": entry["path"], "problem": "size differs"})
        elif sha256_of(path) != entry["sha256"]:
            problems.append({"path": entry["path"], "problem": "sha256 differs"})
        progress("verify", i, len(files))
    return problems


def restore(src: Path, settings: Settings, progress: Progress = quiet) -> dict[str, Any]:
    """Restore the backup in ``src`` into the settings' data dir (new or empty); returns a summary."""
    embedded_only(settings.ops_db_url, "restore it with pg_restore; this command restores")
    started = time.monotonic()
    local_stores_only(settings, "restore")
    src = Path(src).expanduser().resolve()
    target = settings.data_dir.expanduser().resolve()
    manifest = read_manifest(src)
    refuse_non_empty(target, "restore_target_not_empty", "data dir")
    problems = verify(src, manifest, progress)
    if problems:
        listed = ", ".join(f"{p['path']} ({p['problem']})" for p in problems[:3])
        raise ValidationError(
            f"the backup in {src} is damaged: {len(problems)} file(s) differ from {MANIFEST}: {listed}"
            f"{' …' if len(problems) > 3 else ''}; nothing was restored, use another backup",
            code="backup_corrupt",
            details=problems,
        )
    files = manifest["files"]
    with staging(target, "restore_target_not_empty") as stage:
        for i, entry in enumerate(files, 1):
            if copy_file(src / DATA / entry["path"], stage / entry["path"]) != entry["sha256"]:
                raise ValidationError(
                    f"{entry['path']} changed in {src} during the restore; nothing was restored",
                    code="backup_corrupt",
                )
            progress("copy", i, len(files))
        rewritten = rewrite_artifact_paths(
            stage / manifest["mlflow_db"],
            manifest["mlflow_artifacts_uri"],
            settings.mlflow_artifacts_dir.as_uri(),
        )
        for name, table in manifest["lake"].items():
            check_table(
                stage / name, name, table["version"], table["rows"], checkpoint=False, code="restore_failed"
            )
    return {
        "restored": str(target),
        "backup": str(src),
        "created_at": manifest["created_at"],
        "files": len(files),
        "bytes": sum(f["size"] for f in files),
        "lake": {Path(name).name: t["version"] for name, t in manifest["lake"].items()},
        "ops_db_revision": manifest["ops_db_revision"],
        "mlflow_paths_rewritten": rewritten,
        "mlflow_artifacts_outside": manifest.get("mlflow_artifacts_outside", []),
        "seconds": round(time.monotonic() - started, 2),
    }
