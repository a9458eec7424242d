from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Message:
    """One bus message: a batch of readings (serialised), at a position in the log."""

    position: int
    payload: bytes


class Bus(Protocol):
    """The contract every bus backend keeps.

    ``publish`` returns only once the message is durable; ``key`` is the batch's machine id (a
    partitioned backend routes by it). Positions increase strictly.
    A consumer reads after its committed position and commits the last position it finished.
    """

    def publish(self, payload: bytes, key: str | None = None) -> int: ...

    def read(self, consumer: str, max_messages: int) -> list[Message]: ...

    def commit(self, consumer: str, position: int) -> None: ...

    def position(self, consumer: str) -> int: ...

    def head(self) -> int: ...

    def close(self) -> None: ...
