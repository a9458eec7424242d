from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from pitstop.errors import BusError, RateLimitedError, StorageError, first_line
from pitstop.ingest.devices import DeviceIdentity, DeviceRegistry, hash_token
from pitstop.ingest.limits import RateLimiter, retry_after
from pitstop.ingest.shared import SharedIntakeState
from pitstop.ingest.workers import Checked, ValidatorPool, check_body, check_readings
from pitstop.platform import Platform
from pitstop.store import MachineState

AUTH_CACHE_S = 5.0
RETRY_AFTER_S = "2"  # what a device is told to wait while the bus or the ops DB is away


@contextlib.contextmanager
def _stores_reachable() -> Iterator[None]:
    """The bus or the ops DB away (a restart, a network cut): a 503 with Retry-After, so the
    device keeps the batch and sends it again; nothing of it was acknowledged."""
    try:
        yield
    except BusError as exc:
        raise BusError(
            f"the bus is unavailable, retry in {RETRY_AFTER_S} s: {exc.message}",
            headers={"Retry-After": RETRY_AFTER_S},
        ) from exc
    except (OperationalError, InterfaceError, PoolTimeout, DBAPIError) as exc:
        ours = isinstance(exc, DBAPIError) and not isinstance(exc, OperationalError | InterfaceError)
        if ours and not exc.connection_invalidated:  # type: ignore[union-attr]
            raise  # a mistake of ours, not an outage: a 500 with its traceback in the log
        raise StorageError(
            f"the ops DB is unavailable, retry in {RETRY_AFTER_S} s: {first_line(exc)}",
            headers={"Retry-After": RETRY_AFTER_S},
        ) from exc


@dataclass(frozen=True)
class IntakeResult:
    accepted: int
    quarantined: int
    duplicates: int
    position: int | None  # bus position of the batch; None when nothing new was stored

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "quarantined": self.quarantined,
            "duplicates": self.duplicates,
            "position": self.position,
        }


class Intake:
    """Authenticate, rate-limit, validate and durably publish reading batches (any transport).

    Tracks the highest seq accepted per machine so that a re-sent batch is acknowledged without
    being stored again; one lock per machine keeps validation and publishing in order.
    """

    def __init__(self, platform: Platform) -> None:
        self.p = platform
        self.devices = DeviceRegistry(platform.db)
        s = platform.settings
        self.limiter = RateLimiter(s.device_rate_limit, s.device_rate_burst)
        # several API servers share one PostgreSQL ops DB: their seq and rate state is kept there
        self.shared = (
            SharedIntakeState(platform.db.engine) if platform.db.url.startswith("postgresql") else None
        )
        self._auth: dict[str, tuple[DeviceIdentity, float]] = {}
        self._last_seq: dict[str, int] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        # Validation is pure CPU under the GIL: running it in one thread at a time instead of in
        # every request's thread at once saves the interpreter's thread switching (measured: 8
        # threads validating at once cost about 30% more CPU per reading than 2).
        self._cpu = threading.Lock()
        self.workers = (
            ValidatorPool(s.intake_workers, platform.fleet, platform.lake.sensors)
            if s.intake_workers
            else None
        )

    def authenticate(self, token: str) -> DeviceIdentity:
        """A device by its token; cached for a few seconds (a disable takes effect within them)."""
        key = hash_token(token)
        hit = self._auth.get(key)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        with _stores_reachable():
            identity = self.devices.authenticate(token)
        self._auth[key] = (identity, time.monotonic() + AUTH_CACHE_S)
        return identity

    def forget_devices(self) -> None:
        """Drop cached identities (after a device is disabled or rotated in this process)."""
        self._auth.clear()

    def admit(self, identity: DeviceIdentity) -> None:
        s = self.p.settings
        if self.shared is not None:
            with _stores_reachable():
                wait = self.shared.take(str(identity.device_id), s.device_rate_limit, s.device_rate_burst)
        else:
            wait = self.limiter.acquire(identity.device_id)
        if wait:
            raise RateLimitedError(
                f"device {identity.device_id} is over its rate limit; retry after {retry_after(wait)} s",
                headers={"Retry-After": retry_after(wait)},
            )

    def submit(self, identity: DeviceIdentity, payload: list[Any], check_values: bool = True) -> IntakeResult:
        """Validate and durably publish a decoded batch (see ``submit_body`` for raw bodies)."""

        def check(last_seq: int, horizon: datetime) -> Checked:
            return check_readings(
                payload,
                check_values,
                self.p.fleet.type_of(identity.machine_type),
                self.p.lake.sensors,
                machine_id=identity.machine_id,
                last_seq=last_seq,
                max_readings=self.p.settings.max_batch_readings,
                horizon=horizon,
            )

        return self._submit(identity, check, in_process=True)

    def submit_body(self, identity: DeviceIdentity, body: bytes, content_type: str) -> IntakeResult:
        """Decode, validate and durably publish a raw JSON or NDJSON body (in a worker process
        when ``intake_workers`` > 0)."""
        machine_id, cap = identity.machine_id, self.p.settings.max_batch_readings

        machine_type = self.p.fleet.type_of(identity.machine_type)  # a type not in force: a 422

        def check(last_seq: int, horizon: datetime) -> Checked:
            if self.workers is not None:
                return self.workers.check(
                    body,
                    content_type,
                    identity.machine_type,
                    machine_id=machine_id,
                    last_seq=last_seq,
                    max_readings=cap,
                    horizon=horizon,
                )
            return check_body(
                body,
                content_type,
                machine_type,
                self.p.lake.sensors,
                machine_id=machine_id,
                last_seq=last_seq,
                max_readings=cap,
                horizon=horizon,
            )

        return self._submit(identity, check, in_process=self.workers is None)

    def _submit(
        self, identity: DeviceIdentity, check: Callable[[int, datetime], Checked], *, in_process: bool
    ) -> IntakeResult:
        machine_id = identity.machine_id
        horizon = datetime.now(UTC) + timedelta(seconds=self.p.settings.max_future_skew_s)
        position = None
        with self._lock(machine_id), _stores_reachable():
            if self.shared is not None:  # the seq row locked across servers until published
                with self.shared.hold(machine_id) as held:
                    with self._cpu if in_process else contextlib.nullcontext():
                        checked = check(held.last, horizon)
                    if checked.message is not None:
                        position = self.p.bus.publish(checked.message, machine_id)
                        held.advance(checked.last_seq)
            else:
                last_seq = self._known_seq(machine_id)
                with self._cpu if in_process else contextlib.nullcontext():
                    checked = check(last_seq, horizon)
                if checked.message is not None:
                    position = self.p.bus.publish(checked.message, machine_id)  # waits for the commit
                    self._last_seq[machine_id] = checked.last_seq
        m = self.p.metrics
        m.readings_accepted.inc(checked.accepted + checked.quarantined)
        m.readings_resent.inc(checked.duplicates)
        return IntakeResult(checked.accepted, checked.quarantined, checked.duplicates, position)

    def last_seq(self, machine_id: str) -> int:
        """The highest seq accepted for ``machine_id`` (-1: none), as a re-send is judged against."""
        with _stores_reachable():
            if self.shared is not None:
                with self.shared.hold(machine_id) as held:
                    return held.last
            with self._lock(machine_id):
                return self._known_seq(machine_id)

    def close(self) -> None:
        """Stop the validation workers, if any."""
        if self.workers is not None:
            self.workers.close()

    def _lock(self, machine_id: str) -> threading.Lock:
        with self._guard:
            lock = self._locks.get(machine_id)
            if lock is None:
                lock = self._locks[machine_id] = threading.Lock()
            return lock

    def _known_seq(self, machine_id: str) -> int:
        known = self._last_seq.get(machine_id)
        if known is None:
            with self.p.db.session() as session:
                state = session.get(MachineState, machine_id)
            known = state.last_seq if state is not None and state.last_seq is not None else -1
            self._last_seq[machine_id] = known
        return known
