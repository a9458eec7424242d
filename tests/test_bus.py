from __future__ import annotations

import threading
from pathlib import Path

from pitstop.bus import SqliteBus


def test_publish_read_commit(tmp_path: Path) -> None:
    bus = SqliteBus(tmp_path / "bus.db")
    positions = [bus.publish(f"m{i}".encode()) for i in range(5)]
    assert positions == sorted(positions) and len(set(positions)) == 5
    assert bus.head() == positions[-1]
    first = bus.read("c", 3)
    assert [m.payload for m in first] == [b"m0", b"m1", b"m2"]
    assert bus.read("c", 3) == first  # nothing committed yet: the same batch again
    bus.commit("c", first[-1].position)
    assert [m.payload for m in bus.read("c", 10)] == [b"m3", b"m4"]
    assert bus.read("other", 1)[0].payload == b"m0"  # consumers are independent
    bus.close()


def test_durable_across_reopen(tmp_path: Path) -> None:
    bus = SqliteBus(tmp_path / "bus.db")
    p = bus.publish(b"x")
    bus.commit("c", p)
    bus.publish(b"y")
    bus.close()
    again = SqliteBus(tmp_path / "bus.db")
    assert again.position("c") == p
    assert [m.payload for m in again.read("c", 10)] == [b"y"]
    again.close()


def test_concurrent_publishers_lose_nothing(tmp_path: Path) -> None:
    bus = SqliteBus(tmp_path / "bus.db")

    def publish(k: int) -> None:
        for i in range(100):
            bus.publish(f"{k}-{i}".encode())

    threads = [threading.Thread(target=publish, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    payloads = [m.payload for m in bus.read("c", 1000)]
    assert len(payloads) == 400 and len(set(payloads)) == 400
    bus.close()
