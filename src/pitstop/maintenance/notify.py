"""Webhooks for work-order events: written to an outbox in the same transaction as the change
(so an event is never lost, even if the process dies before sending), then delivered by a
background thread, signed with HMAC-SHA256, retried with capped exponential backoff until the
receiver accepts it. Delivery is at least once; each delivery carries an ``Idempotency-Key`` that
stays the same across retries, so a receiver can drop repeats.

Headers of each POST:

- ``Pitstop-Event``: the event, e.g. ``work_order.opened``
- ``Idempotency-Key``: one per (event, URL), the same on every retry
- ``Pitstop-Signature``: ``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the secret>``

Alerts (``enqueue_alert``) use the same outbox, with a ``channel`` per row: ``webhook`` (the
signed JSON above, event ``alerts``), ``slack`` and ``teams`` (their incoming-webhook JSON,
rendered when sent) and ``email`` (over SMTP). A group's alerts queued within ``alert_group_s`` of
its first join that first row, which waits that long before it is due: one message per group.

The delivery thread also runs the periodic checks handed to ``every`` (overdue work orders).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import smtplib
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pitstop.config.urls import redact_url, resolves_link_local
from pitstop.maintenance import notify_formats
from pitstop.maintenance.notify_routes import AlertRoutes
from pitstop.store import Database, WebhookDelivery, utcnow

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Pitstop-Signature"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Pitstop-Signature`` header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, tolerance_s: float = 300.0) -> bool:
    """Check a ``Pitstop-Signature`` header (for receivers): right key, body and a recent time."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(time.time() - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), header)


class Notifier:
    """The outbox and its delivery thread. ``enqueue`` inside the caller's DB transaction."""

    def __init__(
        self,
        db: Database,
        urls: list[str],
        secret: str,
        max_backoff_s: float = 300.0,
        base_backoff_s: float = 0.5,
        timeout_s: float = 10.0,
        allow_link_local: bool = False,
        routes: AlertRoutes | None = None,
    ) -> None:
        self.db = db
        self.routes = routes or AlertRoutes()
        self._periodic: list[list[Any]] = []  # [interval_s, fn, next due (monotonic)]
        self.allow_link_local = allow_link_local
        self.urls = list(urls)
        self.secret = secret
        self.max_backoff_s = max_backoff_s
        self.base_backoff_s = base_backoff_s
        self.timeout_s = timeout_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def enqueue(self, session: Session, event: str, payload: dict[str, Any]) -> None:
        """Add the event for every configured URL to the outbox, in ``session``'s transaction."""
        if not self.urls:
            return
        now = utcnow()
        body = json.dumps({"event": event, "sent_for": now.isoformat(), "data": payload}, default=str)
        for url in self.urls:
            session.add(
                WebhookDelivery(
                    url=url,
                    event=event,
                    payload=body,
                    idempotency_key=uuid.uuid4().hex,
                    created_at=now,
                    attempts=0,
                    next_attempt_at=now,
                )
            )
        self._wake.set()

    def enqueue_alert(self, session: Session, group: str, alert: dict[str, Any], hold_s: float = 0.0) -> None:
        """Queue ``alert`` to every alert route, in ``session``'s transaction. With ``hold_s``, it
        joins its group's row queued within the last ``hold_s`` (not yet due), else starts one
        that waits ``hold_s``: alerts of one group raised close together are one message."""
        now = utcnow()
        for channel, url in self.routes.targets():
            row = self._open_group(session, channel, url, group, now) if hold_s > 0 else None
            if row is not None:
                envelope = json.loads(row.payload)
                envelope["data"]["alerts"].append(alert)
                row.payload = json.dumps(envelope, default=str)
                continue
            body = {
                "event": "alerts",
                "sent_for": now.isoformat(),
                "data": {"group": group, "alerts": [alert]},
            }
            session.add(
                WebhookDelivery(
                    url=url,
                    event="alerts",
                    payload=json.dumps(body, default=str),
                    idempotency_key=uuid.uuid4().hex,
                    created_at=now,
                    attempts=0,
                    next_attempt_at=now + timedelta(seconds=hold_s),
                    channel=channel,
                    group_key=group if hold_s > 0 else None,
                )
            )
        self._wake.set()

    @staticmethod
    def _open_group(session: Session, channel: str, url: str, group: str, now: Any) -> WebhookDelivery | None:
        """The group's row still waiting (due later than a second from now: the delivery thread
        cannot be sending it), from this flush or an earlier transaction."""
        margin = now + timedelta(seconds=1)

        def waiting(row: WebhookDelivery) -> bool:
            return (
                row.channel == channel
                and row.url == url
                and row.group_key == group
                and row.attempts == 0
                and row.delivered_at is None
                and row.next_attempt_at > margin
            )

        for obj in session.new:
            if isinstance(obj, WebhookDelivery) and waiting(obj):
                return obj
        with session.no_autoflush:
            found = session.scalars(
                select(WebhookDelivery)
                .where(
                    WebhookDelivery.channel == channel,
                    WebhookDelivery.url == url,
                    WebhookDelivery.group_key == group,
                    WebhookDelivery.attempts == 0,
                    WebhookDelivery.delivered_at.is_(None),
                    WebhookDelivery.next_attempt_at > margin,
                )
                .order_by(WebhookDelivery.id)
            ).first()
        return found

    def every(self, interval_s: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the delivery thread every ``interval_s`` (0: never)."""
        if interval_s > 0:
            self._periodic.append([interval_s, fn, 0.0])

    def _run_periodic(self) -> None:
        for task in self._periodic:
            interval_s, fn, due = task
            if time.monotonic() >= due:
                task[2] = time.monotonic() + interval_s
                try:
                    fn()
                except Exception:
                    log.exception("periodic check %s failed", getattr(fn, "__name__", fn))

    def deliver_due(self, client: httpx.Client, limit: int = 100) -> int:
        """One pass: try every delivery that is due. Returns how many were accepted."""
        now = utcnow()
        with self.db.session() as s:
            due = list(
                s.scalars(
                    select(WebhookDelivery)
                    .where(WebhookDelivery.delivered_at.is_(None), WebhookDelivery.next_attempt_at <= now)
                    .order_by(WebhookDelivery.id)
                    .limit(limit)
                )
            )
            s.expunge_all()
        accepted = 0
        for delivery in due:
            try:
                error = self._post(client, delivery)
            except Exception as exc:  # a bad row is a failed attempt, never a stop to the others
                log.exception("delivery %d could not be sent", delivery.id)
                error = f"{type(exc).__name__}: {exc}"
            with self.db.session() as s:
                row = s.get(WebhookDelivery, delivery.id)
                if row is None:
                    continue
                row.attempts += 1
                if error is None:
                    row.delivered_at, row.last_error = utcnow(), None
                    accepted += 1
                else:
                    wait = min(self.max_backoff_s, self.base_backoff_s * 2 ** (row.attempts - 1))
                    wait *= random.uniform(0.8, 1.0)  # jitter, so retries to one receiver spread out
                    row.next_attempt_at = utcnow() + timedelta(seconds=wait)
                    row.last_error = error
                    log.warning(
                        "webhook %s to %s failed (attempt %d): %s",
                        row.event,
                        redact_url(row.url),
                        row.attempts,
                        error,
                    )
        return accepted

    def _post(self, client: httpx.Client, delivery: WebhookDelivery) -> str | None:
        if delivery.channel == "email":
            return self._mail(delivery)
        body = delivery.payload.encode()
        if delivery.channel in ("slack", "teams"):
            render = notify_formats.slack if delivery.channel == "slack" else notify_formats.teams
            body = json.dumps(render(json.loads(delivery.payload)["data"])).encode()
        headers = {
            "content-type": "application/json",
            "Pitstop-Event": delivery.event,
            "Idempotency-Key": delivery.idempotency_key,
            SIGNATURE_HEADER: sign(self.secret, int(time.time()), body),
        }
        try:
            host = httpx.URL(delivery.url).host
            if not self.allow_link_local and resolves_link_local(host):
                return "refused: the receiver's host resolves to a link-local or metadata address"
            response = client.post(delivery.url, content=body, headers=headers, timeout=self.timeout_s)
        except httpx.InvalidURL:
            return "refused: not a URL the HTTP client can send to"
        except httpx.HTTPError as exc:  # its text may hold the URL, whose path can be a secret
            return f"{type(exc).__name__}: {str(exc).replace(delivery.url, redact_url(delivery.url))}"
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"

    def _mail(self, delivery: WebhookDelivery) -> str | None:
        route = self.routes.email
        if route is None:
            return "refused: no SMTP route is configured (smtp_host, alert_email_to)"
        message = notify_formats.email(json.loads(delivery.payload)["data"], route.sender, list(route.to))
        message["Message-ID"] = f"<{delivery.idempotency_key}@pitstop>"  # the same on every retry
        try:
            route.send(message)
        except (smtplib.SMTPException, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    def pending(self) -> int:
        with self.db.session() as s:
            return int(
                s.scalar(
                    select(func.count())
                    .select_from(WebhookDelivery)
                    .where(WebhookDelivery.delivered_at.is_(None))
                )
                or 0
            )

    # -- the delivery thread -------------------------------------------------------------------
    def start(self, poll_s: float = 1.0) -> None:
        if self._thread is not None or not (self.urls or self.routes.targets() or self._periodic):
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(poll_s,), name="pitstop-webhooks", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self, poll_s: float) -> None:
        with httpx.Client() as client:
            while not self._stop.is_set():
                try:
                    self.deliver_due(client)
                except Exception:
                    log.exception("webhook delivery pass failed")
                self._run_periodic()
                self._wake.wait(poll_s)
                self._wake.clear()
