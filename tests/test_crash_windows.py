"""Writes that span two stores: a crash (a fault hook, not a sleep) between them leaves the state
whole after a restart, and nothing doubled."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import select

import pitstop.lake.outbox
import pitstop.store
from pitstop.cli import cli
from pitstop.errors import ConflictError, LakeError
from pitstop.lake.outbox import Outbox
from pitstop.maintenance import transition
from pitstop.platform import Platform
from pitstop.processor import Processor
from pitstop.serving.deploy import (
    CANDIDATE_TAG,
    CHALLENGER,
    CHAMPION,
    MOVE_TAG,
    PREVIOUS,
    promote,
    recover,
    rollback,
)
from pitstop.store import Machine, MachineState, Prediction, WorkOrder
from pitstop.web.app import create_app
from tests.conftest import admin_headers, make_settings
from tests.test_deploy import second_version
from tests.test_processor import publish


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


def test_a_crash_between_the_ops_db_and_the_bus_commit_records_nothing_twice(
    trained: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = Processor(trained)
    proc.bootstrap()
    publish(trained, "eng-003", 3, 0, 30)
    proc.run_once()
    publish(trained, "eng-003", 3, 30, 20)

    def crash(consumer: str, position: int) -> None:
        raise Crash

    monkeypatch.setattr(trained.bus, "commit", crash)
    with pytest.raises(Crash):  # the ops DB has the batch's results; the bus has not moved
        proc.run_once()
    monkeypatch.undo()
    publish(trained, "eng-003", 3, 50, 10)  # more arrives while it is down: read with the replay
    restarted = Processor(trained)
    restarted.bootstrap()
    restarted.run_once()
    with trained.db.session() as s:
        state = s.get(MachineState, "eng-003")
        assert state is not None and (state.readings, state.last_seq) == (60, 60)
        seqs = s.scalars(select(Prediction.seq).where(Prediction.machine_id == "eng-003")).all()
    assert sorted(seqs) == [30, 50, 60]  # one prediction per batch's last reading, none twice


def test_the_ops_db_is_as_durable_as_the_bus(platform: Platform) -> None:
    with platform.db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


def test_a_promotion_cut_between_its_alias_writes_is_completed_and_audited_once(
    trained: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry, db = trained.registry, trained.db
    v2 = second_version(trained)
    real_set_alias = registry.set_alias

    def crash_on_champion(alias: str, version: str) -> None:
        if alias == CHAMPION:
            raise Crash
        real_set_alias(alias, version)

    monkeypatch.setattr(registry, "set_alias", crash_on_champion)
    with pytest.raises(Crash):
        promote(registry, db.audit, v2, actor="eve", audited=db.audited_move)
    monkeypatch.undo()
    # the state the crash left: previous-champion equal to champion (rollback used to refuse)
    assert registry.alias_version(PREVIOUS) == registry.alias_version(CHAMPION) == "1"
    result = rollback(registry, db.audit, actor="eve", audited=db.audited_move)
    assert result == {"champion": "1", "previous": v2}  # the promotion completed, then rolled back
    assert registry.alias_version(PREVIOUS) == v2 and registry.model_tag(MOVE_TAG) is None
    assert len(db.audit_entries(action="model_promoted")) == 1
    assert len(db.audit_entries(action="model_rolled_back")) == 1

    # cut after the audit row, before the journal is cleared: completed, not audited again
    monkeypatch.setattr(registry, "delete_model_tag", lambda key: (_ for _ in ()).throw(Crash()))
    with pytest.raises(Crash):
        promote(registry, db.audit, v2, actor="eve", audited=db.audited_move)
    monkeypatch.undo()
    assert recover(registry, db.audit, db.audited_move)
    assert registry.alias_version(CHAMPION) == v2 and registry.model_tag(MOVE_TAG) is None
    assert len(db.audit_entries(action="model_promoted")) == 2


def _admin_events(platform: Platform) -> list[dict[str, object]]:
    return list(platform.lake.read("events", machine_ids=["eng-007"]).iter_rows(named=True))


def test_an_admin_event_sent_twice_is_stored_once_with_one_audit_row(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    _order(platform)
    admin = admin_headers(platform)
    inspection = {"machine_id": "eng-007", "kind": "inspection", "detail": "borescope: clean"}
    with TestClient(create_app(platform)) as client:
        first = client.post("/api/v1/admin/events", json=inspection, headers=admin)
        again = client.post("/api/v1/admin/events", json=inspection, headers=admin)
        assert (first.status_code, again.status_code) == (201, 200), again.text
        assert again.json() == {**first.json(), "duplicate": True}
        assert first.json()["seq"] == 120 and first.json()["duplicate"] is False

        # an explicit key: a new key is a new event, a reused key with another body is refused
        keyed = {"machine_id": "eng-007", "kind": "failure", "ts": "2026-11-30T10:00:00Z"}
        one = client.post("/api/v1/admin/events", json=keyed, headers={**admin, "Idempotency-Key": "k-1"})
        two = client.post("/api/v1/admin/events", json=keyed, headers={**admin, "Idempotency-Key": "k-2"})
        assert (one.status_code, two.status_code) == (201, 201)
        reused = client.post(
            "/api/v1/admin/events",
            json={**keyed, "kind": "maintenance"},
            headers={**admin, "Idempotency-Key": "k-1"},
        )
        assert reused.status_code == 409 and reused.json()["error"]["code"] == "idempotency_key_reused"

        # the lake fails during the request: the event and its audit row wait in the ops DB
        def lake_down(*args: object, **kwargs: object) -> bool:
            raise LakeError("disk full")

        monkeypatch.setattr(platform.lake, "append", lake_down)
        late = {"machine_id": "eng-007", "kind": "maintenance", "ts": "2026-11-30T12:00:00Z"}
        stored = client.post("/api/v1/admin/events", json=late, headers=admin)
        assert stored.status_code == 201
        monkeypatch.undo()
        retried = client.post("/api/v1/admin/events", json=late, headers=admin)  # the caller retries
        assert retried.status_code == 200 and retried.json()["duplicate"] is True
    assert platform.outbox.pending() == 1
    restarted = _restart(platform)
    try:
        restarted.outbox.drain()
        kinds = sorted(str(e["kind"]) for e in _admin_events(restarted))
        assert kinds == ["failure", "failure", "inspection", "maintenance"]
        audited = restarted.db.audit_entries(action="event_recorded")
        assert len(audited) == 4 and {e["actor"] for e in audited} == {"admin-token"}
    finally:
        restarted.close()


@pytest.mark.parametrize("cut", ["event", "audit"])
def test_an_admin_event_and_its_audit_row_are_one_unit(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, cut: str
) -> None:
    """Cut after either write: whichever came first is not kept without the other."""
    _order(platform)
    module, name = (pitstop.lake.outbox, "enqueue") if cut == "event" else (pitstop.store, "audit_entry")
    real = getattr(module, name)

    def crash_after(*args: object, **kwargs: object) -> object:
        real(*args, **kwargs)
        raise Crash

    monkeypatch.setattr(module, name, crash_after)
    body = {"machine_id": "eng-007", "kind": "inspection"}
    with TestClient(create_app(platform), raise_server_exceptions=False) as client:
        assert (
            client.post("/api/v1/admin/events", json=body, headers=admin_headers(platform)).status_code == 500
        )
        monkeypatch.undo()
        # nothing of the cut request survived: neither an event nor an audit row
        assert platform.outbox.pending() == 0 and _admin_events(platform) == []
        assert platform.db.audit_entries(action="event_recorded") == []
        again = client.post("/api/v1/admin/events", json=body, headers=admin_headers(platform))
        assert again.status_code == 201 and again.json()["duplicate"] is False
    assert len(_admin_events(platform)) == 1 and len(platform.db.audit_entries(action="event_recorded")) == 1


def test_a_retrain_cut_during_its_shadow_leaves_a_candidate_promote_refuses(
    trained: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pitstop.monitoring.retrain as loop

    champion = trained.registry.alias_version(CHAMPION)
    monkeypatch.setattr(loop, "_gate_problem", lambda gate, tolerance: None)  # the gate passes

    def crash(*args: object, **kwargs: object) -> None:
        raise Crash  # the process dies during the hour-long shadow

    monkeypatch.setattr(loop, "_shadow", crash)
    with pytest.raises(Crash):
        loop.retrain(trained, trigger="test", params={"n_estimators": 30}, shadow_readings=40)
    monkeypatch.undo()
    registry, db = trained.registry, trained.db
    candidate = registry.alias_version(CHALLENGER)
    assert candidate is not None and registry.version_tag(candidate, CANDIDATE_TAG) == "shadowing"

    with pytest.raises(ConflictError) as refused:  # after the restart, a plain promote
        promote(registry, db.audit, actor="eve", audited=db.audited_move)
    assert refused.value.code == "candidate_not_passed"
    assert registry.alias_version(CHAMPION) == champion and db.audit_entries(action="model_promoted") == []

    run = CliRunner().invoke(
        cli, ["promote", "--force", "--data-dir", str(trained.settings.data_dir)], catch_exceptions=False
    )
    assert run.exit_code == 0, run.output
    assert registry.alias_version(CHAMPION) == candidate
    (entry,) = db.audit_entries(action="model_promoted")
    assert entry["detail"]["forced"] is True and entry["detail"]["candidate"] == "shadowing"


def test_an_event_the_lake_cannot_hold_is_refused_and_never_blocks_the_drain(platform: Platform) -> None:
    _order(platform)
    admin = admin_headers(platform)
    with TestClient(create_app(platform)) as client:
        huge = client.post(
            "/api/v1/admin/events",
            json={"machine_id": "eng-007", "kind": "failure", "seq": 2**63},
            headers=admin,
        )
        assert huge.status_code == 422
    # a row written before rows were checked (straight into the table) is set aside, not retried
    # forever: the events behind it still reach the lake
    with platform.db.session() as s:
        pitstop.lake.outbox.enqueue(s, "maintenance-legacy", {})  # another table: never drained
        s.add(
            pitstop.store.LakeOutbox(
                table_name="events",
                payload=json.dumps(
                    {
                        "machine_id": "eng-007",
                        "seq": 2**64,
                        "kind": "failure",
                        "ts": "2026-11-30T10:00:00+00:00",
                    }
                ),
                created_at=datetime.now(UTC),
            )
        )
        pitstop.lake.outbox.enqueue(
            s, "events", {"machine_id": "eng-007", "ts": datetime.now(UTC), "kind": "inspection"}
        )
    assert platform.outbox.drain() == 1
    assert [e["kind"] for e in _admin_events(platform)] == ["inspection"]


def test_outbox_ids_are_never_reused_even_after_an_older_ops_db_comes_back(platform: Platform) -> None:
    _order(platform)
    with TestClient(create_app(platform)) as client:
        for n in range(3):
            body = {"machine_id": "eng-007", "kind": "inspection", "detail": f"round {n}"}
            assert (
                client.post("/api/v1/admin/events", json=body, headers=admin_headers(platform)).status_code
                == 201
            )
    # the ops DB goes back to before the last two (a restore of a backup taken mid-way, say)
    with platform.db.session() as s:
        s.execute(pitstop.store.LakeOutbox.__table__.delete().where(pitstop.store.LakeOutbox.id > 1))
        s.execute(sqlalchemy.text("UPDATE sqlite_sequence SET seq = 1 WHERE name = 'lake_outbox'"))
    restarted = _restart(platform)
    try:
        with TestClient(create_app(restarted)) as client:
            body = {"machine_id": "eng-007", "kind": "maintenance", "detail": "after the restore"}
            assert (
                client.post("/api/v1/admin/events", json=body, headers=admin_headers(restarted)).status_code
                == 201
            )
        assert restarted.outbox.pending() == 0
        details = sorted(str(e["detail"]) for e in _admin_events(restarted))
        assert details == ["after the restore", "round 0", "round 1", "round 2"]  # not taken as stored
    finally:
        restarted.close()


def test_a_keyed_event_retried_after_the_machines_next_reading_is_still_the_same_event(
    platform: Platform,
) -> None:
    _order(platform)
    headers = {**admin_headers(platform), "Idempotency-Key": "wo-27-close"}
    body = {"machine_id": "eng-007", "kind": "maintenance"}
    with TestClient(create_app(platform)) as client:
        first = client.post("/api/v1/admin/events", json=body, headers=headers)
        with platform.db.session() as s:  # a reading arrives before the client's retry
            state = s.get(MachineState, "eng-007")
            assert state is not None
            state.last_seq = 121
        retry = client.post("/api/v1/admin/events", json=body, headers=headers)
    assert (first.status_code, retry.status_code) == (201, 200), retry.text
    assert retry.json()["seq"] == first.json()["seq"] == 120 and len(_admin_events(platform)) == 1
