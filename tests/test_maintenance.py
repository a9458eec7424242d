"""The risk policy's decisions, and webhook delivery that survives a receiver outage."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from pitstop.errors import ConfigError
from pitstop.maintenance import ComponentMap, Notifier, PolicyState, RiskPolicy
from pitstop.maintenance.notify import verify
from pitstop.platform import Platform
from pitstop.schema import default_fleet
from pitstop.store import Database, WebhookDelivery


def run(policy: RiskPolicy, state: PolicyState, lowers: list[float], start: int = 0) -> list[int]:
    """The seqs at which the policy opens an order, over a sequence of lower bounds."""
    return [seq for seq, lower in enumerate(lowers, start) if policy.step(state, lower, seq)]


def test_the_policy_opens_one_order_and_does_not_flap() -> None:
    policy = RiskPolicy(lead_time=20, threshold=30, hysteresis=10, recheck_after=15)
    state = PolicyState()
    # wobbling around the threshold: one order, however often it crosses
    assert run(policy, state, [50, 40, 29, 31, 28, 33, 29, 25]) == [2]
    assert state.open and not state.armed
    # closed as a repair elsewhere ("other"): the same episode gets a new order only after the
    # lower bound rose above threshold + hysteresis and fell again
    policy.closed(state, "other", 8)
    assert run(policy, state, [29, 35, 38, 29], start=9) == []
    assert run(policy, state, [41, 29], start=13) == [14]
    # closed "no fault found": watched again recheck_after readings later
    policy.closed(state, "no_fault_found", 20)
    assert state.rearm_seq == 35
    assert run(policy, state, [25] * 20, start=21) == [35]
    # a maintenance or failure event starts a new episode, armed
    RiskPolicy.reset(state)
    assert run(policy, state, [29], start=100) == [100]


def test_priority_and_due_follow_the_lower_bound() -> None:
    policy = RiskPolicy(lead_time=20, threshold=35)
    assert [policy.priority(x) for x in (5, 15, 30)] == ["urgent", "high", "normal"]
    assert policy.due_in(12.5) == 12.5 and policy.due_in(-3) == 0


def test_policies_come_from_settings_per_machine_type(tmp_path: Path) -> None:
    from tests.conftest import make_settings

    settings = make_settings(
        tmp_path,
        lead_time=10,
        work_order_rul_threshold=15,
        maintenance_policies={"harvester": {"lead_time": 48, "threshold": 72}},
    )
    assert RiskPolicy.from_settings(settings).threshold == 15
    harvester = RiskPolicy.from_settings(settings, "harvester")
    assert (harvester.lead_time, harvester.threshold, harvester.hysteresis) == (
        48,
        72,
        settings.work_order_hysteresis,
    )
    with pytest.raises(ConfigError, match="below the lead time"):
        RiskPolicy(lead_time=30, threshold=20)
    bad = make_settings(tmp_path, maintenance_policies={"harvester": {"leadtime": 5}})
    with pytest.raises(ConfigError, match="unknown keys"):
        RiskPolicy.from_settings(bad, "harvester")


def test_a_component_map_must_name_sensors_and_procedures(tmp_path: Path) -> None:
    shipped = ComponentMap.from_fleet(default_fleet())
    assert {c.name for c in shipped.types["turbofan"]} >= {"high-pressure compressor (HPC)", "fan"}
    broken = tmp_path / "map.toml"
    broken.write_text('[[harvester.components]]\nname = "hydraulics"\n')
    with pytest.raises(ConfigError, match="sensors"):
        ComponentMap.load(broken)


class Receiver:
    """A webhook receiver on a real socket that can be down, and fails its first ``fail_first``
    requests with a 503 when up. Repeats (same Idempotency-Key) are counted, then dropped."""

    def __init__(self, secret: str, fail_first: int = 0) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.secret, self.fail_first = secret, fail_first
        self.requests = 0
        self.accepted: dict[str, dict[str, object]] = {}
        self.repeats = 0
        self.bad_signatures = 0
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.requests += 1
                if receiver.requests <= receiver.fail_first:
                    self.send_response(503)
                elif not verify(receiver.secret, self.headers["Pitstop-Signature"], body):
                    receiver.bad_signatures += 1
                    self.send_response(401)
                else:
                    key = self.headers["Idempotency-Key"]
                    if key in receiver.accepted:
                        receiver.repeats += 1
                    receiver.accepted.setdefault(key, json.loads(body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'ops.db'}")
    database.migrate()
    yield database
    database.close()


def test_webhooks_reach_the_receiver_at_least_once_across_an_outage(db: Database) -> None:
    secret = "s3cret"
    receiver = Receiver(secret, fail_first=2)
    notifier = Notifier(db, [receiver.url], secret, max_backoff_s=0.2, base_backoff_s=0.05, timeout_s=2)
    with db.session() as s:  # the receiver is down while the first events are written
        for i in range(5):
            notifier.enqueue(s, "work_order.opened", {"id": i})
    with httpx.Client() as client:
        assert notifier.deliver_due(client) == 0  # connection refused: kept, retried later
        assert notifier.pending() == 5
    # the process stops here; a new one (a new Notifier over the same outbox) carries on
    receiver.start()
    try:
        again = Notifier(db, [receiver.url], secret, max_backoff_s=0.2, base_backoff_s=0.05, timeout_s=2)
        with db.session() as s:
            again.enqueue(s, "work_order.done", {"id": 0, "finding": "fault_confirmed"})
        again.start(poll_s=0.05)
        deadline = time.monotonic() + 20
        while again.pending():
            assert time.monotonic() < deadline, "webhooks never delivered"
            time.sleep(0.05)
        again.stop()
    finally:
        receiver.stop()
    # every event arrived, signed, with one key per event; the 503s were retried
    assert sorted((p["event"], p["data"]["id"]) for p in receiver.accepted.values()) == sorted(
        [("work_order.opened", i) for i in range(5)] + [("work_order.done", 0)]
    )
    assert receiver.bad_signatures == 0 and receiver.requests >= 6 + 2
    with db.session() as s:
        rows = list(s.query(WebhookDelivery))
    assert all(r.delivered_at is not None for r in rows)
    assert max(r.attempts for r in rows) >= 2 and len({r.idempotency_key for r in rows}) == 6


def test_a_signature_binds_the_key_the_body_and_the_time() -> None:
    from pitstop.maintenance.notify import sign

    now = int(time.time())
    header = sign("k", now, b'{"a": 1}')
    assert verify("k", header, b'{"a": 1}')
    assert not verify("other", header, b'{"a": 1}')
    assert not verify("k", header, b'{"a": 2}')
    assert not verify("k", sign("k", now - 3600, b"{}"), b"{}")  # replayed an hour later
    assert not verify("k", "garbage", b"{}")


def test_an_order_opened_by_the_processor_reaches_the_webhook_signed_and_explained(trained: Platform) -> None:
    """End to end: readings → processor → risk policy → work order → outbox → receiver."""
    from pitstop.processor import Processor
    from tests.test_deploy import reopen
    from tests.test_processor import publish

    receiver = Receiver("hook-key")
    receiver.start()
    platform = reopen(trained, webhook_urls=[receiver.url], webhook_secret="hook-key")
    try:
        assert platform.notifier is not None
        proc = Processor(platform)
        proc.bootstrap()
        for start in range(0, 200, 50):  # FD001 test unit 31 ends 8 cycles before its failure
            publish(platform, "eng-031", 31, start, 50)
            proc.run_once()
        with httpx.Client() as client:
            assert platform.notifier.deliver_due(client) >= 1
        opened = [p for p in receiver.accepted.values() if p["event"] == "work_order.opened"]
        assert receiver.bad_signatures == 0
        (order,) = [p["data"] for p in opened if p["data"]["machine_id"] == "eng-031"]
        assert order["component"] and order["explanation"]["top_sensors"] and order["due_at"]
        assert order["machine_url"] == "/machines/eng-031"
    finally:
        platform.close()
        receiver.stop()


def test_a_machine_at_risk_in_its_first_batch_gets_its_order_then(trained: Platform) -> None:
    from sqlalchemy import select

    from pitstop.processor import Processor
    from pitstop.store import WorkOrder
    from tests.test_processor import publish

    proc = Processor(trained)
    proc.bootstrap()
    publish(trained, "eng-031", 31, 0, 200)  # its whole history at once: at risk at its last reading
    proc.run_once()
    with trained.db.session() as s:
        orders = s.scalars(select(WorkOrder).where(WorkOrder.machine_id == "eng-031")).all()
    assert len(orders) == 1 and orders[0].status == "open"


def test_open_work_orders_steps_each_machine_as_its_policy_does_with_or_without_an_open_order(
    tmp_path: Path,
) -> None:
    """Only machines that could fire or re-arm are looked up for an open order; the others step
    alike either way. Every case of the policy's memory against one batch."""
    from datetime import UTC, datetime

    from sqlalchemy import select

    from pitstop.maintenance.work_orders import Reading, open_work_orders
    from pitstop.serving import Score
    from pitstop.store import Machine, MachineState, WorkOrder

    db = Database(f"sqlite:///{tmp_path / 'ops.db'}")
    db.migrate()
    policy = RiskPolicy(lead_time=20, threshold=35, hysteresis=10, recheck_after=15)
    now = datetime.now(UTC)
    # machine: (armed, has an open order, lower bound of this batch's score)
    cases = {
        "armed-open-low": (True, True, 10.0),  # an order is open: no second one
        "armed-open-high": (True, True, 100.0),  # nothing fires, stays armed
        "armed-none-low": (True, False, 10.0),  # fires
        "armed-none-high": (True, False, 100.0),  # nothing
        "unarmed-open-high": (False, True, 100.0),  # an open order: does not re-arm
        "unarmed-none-high": (False, False, 100.0),  # re-arms above threshold + hysteresis
        "unarmed-none-low": (False, False, 10.0),  # not armed: does not fire
        "armed-none-nan": (True, False, float("nan")),  # no bound: nothing
    }
    with db.session() as s:
        for m, (armed, has_order, _) in cases.items():
            s.add(Machine(machine_id=m, machine_type="turbofan", installed_at=now, created_at=now))
            s.flush()
            s.add(MachineState(machine_id=m, readings=1, policy_armed=armed))
            if has_order:
                s.add(
                    WorkOrder(
                        machine_id=m,
                        status="open",
                        priority="normal",
                        reason="by hand",
                        predicted_rul=50.0,
                        rul_lower=10.0,
                        rul_upper=90.0,
                        model_version="1",
                        opened_at=now,
                    )
                )
    with db.session() as s:
        states = {st.machine_id: st for st in s.scalars(select(MachineState))}
        scores = {m: Score(50.0, low, 90.0, "rul", "1", "champion") for m, (_, _, low) in cases.items()}
        opened = open_work_orders(
            s,
            lambda t: policy,
            scores,
            {m: Reading(5, now) for m in cases},
            states,
            {m: "turbofan" for m in cases},
            lambda *a: None,
        )
        assert [o.machine_id for o in opened] == ["armed-none-low"]
        armed = {m: st.policy_armed for m, st in states.items()}
    assert armed == {
        "armed-open-low": True,
        "armed-open-high": True,
        "armed-none-low": False,
        "armed-none-high": True,
        "unarmed-open-high": False,
        "unarmed-none-high": True,
        "unarmed-none-low": False,
        "armed-none-nan": True,
    }
