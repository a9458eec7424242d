"""The harvester demo's live fleet through edge agents: every reading lands once, in order, with its
recorded time, through coverage gaps and a restart of the demo."""

from __future__ import annotations

import time
from datetime import UTC
from pathlib import Path

import httpx
import polars as pl
import pytest

from pitstop.demo import register_live_fleet
from pitstop.demo_agents import AgentFleet, FeedSource, GapPlan, GapTransport
from pitstop.demo_harvesters import TYPE, live_feeds, live_history, open_platform
from pitstop.sim import MachineFeed
from tests.agentkit import landed, serve
from tests.conftest import make_settings

PER_MACHINE = 150


def wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_the_harvester_fleet_lands_once_through_agents_despite_gaps_and_a_restart(tmp_path: Path) -> None:
    platform = open_platform(make_settings(tmp_path / "data"), echo=lambda _: None)
    try:
        readings, machines = live_history()
        machines = machines[:3]
        readings = (
            readings.filter(pl.col("machine_id").is_in(machines))
            .group_by("machine_id", maintain_order=True)
            .head(PER_MACHINE)
        )
        tokens = register_live_fleet(platform, machines, TYPE)
        folder = tmp_path / "data" / "agents"
        gaps = GapPlan(every_s=0.6, min_s=0.2, max_s=0.4, first_s=0.0, seed=3)

        def fleet(url: str) -> AgentFleet:
            feeds = live_feeds(readings, tokens)  # as a restarted demo builds them again
            return AgentFleet(url, feeds, folder, speed=50, gaps=gaps, send_interval_s=0.05, retry_max_s=0.2)

        with serve(platform) as url:
            first = fleet(url)
            first.start()
            wait(lambda: first.stats.to_dict()["sent"] >= len(machines) * PER_MACHINE // 3, 20, "a third")
            first.stop()  # the demo stopped part-way: some readings in the buffers, some not read yet
            stopped = first.stats.to_dict()
            assert 0 < stopped["sent"] < len(machines) * PER_MACHINE

            second = fleet(url)
            assert second.remaining() == len(machines) * PER_MACHINE - stopped["sent"]
            second.start()
            try:
                wait(lambda: second.stats.to_dict()["finished"], 30, "the fleet to finish")
                stats = second.stats.to_dict()
            finally:
                second.stop()
        assert stats["agents"] == len(machines) and stats["buffered"] == 0
        assert stats["gaps"] >= len(machines) and stats["retries"] > 0, "the links really went down"
        assert stats["accepted"] == stats["sent"] == len(machines) * PER_MACHINE
        for machine_id in machines:
            lake = landed(platform, machine_id)
            recorded = readings.filter(pl.col("machine_id") == machine_id)
            assert lake["seq"].to_list() == list(range(PER_MACHINE)), "once each, in order"
            assert lake["ts"].dt.replace_time_zone("UTC").to_list() == [
                t.astimezone(UTC) for t in recorded["ts"].to_list()
            ], "each reading keeps its recorded time"
            assert lake["engine_rpm"].to_list() == recorded["engine_rpm"].to_list()
    finally:
        platform.close()


def test_a_feed_source_advances_at_its_speed_and_resumes_from_its_position() -> None:
    feed = MachineFeed("m", "t", list(range(1, 101)), [{"s": float(i)} for i in range(100)])
    source = FeedSource(feed, speed=50)
    source.open("40")
    time.sleep(0.2)
    chunk = source.read(0.1)
    assert chunk is not None
    got = [r.values["s"] for r in chunk.readings]
    assert got[0] == 40.0 and 5 <= len(got) <= 20, "about speed × elapsed readings, from the position"
    assert chunk.position == str(40 + len(got))
    assert not source.done
    source.ack(chunk.position)
    assert source.acked == 40 + len(got)


def test_a_gap_transport_fails_to_connect_only_inside_its_gaps() -> None:
    clock = [0.0]
    inner = httpx.MockTransport(lambda request: httpx.Response(202))
    transport = GapTransport([(1.0, 2.0)], inner=inner, now=lambda: clock[0])
    with httpx.Client(transport=transport, base_url="http://x") as client:
        assert client.get("/").status_code == 202
        clock[0] = 1.5
        with pytest.raises(httpx.ConnectError):
            client.get("/")
        clock[0] = 2.0
        assert client.get("/").status_code == 202
    assert (transport.requests, transport.failed, transport.gaps_begun()) == (3, 1, 1)


def test_each_machine_has_its_own_seeded_gaps() -> None:
    plan = GapPlan(every_s=180, min_s=15, max_s=45, first_s=30, seed=1)
    one, two = plan.schedule("HV-001", 3600), plan.schedule("HV-002", 3600)
    assert one != two and one == plan.schedule("HV-001", 3600)
    for start, end in one:
        assert start >= 30 and 15 <= end - start <= 45
    assert 8 <= len(one) <= 40
