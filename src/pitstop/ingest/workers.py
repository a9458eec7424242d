"""Decode and validate reading batches in worker processes, beside the server.

JSON parsing and validation are most of the server's CPU per reading, and all of it under the
interpreter lock, so one server process tops out at about one core. A small process pool takes
that work (``intake_workers``); the server keeps what must stay in one place: the per-machine
order and last seq, and the group commit to the bus. A worker gets the raw body and returns the
encoded bus message, so what crosses the process boundary is two byte strings.

Workers are spawned (never forked from a threaded server) and exit when the server dies, even by
SIGKILL: each watches its parent.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pitstop.errors import PitstopError
from pitstop.ingest.validate import decode_body, may_hold_literals, validate_batch
from pitstop.schema import FleetSchema, MachineType, encode_table


class IntakeUnavailableError(PitstopError):
    code = "intake_unavailable"
    status = 503


@dataclass(frozen=True)
class Checked:
    """A validated batch, ready to publish: ``message`` is None when every reading was a re-send."""

    message: bytes | None
    accepted: int
    quarantined: int
    duplicates: int
    last_seq: int


def check_readings(
    payload: list[Any],
    check_values: bool,
    machine_type: MachineType,
    sensors: list[str],
    *,
    machine_id: str,
    last_seq: int,
    max_readings: int,
    horizon: datetime,
) -> Checked:
    """Validate and encode one device's decoded batch (see ``validate_batch`` for ``check_values``)."""
    batch = validate_batch(
        payload,
        machine_type,
        sensors,
        machine_id=machine_id,
        last_seq=last_seq,
        max_readings=max_readings,
        horizon=horizon,
        check_values=check_values,
    )
    message = None if batch.table is None else encode_table(batch.table)
    return Checked(message, batch.accepted, batch.quarantined, batch.duplicates, batch.last_seq)


def check_body(
    body: bytes,
    content_type: str,
    machine_type: MachineType,
    sensors: list[str],
    *,
    machine_id: str,
    last_seq: int,
    max_readings: int,
    horizon: datetime,
) -> Checked:
    """Decode, validate and encode one device's batch (the same code in the server or a worker)."""
    return check_readings(
        decode_body(body, content_type),
        may_hold_literals(body),
        machine_type,
        sensors,
        machine_id=machine_id,
        last_seq=last_seq,
        max_readings=max_readings,
        horizon=horizon,
    )


_fleet: FleetSchema | None = None
_sensors: list[str] = []


def _start_worker(fleet: FleetSchema, sensors: list[str], parent: int) -> None:
    global _fleet, _sensors
    _fleet, _sensors = fleet, sensors
    # Ctrl-C in a terminal reaches the whole process group: the server handles it and stops the
    # pool, so a worker would only print a traceback and break the pool under in-flight batches.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="watch-parent").start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)  # the server is gone: nobody will ask for this worker's results


def _check_in_worker(
    body: bytes,
    content_type: str,
    type_name: str,
    machine_id: str,
    last_seq: int,
    max_readings: int,
    horizon: datetime,
) -> Checked:
    assert _fleet is not None, "worker not initialised"
    return check_body(
        body,
        content_type,
        _fleet.type_of(type_name),
        _sensors,
        machine_id=machine_id,
        last_seq=last_seq,
        max_readings=max_readings,
        horizon=horizon,
    )


class ValidatorPool:
    """``processes`` spawned workers running ``check_body``; started on first use."""

    def __init__(self, processes: int, fleet: FleetSchema, sensors: list[str]) -> None:
        self.processes = processes
        self.fleet = fleet
        self.sensors = list(sensors)
        self._pool: ProcessPoolExecutor | None = None
        self._guard = threading.Lock()

    def start(self) -> ProcessPoolExecutor:
        """The running pool; a new one has every worker spawned and ready before it is returned."""
        with self._guard:
            if self._pool is None:
                pool = ProcessPoolExecutor(
                    self.processes,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_worker,
                    initargs=(self.fleet, self.sensors, os.getpid()),
                )
                # Workers spawn on demand, one per submit that finds none idle: ask them all.
                for future in [pool.submit(os.getpid) for _ in range(self.processes)]:
                    future.result()
                self._pool = pool
            return self._pool

    def check(
        self,
        body: bytes,
        content_type: str,
        type_name: str,
        *,
        machine_id: str,
        last_seq: int,
        max_readings: int,
        horizon: datetime,
    ) -> Checked:
        pool = self.start()
        try:
            future = pool.submit(
                _check_in_worker, body, content_type, type_name, machine_id, last_seq, max_readings, horizon
            )
            return future.result()
        except BrokenProcessPool:
            with self._guard:
                if self._pool is pool:
                    self._pool = None  # the next batch starts a fresh pool
            pool.shutdown(wait=False, cancel_futures=True)
            raise IntakeUnavailableError(
                "a validation worker died; nothing in this batch was stored, retry it",
                headers={"Retry-After": "1"},
            ) from None

    def close(self) -> None:
        with self._guard:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
