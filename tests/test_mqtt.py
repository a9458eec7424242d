"""Devices over MQTT (QoS 1) through the NATS server's MQTT listener, into the same intake."""

from __future__ import annotations

import json
import queue
import shutil
import time
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt

from pitstop.config import load_settings
from pitstop.ingest import Intake
from pitstop.ingest.mqtt import MqttIntake
from pitstop.platform import Platform
from pitstop.processor import Processor
from tests.test_api import readings


def device(port: int, name: str) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def send(client: mqtt.Client, machine: str, token: str, batch: list[dict[str, object]]) -> None:
    info = client.publish(f"pitstop/mqtt/{machine}", orjson.dumps({"token": token, "readings": batch}), qos=1)
    info.wait_for_publish(10)
    assert info.is_published()


def wait(predicate: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_mqtt_devices(trained_dir: Path, tmp_path: Path, nats_server: tuple[str, int]) -> None:
    url, mqtt_port = nats_server
    data_dir = tmp_path / "data"
    shutil.copytree(trained_dir, data_dir)
    settings = load_settings(None, data_dir=data_dir, bus_backend="nats", nats_url=url, nats_stream="MQ")
    platform = Platform.open(settings)
    tokens = json.loads((data_dir / "demo-devices.json").read_text())
    intake = Intake(platform)
    worker = MqttIntake(intake, url)
    errors: queue.Queue[bytes] = queue.Queue()
    watcher = device(mqtt_port, "watcher")
    watcher.on_message = lambda _c, _u, msg: errors.put(msg.payload)
    watcher.subscribe("pitstop/mqtterr/#", qos=1)
    sender = device(mqtt_port, "eng-008-device")
    try:
        worker.start()  # creates the capture stream and the durable consumer
        send(sender, "eng-008", tokens["eng-008"], readings("eng-008", 8, 0, 20))
        wait(lambda: platform.bus.head() == 1)

        worker.stop()  # Pitstop is down: a device keeps publishing with QoS 1
        send(sender, "eng-008", tokens["eng-008"], readings("eng-008", 8, 20, 10))
        time.sleep(0.5)
        assert platform.bus.head() == 1
        worker = MqttIntake(intake, url)
        worker.start()  # back up: the waiting message is taken in
        wait(lambda: platform.bus.head() == 2)

        # rejections are reported on the error topic and nothing is stored
        send(sender, "eng-008", "pst_wrong", readings("eng-008", 8, 30, 5))
        assert json.loads(errors.get(timeout=10))["error"]["code"] == "invalid_token"
        send(sender, "eng-008", tokens["eng-009"], readings("eng-009", 9, 0, 5))
        assert json.loads(errors.get(timeout=10))["error"]["code"] == "wrong_machine"
        bad = readings("eng-008", 8, 30, 2)
        bad[1]["values"]["s2"] = "hot"
        send(sender, "eng-008", tokens["eng-008"], bad)
        report = json.loads(errors.get(timeout=10))["error"]
        assert report["code"] == "invalid_readings" and report["details"][0]["code"] == "invalid_value"
        assert platform.bus.head() == 2

        proc = Processor(platform)
        proc.bootstrap()
        assert proc.run_once().written == 30
        assert platform.lake.read("telemetry", machine_ids=["eng-008"]).height == 30
    finally:
        worker.stop()
        for client in (sender, watcher):
            client.loop_stop()
            client.disconnect()
        platform.close()
