"""Scale-out bus: NATS JetStream (file storage; run the server with ``sync_interval: always``).

One stream holds the reading batches. With ``partitions`` > 1 each batch goes to the subject of its
machine's partition (a stable hash of the machine id), so one machine's batches stay in order on
one subject and a partition is processed by one worker at a time (``processor.partitions``).

Each named consumer is a durable pull consumer with AckPolicy.ALL whose ack floor is the committed
position. JetStream would move past a batch that was read but not committed (it waits for the ack
timeout, then redelivers out of order), so a re-read of uncommitted messages recreates the consumer
at ack floor + 1: every read starts right after the last commit, as the bus contract says.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import zlib
from collections.abc import Coroutine
from typing import Any, TypeVar

from pitstop.bus.base import Message
from pitstop.errors import BusError

T = TypeVar("T")

SUBJECT = "pitstop.readings"


def partition_of(machine_id: str, partitions: int) -> int:
    """The partition of a machine: a stable hash of its id (the same in every process and release)."""
    return zlib.crc32(machine_id.encode()) % partitions if partitions > 1 else 0


class NatsBus:
    def __init__(
        self,
        url: str,
        stream: str = "PITSTOP",
        timeout: float = 10.0,
        max_bytes: int = 8 * 1024 * 1024,
        partitions: int = 1,
    ) -> None:
        try:
            import nats  # noqa: F401  (optional dependency, imported here to fail early)
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise BusError("the NATS bus needs `pip install 'pitstop[nats]'`") from exc
        self.url = url
        self.stream = stream
        self.subject = f"{SUBJECT}.{stream.lower()}"
        self.partitions = partitions
        self.timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pitstop-nats", daemon=True)
        self._thread.start()
        self._subs: dict[str, Any] = {}
        self._pending: dict[str, dict[int, Any]] = {}  # consumer -> stream seq -> message, read not committed
        self._filters: dict[str, str] = {}  # consumer -> the subject it reads
        self._lock = threading.Lock()
        self._run(self._connect(max_bytes))

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(self.timeout + 5)
        except BusError:
            raise
        except Exception as exc:
            raise BusError(f"NATS bus at {self.url}: {type(exc).__name__}: {exc}") from exc

    async def _connect(self, max_bytes: int) -> None:
        import nats
        from nats.js.api import StorageType, StreamConfig

        self._nc = await nats.connect(self.url, connect_timeout=self.timeout, max_reconnect_attempts=-1)
        self._js = self._nc.jetstream(timeout=self.timeout)
        subjects = [self.subject] if self.partitions == 1 else [f"{self.subject}.*"]
        described = f"Pitstop reading batches in {self.partitions} partition(s)"
        config = StreamConfig(
            name=self.stream,
            subjects=subjects,
            storage=StorageType.FILE,
            max_msg_size=max_bytes,
            description=described,
        )
        try:
            info = await self._js.stream_info(self.stream)
        except Exception:
            await self._js.add_stream(config)
            return
        made = info.config.description or "Pitstop reading batches in 1 partition(s)"  # before partitions
        if list(info.config.subjects or []) != subjects or made != described:
            raise BusError(
                f"the NATS stream {self.stream} was made for other bus_partitions than {self.partitions} "
                f"({made}). A machine's partition must not change under it: set bus_partitions back, or "
                "drain the processors and start a new stream under another nats_stream name (consumers "
                "and the lake's commit keys are named for the stream; a stream deleted and made again "
                "under the same name starts its sequence numbers over, and the lake would skip them)"
            )

    async def _shutdown(self) -> None:
        """Close the connection, then cancel what the client left running on this loop."""
        with contextlib.suppress(Exception):
            await self._nc.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def subject_of(self, partition: int) -> str:
        """The subject of a partition (one partition: the stream's single subject)."""
        return self.subject if self.partitions == 1 else f"{self.subject}.{partition}"

    def partition(self, partition: int, consumer: str) -> PartitionBus:
        """The view one partition's processor reads through (its own durable consumer)."""
        if not 0 <= partition < self.partitions:
            raise BusError(f"partition {partition} is not one of the bus's 0..{self.partitions - 1}")
        return PartitionBus(self, partition, consumer)

    # -- contract ------------------------------------------------------------------------------
    def publish(self, payload: bytes, key: str | None = None) -> int:
        """Publish a batch; ``key`` (its machine id) picks the partition when there are several."""
        if self.partitions > 1 and key is None:
            raise BusError("a partitioned bus needs the batch's machine id to publish it")
        subject = self.subject_of(partition_of(key or "", self.partitions))
        if not self._nc.is_connected:  # a restart or a cut: say so now, not after the ack timeout
            raise BusError(f"NATS at {self.url} is not connected (reconnecting); nothing was published")
        ack = self._run(self._js.publish(subject, payload, timeout=self.timeout))
        return int(ack.seq)

    def read(self, consumer: str, max_messages: int, subject: str | None = None) -> list[Message]:
        """The next messages after ``consumer``'s committed position, of ``subject`` (a partition's;
        default: the whole stream)."""
        with self._lock:
            self._filters[consumer] = subject or (
                self.subject if self.partitions == 1 else f"{self.subject}.*"
            )
            return self._run(self._read(consumer, max_messages))

    async def _read(self, consumer: str, max_messages: int) -> list[Message]:
        import nats.errors

        sub = self._subs.get(consumer)
        if sub is None or self._pending.get(consumer):
            sub = await self._reset(consumer)
        try:
            msgs = await sub.fetch(batch=max_messages, timeout=0.05)
        except (TimeoutError, nats.errors.TimeoutError):  # nats-py raises either when nothing is new
            return []
        pending = self._pending.setdefault(consumer, {})
        out = []
        for msg in msgs:
            seq = int(msg.metadata.sequence.stream)
            pending[seq] = msg
            out.append(Message(seq, bytes(msg.data)))
        return out

    async def _reset(self, consumer: str) -> Any:
        """(Re)create the durable consumer so delivery starts right after its ack floor."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        floor = await self._floor(consumer)
        old = self._subs.pop(consumer, None)
        if old is not None:
            await old.unsubscribe()
        with contextlib.suppress(Exception):  # it may not exist yet
            await self._js.delete_consumer(self.stream, consumer)
        head = (await self._js.stream_info(self.stream)).state.last_seq
        start = floor + 1
        config = ConsumerConfig(
            durable_name=consumer,
            ack_policy=AckPolicy.ALL,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start <= head else DeliverPolicy.NEW,
            opt_start_seq=start if start <= head else None,
            filter_subject=self._filters.get(consumer, self.subject),
            max_ack_pending=-1,
            ack_wait=3600,
        )
        await self._js.add_consumer(self.stream, config)
        sub = await self._js.pull_subscribe_bind(durable=consumer, stream=self.stream)
        self._subs[consumer] = sub
        self._pending[consumer] = {}
        return sub

    async def _floor(self, consumer: str) -> int:
        import nats.js.errors

        try:
            info = await self._js.consumer_info(self.stream, consumer)
        except nats.js.errors.NotFoundError:  # a consumer not made yet; any other error is raised
            return 0
        return int(info.ack_floor.stream_seq or 0)

    def forget(self, consumer: str) -> None:
        """Drop this client's subscription and unacknowledged messages of ``consumer``: the next
        read starts again at its ack floor + 1 (a partition taken over, or taken back, must never
        go on from where an earlier owner's pull left the consumer)."""
        with self._lock:
            self._pending.pop(consumer, None)
            self._filters.pop(consumer, None)
            sub = self._subs.pop(consumer, None)
            if sub is not None:
                with contextlib.suppress(BusError):
                    self._run(sub.unsubscribe())

    def last_position(self, subject: str) -> int:
        """The stream sequence of the newest message on ``subject`` (0: none)."""
        return self._run(self._last_on(subject))

    async def _last_on(self, subject: str) -> int:
        import nats.js.errors

        try:
            msg = await self._js.get_last_msg(self.stream, subject)
        except nats.js.errors.NotFoundError:
            return 0
        return int(msg.seq or 0)

    def commit(self, consumer: str, position: int) -> None:
        with self._lock:
            self._run(self._commit(consumer, position))

    async def _commit(self, consumer: str, position: int) -> None:
        pending = self._pending.get(consumer, {})
        msg = pending.get(position)
        if msg is None:
            raise BusError(
                f"position {position} was not read by consumer {consumer!r} and cannot be committed"
            )
        await msg.ack_sync(timeout=self.timeout)  # AckAll: everything up to it
        for seq in [s for s in pending if s <= position]:
            del pending[seq]

    def position(self, consumer: str) -> int:
        with self._lock:
            return self._run(self._floor(consumer))

    def head(self) -> int:
        info = self._run(self._js.stream_info(self.stream))
        return int(info.state.last_seq or 0)

    def pending(self, consumer: str, subject: str) -> int:
        """Messages of ``subject`` past ``consumer``'s committed position."""
        with self._lock:
            return self._run(self._pending_count(consumer, subject))

    async def _pending_count(self, consumer: str, subject: str) -> int:
        try:
            info = await self._js.consumer_info(self.stream, consumer)
        except Exception:  # no consumer yet: everything on the subject is pending
            state = await self._js.stream_info(self.stream, subjects_filter=subject)
            return int((state.state.subjects or {}).get(subject, 0))
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    def close(self) -> None:
        with contextlib.suppress(BusError):
            self._run(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


class PartitionBus:
    """One partition of a ``NatsBus`` as a bus of its own: reads, commits and positions of its
    consumer on the partition's subject. Positions are the stream's sequence numbers, so they rise
    strictly per partition (with gaps where other partitions' batches are)."""

    def __init__(self, bus: NatsBus, partition: int, consumer: str) -> None:
        self.bus, self.number, self.consumer = bus, partition, consumer
        self.subject = bus.subject_of(partition)

    def publish(self, payload: bytes, key: str | None = None) -> int:
        return self.bus.publish(payload, key)

    def read(self, consumer: str, max_messages: int) -> list[Message]:
        return self.bus.read(consumer, max_messages, subject=self.subject)

    def commit(self, consumer: str, position: int) -> None:
        self.bus.commit(consumer, position)

    def position(self, consumer: str) -> int:
        return self.bus.position(consumer)

    def head(self) -> int:
        """The newest message's position on the partition (a stream sequence number)."""
        return self.bus.last_position(self.subject)

    def backlog(self) -> int:
        """Messages of the partition not committed yet (its lag, counted in messages)."""
        return self.bus.pending(self.consumer, self.subject)

    def forget(self) -> None:
        self.bus.forget(self.consumer)

    def close(self) -> None:
        """Nothing: the shared bus is closed by its owner."""
