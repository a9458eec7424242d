"""MQTT intake for devices, through the NATS server's MQTT listener.

A device publishes with QoS 1 to ``pitstop/mqtt/<machine_id>`` a JSON object
``{"token": "<device token>", "readings": [...]}``. The NATS server maps the topic to the subject
``pitstop.mqtt.<machine_id>``, which a JetStream stream captures, so a message waits there while
Pitstop is down. This worker reads it with a durable consumer and hands it to the same ``Intake``
as HTTP (authentication, rate limit, validation, durable publish). The message is acknowledged only
once its batch is on the bus, or once it is rejected: a rejection is reported on
``pitstop/mqtterr/<machine_id>`` as the same ``{"error": {...}}`` body the HTTP API returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any

import orjson

from pitstop.errors import BusError, PitstopError, StorageError, ValidationError
from pitstop.ingest.intake import Intake
from pitstop.ingest.validate import may_hold_literals

log = logging.getLogger(__name__)

STREAM = "PITSTOP_MQTT"
SUBJECT = "pitstop.mqtt"
ERRORS = "pitstop.mqtterr"
CONSUMER = "mqtt-intake"


class MqttIntake:
    def __init__(self, intake: Intake, nats_url: str, batch: int = 64) -> None:
        self.intake = intake
        self.nats_url = nats_url
        self.batch = batch
        self.accepted = 0
        self.rejected = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 15.0) -> None:
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._main()), name="pitstop-mqtt", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout):
            raise BusError(f"MQTT intake could not reach NATS at {self.nats_url}")
        if self._error is not None:
            raise BusError(f"MQTT intake failed to start: {self._error}")

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    async def _main(self) -> None:
        import nats
        import nats.errors
        from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

        try:
            nc = await nats.connect(self.nats_url, max_reconnect_attempts=-1)
            js = nc.jetstream()
            try:
                await js.stream_info(STREAM)
            except nats.js.errors.NotFoundError:
                await js.add_stream(
                    StreamConfig(name=STREAM, subjects=[f"{SUBJECT}.>"], storage=StorageType.FILE)
                )
            sub = await js.pull_subscribe(
                f"{SUBJECT}.>",
                durable=CONSUMER,
                stream=STREAM,
                config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30, max_deliver=-1),
            )
        except Exception as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while not self._stop.is_set():
                try:
                    msgs = await sub.fetch(batch=self.batch, timeout=0.5)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue  # nothing waiting (nats-py raises either kind)
                except Exception:
                    log.exception("MQTT intake: fetch failed; retrying")
                    await asyncio.sleep(0.5)
                    continue
                for msg in msgs:
                    try:
                        await self._handle(nc, msg)
                    except Exception:  # unacknowledged: JetStream redelivers it after ack_wait
                        log.exception(
                            "MQTT intake: message for %s failed; it will be redelivered", msg.subject
                        )
        finally:
            with contextlib.suppress(Exception):
                await nc.close()

    async def _handle(self, nc: Any, msg: Any) -> None:
        machine_id = msg.subject[len(SUBJECT) + 1 :]
        try:
            token, readings, check_values = _envelope(msg.data)
            identity = await asyncio.to_thread(self.intake.authenticate, token)
            if identity.machine_id != machine_id:
                raise ValidationError(
                    f"topic is for machine {machine_id!r} but the token is {identity.machine_id!r}'s",
                    code="wrong_machine",
                )
            self.intake.admit(identity)
            await asyncio.to_thread(self.intake.submit, identity, readings, check_values)
        except (BusError, StorageError):
            log.warning("bus or ops DB unavailable; MQTT message for %s will be redelivered", machine_id)
            await msg.nak(delay=1.0)
            return
        except PitstopError as exc:
            self.rejected += 1
            self.intake.p.metrics.readings_rejected.labels(exc.code).inc()
            with contextlib.suppress(Exception):
                await nc.publish(f"{ERRORS}.{machine_id}", orjson.dumps(exc.to_dict()))
            await msg.ack()
            return
        self.accepted += 1
        await msg.ack()


def _envelope(data: bytes) -> tuple[str, list[Any], bool]:
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"MQTT payload is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict) or set(body) != {"token", "readings"}:
        raise ValidationError(
            'MQTT payload must be {"token": "...", "readings": [...]}', code="invalid_batch"
        )
    token, readings = body["token"], body["readings"]
    if not isinstance(token, str) or not token:
        raise ValidationError("token must be the device token", code="missing_token")
    if not isinstance(readings, list) or not readings:
        raise ValidationError("readings must be a non-empty array", code="invalid_batch")
    return token, readings, may_hold_literals(data)
