"""Scale-out processing: a worker that owns some of the bus's partitions, by lease.

Machines are split across ``bus_partitions`` NATS subjects by a stable hash of their id. A worker
(`pitstop process`, one per process, on any host) holds leases on about its fair share of the
partitions (``ceil(partitions / live workers)``), renews them every third of ``lease_ttl_s``, and
runs one ``Processor`` per partition it owns, one after the other on one thread. A worker that
dies stops renewing; its leases lapse after ``lease_ttl_s`` and the others take its partitions.
The new owner starts from the partition's committed bus position, with its state from a local
snapshot or the lake, and the lake's commits are idempotent per partition (each partition's
consumer is its own Delta app id), so a batch the dead worker had half written is written once.
Partition 0's owner is the leader: lake upkeep, progressive canaries and scheduled retrains run
there only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from functools import partial

from pitstop.bus.leases import Leases
from pitstop.bus.nats import NatsBus, PartitionBus, partition_of
from pitstop.errors import BusError, ConfigError, LeaseLostError
from pitstop.platform import Platform
from pitstop.processor.processor import CONSUMER, Processor, _log_failure

log = logging.getLogger(__name__)


def consumer_of(partition: int, partitions: int, stream: str) -> str:
    """A partition's consumer (and lake app id and ops-DB position key): the single processor's
    name with one partition; else named for the stream too, since a new stream starts its sequence
    numbers again and the lake's commits are keyed by them."""
    return CONSUMER if partitions == 1 else f"{CONSUMER}-{stream.lower()}-p{partition}"


def _in_partition(partition: int, partitions: int, machine_id: str) -> bool:
    return partition_of(machine_id, partitions) == partition


class PartitionWorker:
    def __init__(self, platform: Platform, worker: str | None = None) -> None:
        settings = platform.settings
        if not isinstance(platform.bus, NatsBus):
            raise ConfigError(
                "partitioned processing needs bus_backend = nats (the embedded SQLite bus has one processor)"
            )
        self.p = platform
        self.bus: NatsBus = platform.bus
        self.partitions = settings.bus_partitions
        self.worker = worker or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
        self.leases = Leases(self.bus, self.worker, settings.lease_ttl_s)
        for deployment in platform.deployments.values():
            deployment.load()  # once for every partition's processor (they share the deployments)
        self.owned: dict[int, Processor] = {}
        self.errors = 0
        self._retry_at: dict[int, float] = {}  # a failing partition's next try
        self._backoff: dict[int, float] = {}
        self._stop = threading.Event()
        self._quit = threading.Event()  # the heartbeat's own: it stops after the leases are released
        self._thread: threading.Thread | None = None
        self._watcher: threading.Thread | None = None
        self._beater: threading.Thread | None = None
        self._beat_at = 0.0
        self._retrained_at = time.monotonic()

    # -- ownership -------------------------------------------------------------------------------
    def balance(self) -> None:
        """Renew the leases (every third of their time), drop the partitions lost, give back what is
        over the fair share and take free partitions up to it."""
        self.beat()
        for partition in self.leases.take_lost():
            log.warning(
                "worker %s lost its lease on partition %d: stopped processing it", self.worker, partition
            )
            self._drop(partition)
        share = self.leases.fair_share(self.partitions)
        for partition in sorted(self.owned, reverse=True)[: max(0, len(self.owned) - share)]:
            log.info("worker %s hands partition %d over (its share is %d)", self.worker, partition, share)
            self._drop(partition, snapshot=True)
            self.leases.release(partition)
        if len(self.owned) >= share:
            return
        owners = self.leases.owners()
        for partition in range(self.partitions):
            if len(self.owned) >= share:
                break
            if partition in owners or partition in self.owned or not self.leases.acquire(partition):
                continue
            try:
                self.owned[partition] = self._open(partition)
            except Exception as exc:  # it is released, and tried again on a later round
                _log_failure(exc)
                self.leases.release(partition)
                continue
            log.info("worker %s took partition %d", self.worker, partition)
            self.beat()

    def beat(self) -> None:
        """Say we are alive and renew the leases, when a third of their time has passed."""
        if time.monotonic() - self._beat_at >= self.leases.ttl_s / 3:
            self._beat_at = time.monotonic()
            self.leases.renew()  # first: a failing membership write must not delay the renewals
            self.leases.heartbeat()

    def _heartbeat(self) -> None:
        """Renewals on their own thread: a long batch or a partition's rebuild never lets them lapse
        (a dead process stops renewing; a slow one does not lose its partitions)."""
        while not self._quit.wait(self.leases.ttl_s / 6):
            try:
                self.beat()
            except Exception as exc:  # NATS away: renewed again once it is back
                log.warning("worker %s could not renew its leases: %s", self.worker, exc)

    def _open(self, partition: int) -> Processor:
        consumer = consumer_of(partition, self.partitions, self.bus.stream)
        state_dir = self.p.settings.data_dir / "state"
        view = self.bus.partition(partition, consumer)
        view.forget()  # start at the consumer's ack floor, whoever read it last
        written = self.p.lake.committed_position(consumer, "telemetry")
        if written > self.bus.head():  # the lake has commits from positions the stream never had
            raise BusError(
                f"the lake holds {consumer}'s readings up to bus position {written}, past the NATS stream "
                f"{self.bus.stream}'s last ({self.bus.head()}): the stream was made again under the same "
                "name, and its readings would be skipped; use a new nats_stream name"
            )
        proc = Processor(
            self.p,
            bus=view,
            consumer=consumer,
            machines=partial(_in_partition, partition, self.partitions) if self.partitions > 1 else None,
            leader=partition == 0,
            state_dir=state_dir if self.partitions == 1 else state_dir / f"p{partition}",
            fence=partial(self.leases.check, partition),
        )
        proc._watcher = self._watcher  # the worker polls the registry once for all its partitions
        proc.bootstrap()
        if proc.leader:
            proc.upkeep.start()
        return proc

    def _drop(self, partition: int, snapshot: bool = False) -> None:
        proc = self.owned.pop(partition, None)
        if proc is None:
            return
        if proc.leader:
            proc.upkeep.stop()
        if snapshot:  # fenced: a lease that lapsed meanwhile leaves the snapshot as it was
            with contextlib.suppress(Exception):
                proc.snapshot()
        view = proc.bus
        if isinstance(view, PartitionBus):
            view.forget()

    # -- the loop --------------------------------------------------------------------------------
    def run_once(self) -> int:
        """One round: balance, then a micro-batch of each partition owned. Returns the messages."""
        self.balance()
        done = 0
        for partition, proc in list(self.owned.items()):
            if self._stop.is_set():
                break
            if partition not in self.leases.held or self._retry_at.get(partition, 0.0) > time.monotonic():
                continue
            try:
                done += proc.run_once().messages
            except LeaseLostError as exc:  # stop writing at once; its new owner goes on
                log.warning("worker %s stops partition %d: %s", self.worker, partition, exc.message)
                self._drop(partition)
                self.leases.release(partition)
            except Exception as exc:  # the batch is read again from the bus after a wait
                self.errors += 1
                _log_failure(exc)
                wait = self._backoff.get(partition, 0.5) * 2
                self._backoff[partition] = min(30.0, wait)
                self._retry_at[partition] = time.monotonic() + self._backoff[partition]
            else:
                self._backoff.pop(partition, None)
                self._retry_at.pop(partition, None)
        return done

    def lag(self) -> int:
        return sum(proc.lag() for proc in self.owned.values())

    def start(self) -> None:
        self._stop.clear()
        self._quit.clear()
        self._watcher = threading.Thread(target=self._watch, name="pitstop-follow-aliases", daemon=True)
        self._watcher.start()
        self._beater = threading.Thread(target=self._heartbeat, name="pitstop-leases", daemon=True)
        self._beater.start()
        self._thread = threading.Thread(target=self._run, name="pitstop-partitions", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Finish the batch in hand, snapshot and give every partition back."""
        self._stop.set()
        for thread in (self._thread, self._watcher):  # the leases are renewed until they are given back
            if thread is not None:
                thread.join(timeout)
        for partition in list(self.owned):
            self._drop(partition, snapshot=True)
        with contextlib.suppress(Exception):
            self.leases.leave()
        self._quit.set()
        if self._beater is not None:
            self._beater.join(timeout)

    def _run(self) -> None:
        settings = self.p.settings
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                done = self.run_once()
            except Exception as exc:  # NATS away: the leases are renewed once it is back
                self.errors += 1
                _log_failure(exc)
                self._stop.wait(1.0)
                continue
            if done == 0:
                self._stop.wait(min(settings.processor_poll_s, self.leases.ttl_s / 3))
            elif done < settings.processor_max_messages:
                self._stop.wait(max(0.0, settings.processor_batch_interval_s - (time.monotonic() - started)))

    def _watch(self) -> None:
        """The registry, polled once for the worker's partitions (they share its deployments)."""
        settings = self.p.settings
        while not self._stop.wait(max(0.1, settings.serving_poll_s)):
            for name, deployment in self.p.deployments.items():
                try:
                    deployment.poll()
                except Exception:
                    log.exception("polling the registry for %s failed", name)
            leader = self.owned.get(0)
            every = settings.retrain_every_s
            if leader is not None and every > 0 and time.monotonic() - self._retrained_at >= every:
                self._retrained_at = time.monotonic()
                leader.retrainer.trigger("schedule")
