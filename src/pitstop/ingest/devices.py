from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select

from pitstop.errors import AuthError, NotFoundError
from pitstop.store import Database, Device, Machine, utcnow


def new_token() -> str:
    return "pst_" + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class DeviceIdentity:
    device_id: int
    machine_id: str
    machine_type: str


class DeviceRegistry:
    """One token per device, stored hashed; a device posts readings for its own machine only."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, machine_id: str) -> tuple[int, str]:
        """Register a device for a machine. Returns its id and token (shown once, stored hashed)."""
        token = new_token()
        with self.db.session() as s:
            if s.get(Machine, machine_id) is None:
                raise NotFoundError(f"machine {machine_id!r} does not exist", code="machine_not_found")
            device = Device(machine_id=machine_id, token_hash=hash_token(token), created_at=utcnow())
            s.add(device)
            s.flush()
            return device.id, token

    def authenticate(self, token: str) -> DeviceIdentity:
        with self.db.session() as s:
            row = s.execute(
                select(Device.id, Device.machine_id, Device.disabled_at, Machine.machine_type)
                .join(Machine, Machine.machine_id == Device.machine_id)
                .where(Device.token_hash == hash_token(token))
            ).first()
        if row is None:
            raise AuthError("unknown device token", code="invalid_token")
        if row.disabled_at is not None:
            raise AuthError("this device is disabled", code="device_disabled")
        return DeviceIdentity(row.id, row.machine_id, row.machine_type)
