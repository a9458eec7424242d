"""The agent's MQTT source against a real broker (the NATS server's MQTT listener): readings a local
program publishes at QoS 1 reach the source, and a message the agent took but never acknowledged
(killed before its buffer commit) is delivered again to the next agent with the same client id."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from uuid import uuid4

import paho.mqtt.client as mqtt
import pytest

from pitstop.agent.sources import Source, open_source
from pitstop.agent.sources.mqtt import MqttSource
from pitstop.bus.nats_server import find_binary, server_config
from tests.conftest import free_port


@contextmanager
def publisher(port: int) -> Iterator[mqtt.Client]:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid4().hex[:8]}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        yield client
    finally:
        client.loop_stop()
        client.disconnect()


def publish(client: mqtt.Client, topic: str, payload: str) -> None:
    info = client.publish(topic, payload, qos=1)
    info.wait_for_publish(10)
    assert info.is_published()


def take(source: Source, want: int, timeout: float = 10.0) -> list[dict[str, float]]:
    got: list[dict[str, float]] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        chunk = source.read(0.2)
        if chunk is not None:
            got.extend(r.values for r in chunk.readings)
    return got


def line(i: int) -> str:
    return json.dumps({"values": {"engine_rpm": 1000.0 + i, "coolant_temp_c": 80.0}})


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[int]:
    """A NATS server's MQTT listener that redelivers an unacknowledged QoS 1 message after 1 s
    (NATS resends it after ``ack_wait``, 30 s by default, rather than when the session resumes)."""
    port, mqtt_port = free_port(), free_port()
    folder = tmp_path / "nats"
    folder.mkdir()
    config = folder / "nats.conf"
    text = server_config(folder / "jetstream", port, mqtt_port)
    config.write_text(text.replace("mqtt {", 'mqtt {\n  ack_wait: "1s"'))
    with open(folder / "nats.log", "wb") as log:
        proc = subprocess.Popen([find_binary(), "-c", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while not listening(mqtt_port):
            assert proc.poll() is None and time.monotonic() < deadline, "nats-server did not start"
            time.sleep(0.05)
        yield mqtt_port
    finally:
        proc.terminate()
        proc.wait(10)


def test_mqtt_readings_reach_the_source_and_an_unacknowledged_one_comes_again(broker: int) -> None:
    port = broker
    machine = f"HV-{uuid4().hex[:6]}"
    topic = f"harvester/{machine}/readings"
    spec = f"mqtt://127.0.0.1:{port}/{topic}"
    first = open_source(spec, machine)
    assert isinstance(first, MqttSource) and first.client_id == f"pitstop-agent-{machine}"
    first.open(None)  # subscribed when it returns: what is published from now on is the agent's
    with publisher(port) as pub:
        publish(pub, topic, line(0))
        publish(pub, topic, "\n".join([line(1), line(2)]))  # several NDJSON lines in one message
        publish(pub, topic, json.dumps([json.loads(line(3))]))  # or a JSON array
        got = take(first, 4)
        assert [v["engine_rpm"] for v in got] == [1000.0, 1001.0, 1002.0, 1003.0]
        first.ack(None)  # buffered: the broker may forget them

        publish(pub, topic, line(4))
        assert [v["engine_rpm"] for v in take(first, 1)] == [1004.0]
        first.close()  # the agent dies before its buffer commit: message 4 was never acknowledged

        second = open_source(spec, machine)
        second.open(None)
        try:
            again = take(second, 1)
            assert [v["engine_rpm"] for v in again] == [1004.0], "the unacknowledged message, again"
            second.ack(None)
            publish(pub, topic, line(5))
            assert [v["engine_rpm"] for v in take(second, 1)] == [1005.0]
            second.ack(None)
        finally:
            second.close()

        third = open_source(spec, machine)
        third.open(None)
        try:
            assert take(third, 1, timeout=2.5) == [], "acknowledged messages are not delivered again"
        finally:
            third.close()
