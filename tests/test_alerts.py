"""Alerts people act on: raised from audit rows in their transaction, deduplicated, resolved,
silenced, grouped, and delivered through the outbox to real local receivers (HTTP and SMTP)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from pitstop.cli import cli
from pitstop.maintenance import Notifier
from pitstop.maintenance.notify import verify
from pitstop.maintenance.notify_routes import AlertRoutes, SmtpRoute
from pitstop.monitoring.alert_rules import KINDS, RULES
from pitstop.monitoring.alerts import AlertPolicy, Alerts, add_silence, list_alerts, remove_silence
from pitstop.platform import Platform
from pitstop.store import (
    Alert,
    AuditEntry,
    Database,
    Machine,
    WebhookDelivery,
    WorkOrder,
    audit_entry,
    utcnow,
)
from pitstop.web import create_app
from pitstop.web.users import Users

SECRET = "alert-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Receiver:
    """A real HTTP receiver: records each accepted POST (path, headers, JSON); fails the first N."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.requests = 0
        self.accepted: list[tuple[str, dict[str, str], bytes]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", free_port()), self._handler())
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.requests += 1
                if receiver.requests <= receiver.fail_first:
                    self.send_response(503)
                else:
                    receiver.accepted.append((self.path, dict(self.headers), body))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [json.loads(body) for p, _, body in self.accepted if p == path]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'ops.db'}")
    database.migrate()
    yield database
    database.close()


def wire(db: Database, routes: AlertRoutes | None = None, **policy: Any) -> tuple[Alerts, Notifier]:
    """Alerts over ``db``, sent through a notifier to ``routes`` (default: one unreachable webhook)."""
    routes = routes or AlertRoutes(webhooks=("http://127.0.0.1:9/hook",))
    notifier = Notifier(db, [], SECRET, base_backoff_s=0.01, max_backoff_s=0.05, timeout_s=2, routes=routes)
    alerts = Alerts(AlertPolicy(**{"group_s": 0.0, **policy}), notifier.enqueue_alert)
    alerts.attach(db)
    return alerts, notifier


def drift(db: Database, sensor: str = "s2", scope: str = "type:turbofan", cleared: bool = False) -> None:
    action = "drift_cleared" if cleared else "drift_alert"
    db.audit("monitor", action, scope=scope, sensor=sensor, features=[f"{sensor}_mean"], rows=500)


def count(db: Database, model: Any) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def outbox(db: Database) -> list[dict[str, Any]]:
    with db.session() as s:
        return [
            json.loads(r.payload) for r in s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id))
        ]


def test_every_rule_names_a_known_kind_and_severity() -> None:
    assert {r.kind for r in RULES} == set(KINDS)
    assert all(r.severity in ("info", "warning", "critical") for r in RULES)


def test_an_audit_row_raises_its_alert_in_the_same_transaction(db: Database) -> None:
    wire(db)
    with pytest.raises(RuntimeError), db.session() as s:
        s.add(audit_entry("monitor", "drift_alert", scope="fleet", sensor="s2"))
        s.flush()  # the alert and its notification are written with the row...
        raise RuntimeError("the transaction fails after the audit row")
    # ...and rolled back with it: neither is left
    assert count(db, AuditEntry) == 0 and count(db, Alert) == 0 and count(db, WebhookDelivery) == 0
    drift(db)
    (alert,) = list_alerts(db)
    assert alert["kind"] == "drift" and alert["key"] == "drift:type:turbofan:s2"
    assert alert["machine_type"] == "turbofan" and alert["severity"] == "warning"
    assert alert["detail"]["sensor"] == "s2"
    (sent,) = outbox(db)
    assert sent["event"] == "alerts" and sent["data"]["alerts"][0]["status"] == "firing"


def test_a_re_raised_key_is_counted_not_sent_again(db: Database) -> None:
    wire(db)
    with db.session() as s:  # twice in one transaction, the first raise included
        s.add(audit_entry("monitor", "drift_alert", scope="type:turbofan", sensor="s2"))
        s.add(audit_entry("monitor", "drift_alert", scope="type:turbofan", sensor="s2"))
    drift(db)
    drift(db)
    (alert,) = list_alerts(db, status=None)
    assert alert["count"] == 4 and alert["status"] == "firing"
    assert len(outbox(db)) == 1  # one notification, for the first raise
    drift(db, sensor="s3")  # another key is another alert
    assert len(list_alerts(db)) == 2 and len(outbox(db)) == 2


def test_a_resolve_closes_the_alert_and_is_sent_and_a_new_raise_starts_again(db: Database) -> None:
    wire(db)
    drift(db)
    drift(db, cleared=True)
    assert list_alerts(db) == []
    (resolved,) = list_alerts(db, status="resolved")
    assert resolved["resolved_at"] is not None
    assert [p["data"]["alerts"][0]["status"] for p in outbox(db)] == ["firing", "resolved"]
    drift(db, cleared=True)  # nothing firing: nothing to resolve, nothing sent
    assert len(outbox(db)) == 2
    drift(db)
    assert len(list_alerts(db)) == 1 and len(list_alerts(db, status=None)) == 2


def test_a_silenced_alert_is_recorded_and_listed_but_not_sent(db: Database) -> None:
    wire(db)
    made = add_silence(
        db, "ana", duration_s=3600, reason="sensor swap", kind="drift", machine_type="turbofan"
    )
    drift(db)
    drift(db, scope="type:harvester")  # another machine type: not matched
    db.audit("monitor", "quality_alert", machine_type="turbofan", check="stuck", sensor="s4")
    firing = {a["key"]: a for a in list_alerts(db)}
    assert firing["drift:type:turbofan:s2"]["silenced_by"] == made["id"]
    assert firing["drift:type:harvester:s2"]["silenced_by"] is None
    assert firing["data_quality:turbofan:stuck:s4"]["silenced_by"] is None
    sent = [p["data"]["alerts"][0]["key"] for p in outbox(db)]
    assert sent == ["drift:type:harvester:s2", "data_quality:turbofan:stuck:s4"]
    drift(db, cleared=True)  # its raise was not sent: neither is its resolve
    assert len(outbox(db)) == 2
    # a key prefix; then the silence ends and the next raise is sent
    add_silence(db, "ana", duration_s=60, reason="x", key_prefix="data_quality:turbofan:gap")
    db.audit("monitor", "quality_alert", machine_type="turbofan", check="gap", machine_id="eng-7")
    assert len(outbox(db)) == 2
    remove_silence(db, "ana", made["id"])
    drift(db)
    assert len(outbox(db)) == 3
    actions = [e["action"] for e in db.audit_entries(action=None, actor="ana")]
    assert actions.count("alert_silenced") == 2 and actions.count("alert_unsilenced") == 1


def test_a_storm_of_rows_in_one_transaction_raises_counts_resolves_and_silences_each(db: Database) -> None:
    """An alert storm (``Database.audit_many``: every machine's alert of one check in one commit):
    each row is applied as if alone: new keys raised, a firing key counted, a firing key resolved,
    a live silence honoured and one that has ended not."""
    wire(db)
    drift(db, sensor="s9")  # firing before the storm: re-raised in it
    drift(db, sensor="s8")  # firing before the storm: resolved in it
    add_silence(db, "ana", duration_s=0.05, reason="ended", machine_type="harvester")
    time.sleep(0.1)
    live = add_silence(db, "ana", duration_s=3600, reason="swap", kind="data_quality")
    sent_before = len(outbox(db))
    db.audit_many(
        [("monitor", "drift_alert", {"scope": "type:harvester", "sensor": f"s{k}"}) for k in range(3)]
        + [
            ("monitor", "quality_alert", {"machine_type": "turbofan", "check": "gap", "machine_id": f"e{k}"})
            for k in range(40)
        ]
        + [
            ("monitor", "drift_alert", {"scope": "type:turbofan", "sensor": "s9"}),
            ("monitor", "drift_cleared", {"scope": "type:turbofan", "sensor": "s8"}),
        ]
    )
    firing = {a["key"]: a for a in list_alerts(db)}
    assert {k for k in firing if k.startswith("drift:type:harvester")} == {
        f"drift:type:harvester:s{k}" for k in range(3)
    }
    assert all(firing[f"drift:type:harvester:s{k}"]["silenced_by"] is None for k in range(3))  # ended
    gaps = [a for k, a in firing.items() if k.startswith("data_quality:turbofan:gap")]
    assert len(gaps) == 40 and {a["silenced_by"] for a in gaps} == {live["id"]}
    assert firing["drift:type:turbofan:s9"]["count"] == 2
    assert "drift:type:turbofan:s8" not in firing
    statuses = [(a["key"], a["status"]) for p in outbox(db)[sent_before:] for a in p["data"]["alerts"]]
    assert sorted(statuses) == sorted(
        [(f"drift:type:harvester:s{k}", "firing") for k in range(3)]
        + [("drift:type:turbofan:s8", "resolved")]
    )
    assert db.audit_many([]) is None and count(db, AuditEntry) == 2 + 45 + 2  # nothing for none


def test_alerts_of_one_group_raised_together_go_out_as_one_message(db: Database) -> None:
    wire(db, group_s=30.0)
    drift(db, sensor="s2")
    drift(db, sensor="s3")  # same group (drift, turbofan), within the window: joins the first
    drift(db, sensor="s2", scope="type:harvester")  # another group: its own message
    with db.session() as s:  # two of a group in one transaction: one message too
        s.add(audit_entry("monitor", "drift_alert", scope="type:pump", sensor="s1"))
        s.add(audit_entry("monitor", "drift_alert", scope="type:pump", sensor="s2"))
    rows = outbox(db)
    assert [[a["key"] for a in p["data"]["alerts"]] for p in rows] == [
        ["drift:type:turbofan:s2", "drift:type:turbofan:s3"],
        ["drift:type:harvester:s2"],
        ["drift:type:pump:s1", "drift:type:pump:s2"],
    ]
    with db.session() as s:  # held for the window, so later alerts of the group can join
        due = [r.next_attempt_at for r in s.scalars(select(WebhookDelivery))]
    assert all(d > utcnow() + timedelta(seconds=20) for d in due)


def test_severity_below_the_minimum_and_caught_failures_are_not_sent(db: Database) -> None:
    wire(db, min_severity="warning")
    db.audit("retrainer", "retrain_promoted", trigger="drift", machine_type="turbofan", version="3")
    db.audit("monitor", "failure_scored", machine_id="eng-1", failure_seq=90, caught_in_time=True)
    assert [a["kind"] for a in list_alerts(db)] == ["retrain"]  # recorded, info
    assert outbox(db) == []
    db.audit("monitor", "failure_scored", machine_id="eng-2", failure_seq=80, caught_in_time=False)
    (sent,) = outbox(db)
    assert sent["data"]["alerts"][0]["severity"] == "critical"
    assert sent["data"]["alerts"][0]["summary"] == "eng-2 failed with no work order in time"


def test_each_route_gets_its_format_from_the_outbox(db: Database) -> None:
    from aiosmtpd.controller import Controller

    class Inbox:
        def __init__(self) -> None:
            self.messages: list[tuple[list[str], bytes]] = []

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            self.messages.append((list(envelope.rcpt_tos), envelope.content))
            return "250 OK"

    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    receiver = Receiver()
    try:
        routes = AlertRoutes(
            slack=(receiver.url("/slack"),),
            teams=(receiver.url("/teams"),),
            webhooks=(receiver.url("/hook"),),
            email=SmtpRoute("127.0.0.1", smtp.port, "pitstop@plant.example", ("ops@plant.example",)),
        )
        _, notifier = wire(db, routes)
        db.audit("guard", "champion_rolled_back", machine_type="turbofan", from_version="4", to_version="3",
                 reason="invalid outputs")  # fmt: skip
        with httpx.Client() as client:
            assert notifier.deliver_due(client) == 4
    finally:
        receiver.close()
        smtp.stop()
    summary = "turbofan champion 4 rolled back to 3: invalid outputs"
    (slack,) = receiver.bodies("/slack")
    assert summary in slack["text"] and slack["blocks"][0]["type"] == "header"
    (teams,) = receiver.bodies("/teams")
    assert teams["@type"] == "MessageCard" and summary in teams["sections"][0]["activityTitle"]
    assert teams["themeColor"] == "D13438"  # critical
    ((_, headers, body),) = [a for a in receiver.accepted if a[0] == "/hook"]
    assert verify(SECRET, headers["Pitstop-Signature"], body)  # the generic webhook is signed
    hook = json.loads(body)
    assert hook["event"] == "alerts" and hook["data"]["alerts"][0]["kind"] == "guard"
    ((to, raw),) = inbox.messages
    mail = message_from_bytes(raw)
    assert to == ["ops@plant.example"] and mail["From"] == "pitstop@plant.example"
    assert "1 firing" in mail["Subject"] and summary in mail.get_payload(decode=True).decode()


def test_a_receiver_that_fails_twice_gets_the_alert_once_it_accepts(db: Database) -> None:
    receiver = Receiver(fail_first=2)
    try:
        _, notifier = wire(db, AlertRoutes(slack=(receiver.url("/slack"),)))
        drift(db)
        deadline = time.monotonic() + 10
        with httpx.Client() as client:
            while notifier.pending():
                assert time.monotonic() < deadline, "the alert was never delivered"
                notifier.deliver_due(client)
                time.sleep(0.02)
    finally:
        receiver.close()
    assert receiver.requests == 3 and len(receiver.accepted) == 1
    assert "drift on s2" in receiver.bodies("/slack")[0]["text"]


def _order(db: Database, due_in_s: float) -> int:
    now = utcnow()
    with db.session() as s:
        if s.get(Machine, "eng-1") is None:
            s.add(Machine(machine_id="eng-1", machine_type="turbofan", installed_at=now, created_at=now))
        order = WorkOrder(
            machine_id="eng-1",
            status="open",
            priority="high",
            reason="rul low",
            predicted_rul=10,
            model_version="1",
            opened_at=now,
            due_at=now + timedelta(seconds=due_in_s),
        )
        s.add(order)
        s.flush()
        return order.id


def test_an_overdue_work_order_raises_once_and_resolves_when_it_closes(db: Database) -> None:
    alerts, _ = wire(db)
    late, on_time = _order(db, -60), _order(db, 3600)
    alerts.sweep()
    alerts.sweep()  # still late: no second alert, no second audit row
    (alert,) = list_alerts(db)
    assert alert["kind"] == "work_order_overdue" and alert["key"] == f"work_order_overdue:{late}"
    assert alert["machine_id"] == "eng-1" and alert["machine_type"] == "turbofan"
    assert len(db.audit_entries(action="work_order_overdue")) == 1
    with db.session() as s:  # closed the way transition() closes it: with its audit row
        s.get_one(WorkOrder, late).status = "done"
        s.add(audit_entry("ana", "work_order_done", work_order=late, finding="fault_confirmed"))
    assert list_alerts(db) == []
    # closed without an audit row (or its due date moved): the sweep clears it
    with db.session() as s:
        s.get_one(WorkOrder, on_time).due_at = utcnow() - timedelta(seconds=1)
    alerts.sweep()
    assert [a["key"] for a in list_alerts(db)] == [f"work_order_overdue:{on_time}"]
    with db.session() as s:
        s.get_one(WorkOrder, on_time).status = "cancelled"
    alerts.sweep()
    assert list_alerts(db) == []
    assert [p["data"]["alerts"][0]["status"] for p in outbox(db)] == ["firing", "resolved"] * 2


def test_an_event_alert_resolves_quietly_after_its_ttl(db: Database) -> None:
    alerts, _ = wire(db, event_ttl_s=3600)
    db.audit("retrainer", "retrain_failed", trigger="drift", machine_type="turbofan", error="boom")
    alerts.sweep()
    assert len(list_alerts(db)) == 1
    alerts.sweep(utcnow() + timedelta(hours=2))
    assert list_alerts(db) == [] and len(outbox(db)) == 1  # only the raise was sent


def test_the_alerts_command_lists_silences_and_unsilences(tmp_path: Path) -> None:
    data = tmp_path / "data"
    db = Database(f"sqlite:///{data / 'ops.db'}")
    data.mkdir()
    db.migrate()
    wire(db)
    drift(db)
    db.close()
    runner = CliRunner()
    base = ["--data-dir", str(data)]
    listed = runner.invoke(cli, ["alerts", "list", "--json", *base])
    assert listed.exit_code == 0, listed.output
    assert [a["key"] for a in json.loads(listed.output)["alerts"]] == ["drift:type:turbofan:s2"]
    made = runner.invoke(
        cli, ["alerts", "silence", "--kind", "drift", "--for", "2h", "--reason", "recalibrating", *base]
    )
    assert made.exit_code == 0, made.output
    silence = json.loads(made.output)
    assert silence["kind"] == "drift" and silence["reason"] == "recalibrating"
    text = runner.invoke(cli, ["alerts", "list", "--silences", *base]).output
    assert f"#{silence['id']}" in text and "recalibrating" in text
    bad = runner.invoke(
        cli, ["alerts", "silence", "--kind", "drift", "--for", "soon", "--reason", "x", *base]
    )
    assert bad.exit_code == 2 and "not a duration" in bad.output
    everything = runner.invoke(cli, ["alerts", "silence", "--for", "1h", "--reason", "x", *base])
    assert everything.exit_code == 2 and "silence_matches_everything" in everything.output
    assert runner.invoke(cli, ["alerts", "unsilence", str(silence["id"]), *base]).exit_code == 0
    again = runner.invoke(cli, ["alerts", "unsilence", str(silence["id"]), *base])
    assert again.exit_code == 2 and "no_silence" in again.output
    assert "drift on s2" in runner.invoke(cli, ["alerts", "list", "--all", *base]).output


def test_the_alerts_api_lists_for_viewers_and_silences_for_engineers(platform: Platform) -> None:
    users = Users(platform.db)
    keys = {}
    for role in ("viewer", "technician", "engineer"):
        users.add(f"u-{role}", role)
        keys[role] = {"Authorization": f"Bearer {users.create_key(f'u-{role}')}"}
    drift(platform.db)
    drift(platform.db, scope="type:harvester", sensor="s9")
    with TestClient(create_app(platform)) as client:
        listed = client.get("/api/v1/alerts", params={"machine_type": "turbofan"}, headers=keys["viewer"])
        assert listed.status_code == 200
        assert [a["key"] for a in listed.json()["alerts"]] == ["drift:type:turbofan:s2"]
        assert client.get("/api/v1/alerts?kind=nope", headers=keys["viewer"]).status_code == 422
        body = {"kind": "drift", "duration_s": 7200, "reason": "field trial"}
        denied = client.post("/api/v1/alerts/silences", json=body, headers=keys["technician"])
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "forbidden"
        made = client.post("/api/v1/alerts/silences", json=body, headers=keys["engineer"])
        assert made.status_code == 200, made.text
        assert made.json()["created_by"] == "u-engineer"
        assert [s["id"] for s in client.get("/api/v1/alerts", headers=keys["viewer"]).json()["silences"]] == [
            made.json()["id"]
        ]
        empty = client.post(
            "/api/v1/alerts/silences", json={"duration_s": 60, "reason": "x"}, headers=keys["engineer"]
        )
        assert empty.status_code == 422 and empty.json()["error"]["code"] == "silence_matches_everything"
        url = f"/api/v1/alerts/silences/{made.json()['id']}"
        assert client.delete(url, headers=keys["viewer"]).status_code == 403
        assert client.delete(url, headers=keys["engineer"]).status_code == 200
        gone = client.delete(url, headers=keys["engineer"])
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "no_silence"
    (entry,) = platform.db.audit_entries(action="alert_silenced")
    assert entry["actor"] == "u-engineer" and entry["role"] == "engineer"
    assert platform.db.audit_entries(action="alert_unsilenced")[0]["actor"] == "u-engineer"


def test_the_shipped_alertmanager_rules_parse_and_name_only_metrics_we_export() -> None:
    import re

    import yaml

    from pitstop.monitoring import Metrics

    rules_file = Path(__file__).resolve().parent.parent / "deploy" / "alertmanager" / "pitstop-rules.yml"
    groups = yaml.safe_load(rules_file.read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert rules and all({"alert", "expr", "labels", "annotations"} <= set(rule) for rule in rules)
    assert all(rule["labels"]["severity"] in ("info", "warning", "critical") for rule in rules)
    exported = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    for family in Metrics().registry.collect():
        exported |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
    named = {name for rule in rules for name in re.findall(r"\bpitstop_[a-z_]+", rule["expr"])}
    assert named, "the rules name no Pitstop metric"
    assert named <= exported, f"rules name metrics we do not export: {sorted(named - exported)}"
    assert {"pitstop_drift_alert", "pitstop_bus_lag_messages", "pitstop_scoring_failures_total"} <= named


def test_the_platform_wires_routes_from_settings_and_checks_them(tmp_path: Path) -> None:
    from pitstop.errors import ConfigError
    from tests.conftest import make_settings

    with pytest.raises(ConfigError, match="alert_email_to needs smtp_host"):
        make_settings(tmp_path / "a", alert_email_to=["ops@plant.example"])
    with pytest.raises(ConfigError, match="link-local"):
        make_settings(tmp_path / "b", alert_slack_urls=["http://169.254.169.254/hook"])
    receiver = Receiver()
    settings = make_settings(
        tmp_path / "data",
        alert_teams_urls=[receiver.url("/teams")],
        alert_group_s=0,
        alert_min_severity="critical",
    )
    platform = Platform.open(settings)
    try:
        assert platform.notifier is not None
        platform.db.audit("monitor", "drift_alert", scope="fleet", sensor="s2")  # warning: not sent
        platform.db.audit("guard", "champion_rolled_back", machine_type="turbofan", from_version="2")
        with httpx.Client() as client:
            assert platform.notifier.deliver_due(client) == 1
        assert len(list_alerts(platform.db)) == 2
    finally:
        platform.close()
        receiver.close()
    (card,) = receiver.bodies("/teams")
    assert "champion 2 rolled back" in card["title"] + card["sections"][0]["activityTitle"]


def test_a_hanging_receiver_never_holds_up_the_transaction_that_raises(db: Database) -> None:
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(8)  # accepts connections, never answers
    url = f"http://127.0.0.1:{hang.getsockname()[1]}/slack"
    _, notifier = wire(db, AlertRoutes(slack=(url,)))
    notifier.timeout_s = 0.3
    notifier.start(poll_s=0.05)
    try:
        started = time.monotonic()
        for sensor in ("s1", "s2", "s3"):
            drift(db, sensor=sensor)
        assert time.monotonic() - started < 1.0  # the audit calls only wrote rows
        deadline = time.monotonic() + 10
        while True:  # the delivery thread meets the hang, times out and keeps them for a retry
            with db.session() as s:
                rows = list(s.scalars(select(WebhookDelivery)))
            if rows and all(r.attempts >= 1 for r in rows):
                break
            assert time.monotonic() < deadline, "the delivery thread never tried"
            time.sleep(0.05)
    finally:
        notifier.stop()
        hang.close()
    assert len(rows) == 3 and all(r.delivered_at is None and r.last_error for r in rows)
