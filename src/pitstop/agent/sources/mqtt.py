"""``mqtt://host:port/topic``: readings a local program publishes to a broker on the machine.

The agent subscribes with QoS 1 in a persistent session (a fixed client id, no clean start), and
acknowledges a message (manual PUBACK) only after its readings are in the buffer: the broker keeps
what the agent has not acknowledged while it is down. The ids of the messages waiting for their
PUBACK are committed with their readings, so a message the broker sends again (its DUP flag set)
after the agent died between the commit and the PUBACK is acknowledged without being stored twice.
A message is one NDJSON line, several lines,
or a JSON array of readings. Needs ``paho-mqtt`` (in ``pitstop[agent]``).

``open`` returns once the subscription is acknowledged, so what is published after it is the
agent's. A broker resends an unacknowledged message to the same client id: Mosquitto when the
session resumes, NATS's MQTT listener after its ``ack_wait`` (30 s by default).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from typing import Any
from urllib.parse import urlsplit

from pitstop.agent.sources.base import Chunk, SourceError, SourceReading
from pitstop.agent.sources.parse import ndjson_line

log = logging.getLogger(__name__)

SUBSCRIBE_WAIT_S = 10.0


class MqttSource:
    def __init__(self, url: str, client_id: str, qos: int = 1) -> None:
        parts = urlsplit(url)
        topic = parts.path.lstrip("/")
        if not parts.hostname or not topic:
            raise SourceError(f"MQTT source {url!r}: use mqtt://host:port/topic")
        self.host, self.port, self.topic = parts.hostname, parts.port or 1883, topic
        self.client_id, self.qos = client_id, qos
        self._inbox: queue.Queue[Any] = queue.Queue()
        self._taken: list[Any] = []
        self._stored: set[int] = set()  # ids committed but perhaps not acknowledged (last run)
        self._client: Any = None
        self._subscribed = threading.Event()

    def open(self, position: str | None) -> None:
        if position:
            try:
                self._stored = {int(m) for m in json.loads(position).get("pending", [])}
            except (ValueError, AttributeError, TypeError):
                self._stored = set()
        try:
            import paho.mqtt.client as mqtt
        except ImportError as exc:
            raise SourceError("the MQTT source needs paho-mqtt: pip install 'pitstop[agent]'") from exc
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        client.manual_ack_set(True)

        def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            if not reason.is_failure:
                c.subscribe(self.topic, qos=self.qos)
            else:
                log.warning("MQTT source: broker refused the connection: %s", reason)

        client.on_connect = on_connect
        client.on_subscribe = lambda c, userdata, mid, reasons, props: self._subscribed.set()
        client.on_message = lambda c, userdata, message: self._inbox.put(message)
        try:
            client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            raise SourceError(f"MQTT source: cannot reach {self.host}:{self.port}: {exc}") from exc
        client.loop_start()
        self._client = client
        if not self._subscribed.wait(SUBSCRIBE_WAIT_S):  # so what is published from now on is ours
            log.warning(
                "MQTT source: no subscription to %s after %.0f s; still trying", self.topic, SUBSCRIBE_WAIT_S
            )

    def read(self, timeout: float) -> Chunk | None:
        try:
            first = self._inbox.get(timeout=timeout)
        except queue.Empty:
            return None
        messages = [first]
        while len(messages) < 500:
            try:
                messages.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        readings: list[SourceReading] = []
        errors: list[str] = []
        for message in messages:
            if message.dup and message.mid in self._stored:
                continue  # stored before the agent died, never acknowledged: acknowledge it only
            try:
                readings.extend(_readings(message.payload))
            except (ValueError, OverflowError, RecursionError) as exc:
                errors.append(f"mqtt {message.topic}: {exc}: {bytes(message.payload)[:120]!r}")
        self._taken.extend(messages)
        self._stored = {m.mid for m in messages}
        return Chunk(readings, json.dumps({"pending": sorted(self._stored)}), errors)

    def ack(self, position: str | None) -> None:
        for message in self._taken:
            self._client.ack(message.mid, message.qos)
        self._taken = []

    def close(self) -> None:
        if self._client is not None:
            self._client.loop_stop()
            self._client.disconnect()


def _readings(payload: bytes) -> list[SourceReading]:
    text = payload.decode("utf-8", errors="replace").strip()
    if text.startswith("["):
        items = json.loads(text)
        if not isinstance(items, list):
            raise ValueError("a JSON array of readings expected")
        lines = [json.dumps(item) for item in items]
    else:
        lines = text.splitlines()
    out = []
    for line in lines:
        reading = ndjson_line(line)
        if reading is not None:
            out.append(reading)
    return out
