"""Scale-out processing: machines split across NATS partitions, each owned by one worker by lease;
a dead worker's partitions are taken over and nothing is lost or written twice."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from pitstop.bus.nats import NatsBus, partition_of
from pitstop.config import load_settings
from pitstop.errors import BusError
from pitstop.platform import Platform
from pitstop.processor.partitions import PartitionWorker
from pitstop.schema import TURBOFAN, Reading, encode_readings
from pitstop.sim import shipped

MACHINES = {f"eng-{u:03d}": u for u in range(1, 9)}  # the trained fleet's live machines


def publish(platform: Platform, start: int, n: int) -> None:
    """``n`` cycles of each machine from ``start``, one batch per machine, keyed by machine."""
    now = datetime.now(UTC)
    for machine, unit in MACHINES.items():
        rows = shipped("fd001_test").filter(unit=unit).sort("cycle").slice(start, n).to_dicts()
        batch = [
            Reading(
                machine_id=machine,
                ts=now - timedelta(seconds=len(rows) - i),
                seq=int(r["cycle"]),
                values={s: r[s] for s in TURBOFAN.sensor_names},
            )
            for i, r in enumerate(rows)
        ]
        platform.bus.publish(encode_readings(batch, platform.lake.sensors), machine)


def drain(*workers: PartitionWorker, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = sum(w.run_once() for w in workers)
        if done == 0 and all(w.lag() == 0 for w in workers):
            return
    raise AssertionError("the workers did not drain the bus")


def landed(platform: Platform) -> pl.DataFrame:
    return platform.lake.read("telemetry", columns=["machine_id", "seq"], machine_ids=list(MACHINES))


@pytest.fixture
def cluster(trained_dir: Path, tmp_path: Path, nats_url: str) -> Iterator[tuple[Platform, Platform]]:
    """Two processes' worth of platforms over one data dir and a 4-partition NATS stream."""
    data_dir = tmp_path / "data"
    shutil.copytree(trained_dir, data_dir)
    settings = load_settings(
        None,
        data_dir=data_dir,
        bus_backend="nats",
        nats_url=nats_url,
        nats_stream=f"P{uuid.uuid4().hex[:8]}",
        bus_partitions=4,
        lease_ttl_s=1.0,
    )
    a, b = Platform.open(settings), Platform.open(settings)
    yield a, b
    a.close()
    b.close()


def test_batches_go_to_their_machines_partition(cluster: tuple[Platform, Platform]) -> None:
    platform, _ = cluster
    bus = platform.bus
    assert isinstance(bus, NatsBus)
    publish(platform, 0, 3)
    for partition in range(4):
        view = bus.partition(partition, f"look-{partition}")
        machines = {
            m for msg in view.read(f"look-{partition}", 100) for m in _machines(msg.payload, platform)
        }
        assert machines == {m for m in MACHINES if partition_of(m, 4) == partition}
    with pytest.raises(BusError, match="machine id"):
        bus.publish(b"x")  # a partitioned bus cannot place a batch without its machine


def _machines(payload: bytes, platform: Platform) -> set[str]:
    from pitstop.schema import decode_table

    return set(decode_table(payload).column("machine_id").to_pylist())


def test_two_workers_share_the_partitions_and_a_dead_ones_are_taken_over(
    cluster: tuple[Platform, Platform],
) -> None:
    a, b = cluster
    first, second = PartitionWorker(a, "worker-a"), PartitionWorker(b, "worker-b")
    first.balance()  # alone: it takes every partition
    assert sorted(first.owned) == [0, 1, 2, 3]
    second.balance()  # two live workers now: a share of 2, nothing free yet
    first.balance()  # over its share: it hands two partitions over
    second.balance()
    assert len(first.owned) == len(second.owned) == 2
    assert set(first.owned).isdisjoint(second.owned)

    # the first worker's leases are renewed on their own thread while it lives, as in `pitstop
    # process`: a slow lake write must not let them lapse before the death this test is about
    dead = threading.Event()

    def renew() -> None:
        while not dead.wait(0.1):
            first.beat()

    beater = threading.Thread(target=renew, daemon=True)
    beater.start()
    publish(a, 0, 20)
    drain(first, second)
    rows = landed(a)
    assert rows.height == 8 * 20 and rows.unique().height == rows.height

    # the first worker reads a batch, writes it to the lake, and dies before the bus commit
    publish(a, 20, 10)
    victim = min(first.owned)
    proc = first.owned[victim]

    def die(*_: object) -> None:
        raise SystemExit("killed between the lake commit and the bus commit")

    proc.bus.commit = die  # type: ignore[method-assign]
    try:
        with pytest.raises(SystemExit):
            proc.run_once()
    finally:
        dead.set()
        beater.join()
    assert landed(a).height > 8 * 20  # its rows are in the lake, its bus position is not committed
    # it renews no lease from now on; they lapse and the other worker takes its partitions
    time.sleep(1.3)
    started = time.monotonic()
    while len(second.owned) < 4 and time.monotonic() - started < 10:
        second.balance()
        time.sleep(0.05)
    assert sorted(second.owned) == [0, 1, 2, 3]
    drain(second)
    rows = landed(a)
    assert rows.height == 8 * 30, "every reading landed"
    assert rows.unique().height == rows.height, "none twice"


def test_a_stream_made_with_other_partitions_is_refused(nats_url: str) -> None:
    stream = f"Q{uuid.uuid4().hex[:8]}"
    NatsBus(nats_url, stream=stream, partitions=4).close()
    with pytest.raises(BusError, match="bus_partitions"):
        NatsBus(nats_url, stream=stream, partitions=2)


def test_a_partition_taken_back_reads_from_its_ack_floor(nats_url: str) -> None:
    """A reads and commits; B takes the partition, reads a batch and dies before committing; A
    takes it back: A must read B's batch again, not go on after it (lost readings)."""
    stream = f"R{uuid.uuid4().hex[:8]}"
    a, b = NatsBus(nats_url, stream=stream, partitions=2), NatsBus(nats_url, stream=stream, partitions=2)
    try:
        key = next(m for m in (f"m{i}" for i in range(100)) if partition_of(m, 2) == 1)
        mine, theirs = a.partition(1, "c-p1"), b.partition(1, "c-p1")
        for i in range(4):
            a.publish(f"x{i}".encode(), key)
        first = mine.read("c-p1", 10)
        mine.commit("c-p1", first[-1].position)
        for i in range(4, 10):
            a.publish(f"x{i}".encode(), key)
        theirs.forget()
        lost = [m.position for m in theirs.read("c-p1", 3)]  # ... and B dies here
        mine.forget()  # what a worker does when it takes a partition (back)
        again = [m.position for m in mine.read("c-p1", 10)]
        assert again[:3] == lost, "the dead owner's uncommitted batch is read again"
        assert mine.head() == again[-1] and mine.backlog() == len(again)
    finally:
        a.close()
        b.close()


def test_a_worker_whose_lease_lapsed_writes_nothing(cluster: tuple[Platform, Platform]) -> None:
    """Fencing: a worker that missed its renewals (a pause) stops before the lake, the ops DB and
    the bus; the ops DB refuses a position at or below the one it holds."""
    from pitstop.errors import LeaseLostError
    from pitstop.processor.record import recorded_position

    a, _ = cluster
    worker = PartitionWorker(a, "worker-paused")
    worker.balance()
    publish(a, 0, 5)
    before = landed(a).height
    for partition in worker.owned:
        worker.leases.valid_until[partition] = 0.0  # as if its renewals stopped long ago
    worker.beat = lambda: None  # type: ignore[method-assign]  # paused: no renewal in this round
    assert worker.run_once() == 0
    assert worker.owned == {} and landed(a).height == before, "nothing written past the fence"

    del worker.beat  # awake again
    worker.balance()  # its leases are still there (it released them): it takes them again
    drain(worker)
    assert landed(a).height == before + 8 * 5
    proc = next(iter(worker.owned.values()))
    held = recorded_position(a.db, proc.consumer)
    with pytest.raises(LeaseLostError):
        proc.recorder.record(
            pl.DataFrame(schema={"machine_id": pl.String, "seq": pl.Int64, "ts": pl.Datetime("us", "UTC")}),
            {},
            {},
            {},
            {},
            {},
            lambda t: a.deployments[t],
            proc.consumer,
            held,
        )
