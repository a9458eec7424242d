"""Writes that span two stores: a crash (a fault hook, not a sleep) between them leaves the state
whole after a restart, and nothing doubled."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pitstop.errors import LakeError
from pitstop.maintenance import transition
from pitstop.maintenance.outbox import Outbox
from pitstop.platform import Platform
from pitstop.store import Machine, MachineState, WorkOrder
from tests.conftest import make_settings


class Crash(Exception):
    """The process dies here."""


def _order(platform: Platform, machine_id: str = "eng-007") -> int:
    now = datetime.now(UTC)
    with platform.db.session() as s:
        s.add(Machine(machine_id=machine_id, machine_type="turbofan", installed_at=now, created_at=now))
        s.add(MachineState(machine_id=machine_id, last_ts=now, last_seq=120, readings=120))
        order = WorkOrder(
            machine_id=machine_id,
            status="in_progress",
            priority="high",
            reason="test",
            predicted_rul=12.0,
            model_version="1",
            opened_at=now,
            seq=110,
        )
        s.add(order)
        s.flush()
        return order.id


def _events_of(platform: Platform, order_id: int) -> list[dict[str, object]]:
    events = platform.lake.read("events").iter_rows(named=True)
    return [e for e in events if e["detail"] and json.loads(e["detail"]).get("work_order") == order_id]


def _restart(platform: Platform) -> Platform:
    data_dir = platform.settings.data_dir
    platform.close()
    return Platform.open(make_settings(data_dir))


def test_a_work_order_closed_while_the_lake_fails_keeps_its_event_and_audit(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    order_id = _order(platform)

    def lake_down(*args: object, **kwargs: object) -> bool:
        raise LakeError("disk full")

    monkeypatch.setattr(platform.lake, "append", lake_down)
    body = transition(platform, order_id, "done", "fault_confirmed", technician="ana", role="technician")
    assert body["status"] == "done"
    # the order, its audit row and its event were one unit: the event waits in the outbox
    assert [e["actor"] for e in platform.db.audit_entries(action="work_order_done")] == ["ana"]
    assert platform.outbox.pending() == 1
    monkeypatch.undo()
    assert _events_of(platform, order_id) == []
    restarted = _restart(platform)
    try:
        assert restarted.outbox.drain() == 1
        (event,) = _events_of(restarted, order_id)
        assert event["kind"] == "maintenance" and event["seq"] == 120
        assert restarted.outbox.drain() == 0 and len(_events_of(restarted, order_id)) == 1
    finally:
        restarted.close()


def test_a_crash_after_the_lake_append_appends_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = Platform.open(make_settings(tmp_path / "data"))
    first, second = _order(platform, "eng-001"), _order(platform, "eng-002")

    def crash(self: Outbox, ids: list[int]) -> None:
        raise Crash

    monkeypatch.setattr(Outbox, "_mark_appended", crash)
    closed = transition(platform, first, "done", "no_fault_found", technician="ana", role="technician")
    assert closed["status"] == "done"  # the order is committed; the caller is not failed
    monkeypatch.undo()
    assert len(_events_of(platform, first)) == 1  # in the lake, but still pending in the outbox
    assert platform.outbox.pending() == 1
    platform = _restart(platform)
    try:
        # a later close queues behind it: the drain appends only the new one
        transition(platform, second, "done", "fault_confirmed", technician="ana", role="technician")
        assert platform.outbox.pending() == 0
        assert len(_events_of(platform, first)) == 1 and len(_events_of(platform, second)) == 1
        kinds = {e["kind"] for e in _events_of(platform, first)}
        assert kinds == {"inspection"}
    finally:
        platform.close()
