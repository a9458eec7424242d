"""Online backup of a data dir, and restore into a new one (``pitstop backup`` / ``restore``)."""

from pitstop.backup.create import backup
from pitstop.backup.restore import read_manifest, restore, verify

__all__ = ["backup", "read_manifest", "restore", "verify"]
