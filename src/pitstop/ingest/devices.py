from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from pitstop.errors import AuthError, NotFoundError, ValidationError
from pitstop.schema import FleetSchema
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
    """One token per device, stored hashed (shown once); a device posts for its own machine only."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def add(
        self, machine_id: str, machine_type: str | None = None, fleet: FleetSchema | None = None
    ) -> tuple[int, str]:
        """Register a device for a machine; with ``machine_type``, create the machine if it is new.

        Returns the device id and its token. Only the token's hash is stored.
        """
        token = new_token()
        with self.db.session() as s:
            machine = s.get(Machine, machine_id)
            if machine is None:
                if machine_type is None:
                    raise NotFoundError(
                        f"machine {machine_id!r} does not exist; pass its machine type to create it",
                        code="machine_not_found",
                    )
                if fleet is not None and machine_type not in fleet.machine_types:
                    raise ValidationError(
                        f"unknown machine type {machine_type!r}; known: {sorted(fleet.machine_types)}",
                        code="unknown_machine_type",
                    )
                now = utcnow()
                s.add(
                    Machine(
                        machine_id=machine_id,
                        machine_type=machine_type,
                        status="active",
                        installed_at=now,
                        created_at=now,
                    )
                )
                s.flush()  # the machine row must exist before the device row that refers to it
            device = Device(machine_id=machine_id, token_hash=hash_token(token), created_at=utcnow())
            s.add(device)
            s.flush()
            return device.id, token

    def list(self) -> list[dict[str, Any]]:
        with self.db.session() as s:
            devices = s.scalars(select(Device).order_by(Device.id)).all()
        return [
            {
                "device_id": d.id,
                "machine_id": d.machine_id,
                "created_at": d.created_at.isoformat(),
                "disabled_at": d.disabled_at.isoformat() if d.disabled_at else None,
                "status": "disabled" if d.disabled_at else "active",
            }
            for d in devices
        ]

    def disable(self, device_id: int) -> None:
        with self.db.session() as s:
            device = self._get(s, device_id)
            if device.disabled_at is None:
                device.disabled_at = utcnow()

    def rotate(self, device_id: int) -> str:
        """A new token for the device; the old one stops working at once."""
        token = new_token()
        with self.db.session() as s:
            device = self._get(s, device_id)
            if device.disabled_at is not None:
                raise ValidationError(
                    f"device {device_id} is disabled; add a new device instead", code="device_disabled"
                )
            device.token_hash = hash_token(token)
        return token

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

    @staticmethod
    def _get(session: Any, device_id: int) -> Device:
        device = session.get(Device, device_id)
        if device is None:
            raise NotFoundError(
                f"no device {device_id}; `pitstop devices list` shows them", code="device_not_found"
            )
        assert isinstance(device, Device)
        return device
