"""Leases over NATS (a JetStream key-value bucket): which worker owns which bus partition.

A lease is a key (``p<partition>``) holding its owner's id. Its bucket's TTL is the lease time: a
key not renewed within it expires, and any worker may then create it. Creating is a compare-and-set
on "no such key", renewing is one on the revision the owner last wrote, so two workers never both
hold a partition, and one that misses a renewal (a pause, a lost link) learns it lost the lease.
Live workers keep a key of their own (``w.<id>``) too: each takes about its fair share.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from typing import TYPE_CHECKING, Any

from pitstop.errors import BusError, LeaseLostError

MARGIN = 0.25  # a lease counts as ours until this share of its time before it could lapse

if TYPE_CHECKING:
    from pitstop.bus.nats import NatsBus


class Leases:
    def __init__(self, bus: NatsBus, worker: str, ttl_s: float) -> None:
        self.bus, self.worker, self.ttl_s = bus, worker, ttl_s
        self.bucket = f"{bus.stream}-leases"
        self.held: dict[int, int] = {}  # partition -> the revision we wrote last
        self.lost: set[int] = set()  # partitions whose renewal failed, not yet seen by the worker
        # partition -> when (monotonic) our lease may lapse, less a margin: counted from before the
        # write that made or renewed it, so a clock on our side never believes it longer than NATS
        self.valid_until: dict[int, float] = {}
        self._lock = threading.Lock()  # the worker's thread and its heartbeat thread both renew
        self._me: int | None = None  # our membership key's revision
        self._kv: Any = None
        bus._run(self._open())

    async def _open(self) -> None:
        from nats.js.api import KeyValueConfig, StorageType

        try:
            self._kv = await self.bus._js.key_value(self.bucket)
        except Exception:
            self._kv = await self.bus._js.create_key_value(
                KeyValueConfig(bucket=self.bucket, ttl=self.ttl_s, storage=StorageType.FILE, history=1)
            )
        ttl = getattr(await self._kv.status(), "ttl", None)
        if ttl is not None and abs(float(ttl) - self.ttl_s) > 0.01:
            raise BusError(
                f"the lease bucket {self.bucket} expires leases after {ttl} s, "
                f"not lease_ttl_s = {self.ttl_s}: "
                "every worker must use the same lease_ttl_s (delete the bucket to change it)"
            )

    # -- membership ------------------------------------------------------------------------------
    def heartbeat(self) -> None:
        """Say this worker is alive (its ``w.<id>`` key, written again each beat)."""
        self._me = self.bus._run(self._kv.put(f"w.{self.worker}", b"alive"))

    def workers(self) -> list[str]:
        """Live workers: those whose key has not expired."""
        return sorted(k[2:] for k in self._keys() if k.startswith("w."))

    def owners(self) -> dict[int, str]:
        """Each leased partition's owner."""
        return self.bus._run(self._owners())

    async def _owners(self) -> dict[int, str]:
        out = {}
        for key in await self._list():
            if key.startswith("p"):
                with contextlib.suppress(Exception):  # expired between the listing and the read
                    entry = await self._kv.get(key)
                    if entry.value:
                        out[int(key[1:])] = entry.value.decode()
        return out

    def _keys(self) -> list[str]:
        return self.bus._run(self._list())

    async def _list(self) -> list[str]:
        import nats.js.errors

        try:
            return list(await self._kv.keys())
        except nats.js.errors.NoKeysError:
            return []

    def fair_share(self, partitions: int) -> int:
        return math.ceil(partitions / max(1, len(self.workers())))

    # -- partitions ------------------------------------------------------------------------------
    def acquire(self, partition: int) -> bool:
        """Take a free partition; False when another worker holds it."""
        with self._lock:
            sent = time.monotonic()
            try:
                revision = self.bus._run(self._kv.create(f"p{partition}", self.worker.encode()))
            except BusError:
                return False
            self.held[partition] = revision
            self.valid_until[partition] = sent + self.ttl_s * (1 - MARGIN)
            self.lost.discard(partition)
            return True

    def renew(self) -> None:
        """Renew every lease held; one that fails (expired and taken, or deleted) moves to ``lost``."""
        with self._lock:
            for partition, revision in list(self.held.items()):
                sent = time.monotonic()
                try:
                    self.held[partition] = self.bus._run(
                        self._kv.update(f"p{partition}", self.worker.encode(), last=revision)
                    )
                except BusError:
                    del self.held[partition]
                    self.valid_until.pop(partition, None)
                    self.lost.add(partition)
                else:
                    self.valid_until[partition] = sent + self.ttl_s * (1 - MARGIN)

    def check(self, partition: int) -> None:
        """Raise ``LeaseLostError`` unless our lease on ``partition`` is surely still ours: held, and
        renewed recently enough that it cannot have lapsed on the server."""
        if partition not in self.held or time.monotonic() >= self.valid_until.get(partition, 0.0):
            raise LeaseLostError(f"worker {self.worker} no longer holds partition {partition}")

    def take_lost(self) -> list[int]:
        """The partitions lost since the last call."""
        with self._lock:
            lost, self.lost = sorted(self.lost), set()
            return lost

    def release(self, partition: int) -> None:
        """Give a partition back (after its last batch): another worker may take it at once."""
        with self._lock:
            revision = self.held.pop(partition, None)
            self.valid_until.pop(partition, None)
        if revision is not None:
            with contextlib.suppress(BusError):
                self.bus._run(self._kv.delete(f"p{partition}", last=revision))

    def leave(self) -> None:
        """Release everything and drop out of the membership."""
        for partition in list(self.held):
            self.release(partition)
        with contextlib.suppress(BusError):
            self.bus._run(self._kv.delete(f"w.{self.worker}"))
