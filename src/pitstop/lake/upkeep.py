"""Lake upkeep: compaction, checkpoints, vacuum and log cleanup that never lose a pinned version.

The processor commits about twice a second: a day at full rate is ~170k Delta versions and as many
one-batch files, and every append, read and checkpoint pays for each file the table references.
One run of upkeep, per table:

1. **compacts** small files into large ones, partition by partition (``optimize.compact``: a new
   version with the same rows; older versions still reference the small files);
2. **checkpoints** the newest version when it is past the last checkpoint, so opening the table
   reads one Parquet file and the few commits after it;
3. **vacuums** files that no version worth keeping references, and
4. **cleans the log** (``_delta_log`` commits) below the versions worth keeping.

The retention rule. A version is worth keeping when it is *pinned* (a registered model version's
lineage names it: ``pitstop.lake_version`` for ``telemetry``, ``pitstop.events_version`` for
``events``; the caller passes them) or *recent* (committed within ``retention_hours``, or the
version current at that time). Vacuum deletes a replaced file only when it was replaced more than
``retention_hours`` ago and no pinned version references it (``keep_versions``). The log is cleaned
only below the newest checkpoint at or before the oldest pinned version, and only of commits older
than ``retention_hours``: so every pinned version and every recent one stays loadable, with its
exact rows. When the pins cannot be read (the registry is down) nothing is deleted that run.

Delta writers clean expired logs on their own by default (``delta.enableExpiredLogCleanup``, 30
days), which would make a model's lake version unloadable a month after training; ``protect``
turns that off and records the retention as table properties, once, before anything appends.

Upkeep uses its own table handles, not the lake's writer lock: appends go on while a compaction
runs (Delta's optimistic concurrency lets a blind append and a compaction both commit). A commit
that does conflict (a concurrent delete) is left to the next run.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from pitstop.errors import LakeError, PitstopError
from pitstop.lake.location import LakeLocation
from pitstop.lake.names import TABLES
from pitstop.lake.tables import Lake

log = logging.getLogger(__name__)

Pins = Callable[[], Mapping[str, Iterable[int]]]
"""Returns the pinned versions per table; raises a ``PitstopError`` when they cannot be known."""

TOMBSTONE_MARGIN_HOURS = 6  # replaced files stay listed in checkpoints this long past the retention


@dataclass(frozen=True)
class UpkeepPolicy:
    """How much unpinned history to keep and how often writers checkpoint."""

    retention_hours: int = 24
    checkpoint_every: int = 100

    @classmethod
    def from_settings(cls, settings: Any) -> UpkeepPolicy:
        return cls(settings.lake_retention_hours, settings.lake_checkpoint_every)

    def properties(self) -> dict[str, str]:
        """The table properties this policy needs on every table."""
        return {
            # writers must not delete log entries on their own: only upkeep knows the pins
            "delta.enableExpiredLogCleanup": "false",
            "delta.logRetentionDuration": f"interval {self.retention_hours} hours",
            # replaced files stay listed (as tombstones) in checkpoints past the retention, so
            # vacuum still sees them when their time comes
            "delta.deletedFileRetentionDuration": (
                f"interval {self.retention_hours + TOMBSTONE_MARGIN_HOURS} hours"
            ),
            "delta.checkpointInterval": str(self.checkpoint_every),
        }


@dataclass(frozen=True)
class TableUpkeep:
    """What one run did to one table."""

    table: str
    version: int  # the newest version after upkeep
    files_before: int  # data files the newest version referenced before compaction
    files_after: int  # ... and after
    files_on_disk: int  # data files under the table's folder after vacuum
    log_files: int  # entries in _delta_log after log cleanup
    compacted: int  # small files rewritten
    checkpoint: int | None  # the version checkpointed by this run
    vacuumed: int  # files deleted
    pinned: list[int]  # pinned versions of this table (kept readable)
    log_kept_from: int | None  # log cleanup kept everything from this version's checkpoint on
    notes: list[str] = field(default_factory=list)  # what was skipped, and why


@dataclass(frozen=True)
class UpkeepReport:
    tables: list[TableUpkeep]
    seconds: float
    pins_error: str | None  # why vacuum and log cleanup were skipped this run

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One log line."""
        parts = [
            f"{t.table} v{t.version} files {t.files_before}->{t.files_after} "
            f"(disk {t.files_on_disk}, log {t.log_files}, vacuumed {t.vacuumed})"
            for t in self.tables
        ]
        tail = f"; pins unknown, nothing deleted: {self.pins_error}" if self.pins_error else ""
        return f"lake upkeep in {self.seconds:.1f}s: " + ", ".join(parts) + tail


class LakeUpkeep:
    """Keeps the lake's file count and read time flat; see the module for the retention rule."""

    def __init__(
        self,
        lake: Lake,
        pins: Pins,
        policy: UpkeepPolicy | None = None,
        tables: Iterable[str] = TABLES,
    ) -> None:
        self.lake = lake
        self.pins = pins
        self.policy = policy or UpkeepPolicy()
        self.tables = list(tables)

    def protect(self) -> list[str]:
        """Set the policy's table properties where they differ; returns the tables changed. A
        metadata commit fails a concurrent append, so call this before writers start."""
        wanted = self.policy.properties()
        changed = []
        for name in self.tables:
            dt = self.lake.table(name)
            have = dt.metadata().configuration
            if all(have.get(k) == v for k, v in wanted.items()):
                continue
            try:
                dt.alter.set_table_properties(wanted)
            except DeltaError as exc:
                raise LakeError(f"cannot set the upkeep properties of lake table {name}: {exc}") from exc
            changed.append(name)
        return changed

    def run_once(self, *, full: bool = False) -> UpkeepReport:
        """One upkeep pass over every table. ``full`` also deletes files no version knows of
        (left by a crashed write, or replaced before a long pin was released) when they are older
        than the retention."""
        started = time.perf_counter()
        self.protect()
        try:
            pins: dict[str, list[int]] | None = {
                name: sorted({int(v) for v in versions}) for name, versions in self.pins().items()
            }
            pins_error = None
        except PitstopError as exc:
            pins, pins_error = None, exc.message
            log.warning("lake upkeep: pinned versions unknown (%s); nothing is deleted this run", exc.message)
        reports = [self._table(name, pins, full) for name in self.tables]
        return UpkeepReport(reports, time.perf_counter() - started, pins_error)

    # -- one table -------------------------------------------------------------------------------
    def _table(self, name: str, pins: dict[str, list[int]] | None, full: bool) -> TableUpkeep:
        notes: list[str] = []
        dt = self.lake.table(name)
        files_before = len(dt.file_uris())
        compacted = self._compact(dt, name, notes)
        checkpoint = self._checkpoint(dt, name, notes)
        pinned = [] if pins is None else [v for v in pins.get(name, []) if v <= dt.version()]
        vacuumed, kept_from = 0, None
        if pins is None:
            notes.append("pinned versions unknown: no vacuum, no log cleanup")
        else:
            keep = self._loadable(name, pinned, notes)
            vacuumed = self._vacuum(dt, name, keep, full, notes)
            kept_from = self._clean_log(name, keep[0] if keep else dt.version(), notes)
        dt = self.lake.table(name)
        return TableUpkeep(
            table=name,
            version=dt.version(),
            files_before=files_before,
            files_after=len(dt.file_uris()),
            files_on_disk=len(_data_paths(self.lake.location, name)),
            log_files=len(self.lake.location.files(name, "_delta_log")),
            compacted=compacted,
            checkpoint=checkpoint,
            vacuumed=vacuumed,
            pinned=pinned,
            log_kept_from=kept_from,
            notes=notes,
        )

    def _compact(self, dt: DeltaTable, name: str, notes: list[str]) -> int:
        """Bin-pack each partition's small files; one core, so it never crowds out the processor.
        A long first compaction commits its progress every minute."""
        try:
            result = dt.optimize.compact(max_concurrent_tasks=1, min_commit_interval=timedelta(minutes=1))
        except DeltaError as exc:  # e.g. a concurrent delete: the next run tries again
            notes.append(f"compaction not committed, retried next run: {exc}")
            log.warning("lake upkeep: compaction of %s not committed (%s); retried next run", name, exc)
            return 0
        return int(result.get("numFilesRemoved", 0) or 0)

    def _checkpoint(self, dt: DeltaTable, name: str, notes: list[str]) -> int | None:
        try:
            dt.update_incremental()
            version = dt.version()
            if _last_checkpoint(self.lake.location, name) == version:
                return None
            dt.create_checkpoint()
        except DeltaError as exc:
            notes.append(f"no checkpoint: {exc}")
            return None
        return version

    def _loadable(self, name: str, pinned: list[int], notes: list[str]) -> list[int]:
        """The pins that can still be loaded (a pin lost before upkeep existed cannot be kept)."""
        keep = []
        for version in pinned:
            try:
                self.lake.table(name, version)
            except LakeError:
                notes.append(f"pinned version {version} was already unreadable")
                log.warning("lake upkeep: pinned version %d of %s was already unreadable", version, name)
                continue
            keep.append(version)
        return keep

    def _vacuum(self, dt: DeltaTable, name: str, keep: list[int], full: bool, notes: list[str]) -> int:
        """Returns the files deleted (vacuum also names replaced files an earlier run deleted)."""
        before = _data_paths(self.lake.location, name)
        try:
            dt.update_incremental()
            deleted = dt.vacuum(
                retention_hours=self.policy.retention_hours,
                dry_run=False,
                enforce_retention_duration=False,
                full=full,
                keep_versions=keep or None,
            )
        except DeltaError as exc:
            notes.append(f"vacuum skipped: {exc}")
            log.warning("lake upkeep: vacuum of %s skipped (%s)", name, exc)
            return 0
        return len(before & set(deleted))

    def _clean_log(self, name: str, floor: int, notes: list[str]) -> int | None:
        """Delete commits below the newest checkpoint at or before ``floor`` (and older than the
        retention): every version from ``floor`` on stays loadable."""
        try:
            self.lake.table(name, floor).cleanup_metadata()
        except (DeltaError, LakeError) as exc:
            notes.append(f"log cleanup skipped: {exc}")
            return None
        return floor


def _last_checkpoint(location: LakeLocation, name: str) -> int | None:
    try:
        return int(json.loads(location.read_text(name, "_delta_log", "_last_checkpoint") or "")["version"])
    except (ValueError, KeyError, TypeError):
        return None


def _data_paths(location: LakeLocation, name: str) -> set[str]:
    """The table's data files, relative to its folder (as vacuum names them)."""
    return {
        path
        for path in location.files(name)
        if path.endswith(".parquet") and not path.startswith("_delta_log/")
    }
