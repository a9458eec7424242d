"""Scale-out bus: NATS JetStream (file storage; run the server with ``sync_interval: always``).

One stream holds the reading batches. Each named consumer is a durable pull consumer with
AckPolicy.ALL whose ack floor is the committed position. JetStream would move past a batch that
was read but not committed (it waits for the ack timeout, then redelivers out of order), so a
re-read of uncommitted messages recreates the consumer at ack floor + 1: every read starts right
after the last commit, as the bus contract says.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from pitstop.bus.base import Message
from pitstop.errors import BusError

T = TypeVar("T")

SUBJECT = "pitstop.readings"


class NatsBus:
    def __init__(
        self, url: str, stream: str = "PITSTOP", timeout: float = 10.0, max_bytes: int = 8 * 1024 * 1024
    ) -> None:
        try:
            import nats  # noqa: F401  (optional dependency, imported here to fail early)
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise BusError("the NATS bus needs `pip install 'pitstop[nats]'`") from exc
        self.url = url
        self.stream = stream
        self.subject = f"{SUBJECT}.{stream.lower()}"
        self.timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pitstop-nats", daemon=True)
        self._thread.start()
        self._subs: dict[str, Any] = {}
        self._pending: dict[str, dict[int, Any]] = {}  # consumer -> stream seq -> message, read not committed
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
        config = StreamConfig(
            name=self.stream, subjects=[self.subject], storage=StorageType.FILE, max_msg_size=max_bytes
        )
        try:
            await self._js.stream_info(self.stream)
        except Exception:
            await self._js.add_stream(config)

    async def _shutdown(self) -> None:
        """Close the connection, then cancel what the client left running on this loop."""
        with contextlib.suppress(Exception):
            await self._nc.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- contract ------------------------------------------------------------------------------
    def publish(self, payload: bytes) -> int:
        ack = self._run(self._js.publish(self.subject, payload, timeout=self.timeout))
        return int(ack.seq)

    def read(self, consumer: str, max_messages: int) -> list[Message]:
        with self._lock:
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
            filter_subject=self.subject,
            max_ack_pending=-1,
            ack_wait=3600,
        )
        await self._js.add_consumer(self.stream, config)
        sub = await self._js.pull_subscribe_bind(durable=consumer, stream=self.stream)
        self._subs[consumer] = sub
        self._pending[consumer] = {}
        return sub

    async def _floor(self, consumer: str) -> int:
        try:
            info = await self._js.consumer_info(self.stream, consumer)
        except Exception:
            return 0
        return int(info.ack_floor.stream_seq or 0)

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

    def close(self) -> None:
        with contextlib.suppress(BusError):
            self._run(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
