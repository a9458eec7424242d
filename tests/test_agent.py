"""The device agent's core: its durable buffer, clock correction, sources, and forwarding through a
real server (uvicorn on a port) into the lake."""

from __future__ import annotations

import gzip
import json
import threading
import time
from pathlib import Path

import httpx
import pytest
import zstandard
from click.testing import CliRunner
from fastapi.testclient import TestClient

from pitstop.agent.buffer import Buffer, Incoming
from pitstop.agent.clock import BootSpan, judge, placements
from pitstop.agent.runner import Agent, AgentConfig, status
from pitstop.agent.sources import open_source
from pitstop.agent.sources.base import SourceError
from pitstop.cli import cli
from pitstop.errors import AgentError
from pitstop.ingest import DeviceRegistry
from pitstop.platform import Platform
from pitstop.schema import TURBOFAN
from pitstop.web import create_app
from tests.agentkit import landed, serve, token_file, turbofan_rows
from tests.conftest import free_port

SENSORS = TURBOFAN.sensor_names
YEAR_US = 365 * 86_400 * 1_000_000


class SimClock:
    """A clock whose wall time can be wrong (a box without a real-time clock) and whose boot can
    change; monotonic time follows the real one."""

    def __init__(self, wall_error_us: int = 0, boot: str = "boot-1") -> None:
        self.wall_error_us = wall_error_us
        self.boot_id = boot
        self.mono_base = 0

    def wall_us(self) -> int:
        return time.time_ns() // 1000 + self.wall_error_us

    def mono_us(self) -> int:
        return time.monotonic_ns() // 1000 + self.mono_base

    def boot(self) -> str:
        return self.boot_id

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def incoming(n: int, boot: str = "b", mono: int = 0, wall: int = 0) -> list[Incoming]:
    return [Incoming({"s": float(i)}, boot, mono + i, wall + i) for i in range(n)]


def write_csv(path: Path, rows: list[dict[str, float]], start: int = 0, header: bool = True) -> None:
    with path.open("a") as fh:
        if header:
            fh.write(",".join(["line", *SENSORS]) + "\n")
        for i, row in enumerate(rows, start):
            fh.write(",".join([str(i), *(repr(row[s]) for s in SENSORS)]) + "\n")


def config(tmp_path: Path, url: str, token: Path, source: str, **more: object) -> AgentConfig:
    return AgentConfig(
        server=url,
        token=token.read_text().strip(),
        machine_id="edge-1",
        source=source,
        folder=tmp_path / "agent",
        send_interval_s=0.05,
        retry_max_s=0.5,
        edge_scoring=False,
        **more,  # type: ignore[arg-type]
    )


def drain(agent: Agent) -> None:
    """Run the agent until its buffer is empty, then stop it."""
    agent.start()
    try:
        assert agent.wait_drained(30), "the agent did not deliver everything"
    finally:
        agent.stop()


# -- the buffer ----------------------------------------------------------------------------------


def test_seqs_are_assigned_once_and_survive_a_reopen(tmp_path: Path) -> None:
    buffer = Buffer(tmp_path / "b.db")
    assert buffer.append(incoming(3)) == [0, 1, 2]
    buffer.remove_through(1)
    buffer.close()
    again = Buffer(tmp_path / "b.db")
    assert again.depth == 1
    assert again.append(incoming(2)) == [3, 4], "a seq is never given twice, even after the rows left"
    assert [r.seq for r in again.oldest(10)] == [2, 3, 4]


def test_a_full_buffer_thins_the_oldest_half_then_drops_and_counts_both(tmp_path: Path) -> None:
    buffer = Buffer(tmp_path / "b.db", max_readings=8, max_level=1)
    buffer.append(incoming(8))
    buffer.append(incoming(1, mono=100))  # full: the oldest half (4) is thinned to 2
    seqs = [r.seq for r in buffer.oldest(20)]
    buffer.release()  # nothing in flight any more
    assert seqs == [0, 2, 4, 5, 6, 7, 8]
    assert buffer.counts()["thinned"] == 2
    buffer.append(incoming(2, mono=200))  # full again: the oldest were thinned once (max_level)
    counts = buffer.counts()
    assert counts["depth"] == 8
    assert counts["thinned"] + counts["dropped"] == 3, "every reading removed is counted"
    assert [r.seq for r in buffer.oldest(20)][-2:] == [9, 10], "the newest readings are kept"


def test_readings_in_flight_are_never_thinned(tmp_path: Path) -> None:
    buffer = Buffer(tmp_path / "b.db", max_readings=4)
    buffer.append(incoming(4))
    in_flight = [r.seq for r in buffer.oldest(2)]
    buffer.append(incoming(1, mono=10))
    assert set(in_flight) <= {r.seq for r in buffer.oldest(10)}


def test_unsent_readings_are_renumbered_above_what_the_server_holds(tmp_path: Path) -> None:
    buffer = Buffer(tmp_path / "b.db")
    buffer.append(incoming(3))
    assert buffer.renumber(after=-1, start=500) == 500
    assert [r.seq for r in buffer.oldest(5)] == [500, 501, 502]
    assert buffer.append(incoming(1)) == [503]


# -- clocks --------------------------------------------------------------------------------------


def test_a_wall_clock_that_agrees_is_kept_and_one_years_off_is_corrected() -> None:
    mono, wall = 1_000_000, 1_700_000_000_000_000
    good = judge("b", mono, mono + 20_000, wall, wall + 400_000, 5.0, None)
    assert good is not None and good.source == "local" and good.offset_us == wall - (mono + 20_000)
    bad = judge("b", mono, mono + 20_000, wall - YEAR_US, wall, 5.0, None)
    assert bad is not None and bad.source == "server"
    assert abs(bad.offset_us + mono + 10_000 - wall) < 10, "the round trip's middle is the server's time"
    assert judge("b", mono, mono, wall, wall + 2_000_000, 5.0, good.offset_us) is None, (
        "steady within tolerance"
    )


def test_a_boot_that_never_met_the_server_ends_before_the_next_boot_began() -> None:
    true_start_of_b2 = 1_700_000_000_000_000
    spans = [
        BootSpan("b1", None, (10_000_000, 70_000_000), (0, 60_000_000)),  # a 1970 clock
        BootSpan("b2", true_start_of_b2, (5_000_000, 9_000_000), (0, 4_000_000)),
    ]
    placed = placements(spans, current="b2")
    offset, estimated = placed["b1"]
    assert estimated
    assert 70_000_000 + offset == true_start_of_b2 - 1_000_000
    assert placed["b2"] == (true_start_of_b2, False)


# -- sources -------------------------------------------------------------------------------------


def test_tail_resumes_at_the_committed_line_and_waits_for_a_whole_line(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("ts,a,b\n2026-01-01T00:00:00Z,1,2\n2026-01-01T00:00:01Z,3,\n2026-01-01T00:00:02Z,5")
    source = open_source(f"tail:{path}", "m")
    source.open(None)
    chunk = source.read(0.2)
    assert chunk is not None
    assert [r.values for r in chunk.readings] == [{"a": 1.0, "b": 2.0}, {"a": 3.0}]
    assert chunk.readings[0].ts_us == 1_767_225_600_000_000
    assert source.read(0.1) is None, "a line without its newline waits"
    with path.open("a") as fh:
        fh.write(",6\nnot a time,1,2\n2026-01-01T00:00:03Z,x,7\n")
    resumed = open_source(f"tail:{path}", "m")
    resumed.open(chunk.position)  # a restart after the first chunk was committed
    again = resumed.read(0.2)
    assert again is not None
    assert [r.values for r in again.readings] == [{"a": 5.0, "b": 6.0}, {"b": 7.0}]
    assert len(again.errors) == 1 and "not a time" in again.errors[0], "a bad line is reported, not fatal"
    source.close()
    resumed.close()


def test_unknown_sources_and_plugins_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="unknown source"):
        open_source("ftp://somewhere/x", "m")
    with pytest.raises(SourceError, match="no source plugin 'canbus'"):
        open_source("plugin:canbus", "m")
    with pytest.raises(SourceError, match="cannot be imported"):
        open_source("plugin:nowhere.at_all:Source", "m")


def test_the_harvester_simulator_source_continues_where_it_stopped() -> None:
    first = open_source("sim:harvester?seed=3&rate=0", "H-002")
    first.open(None)
    chunk = first.read(0.1)
    assert chunk is not None and len(chunk.readings) == 500
    second = open_source("sim:harvester?seed=3&rate=0", "H-002")
    second.open("400")
    again = second.read(0.1)
    assert again is not None
    assert again.readings[0].values == chunk.readings[400].values


# -- the server side -----------------------------------------------------------------------------


def test_the_server_takes_zstd_and_gzip_bodies_and_refuses_a_bomb(platform: Platform) -> None:
    _, token = DeviceRegistry(platform.db).add("z-1", "turbofan", platform.fleet)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = json.dumps(
        [{"machine_id": "z-1", "ts": "2026-01-01T00:00:00Z", "seq": 1, "values": turbofan_rows(1)[0]}]
    ).encode()
    with TestClient(create_app(platform)) as client:
        zstd = zstandard.ZstdCompressor().compress(body)
        r = client.post("/api/v1/readings", content=zstd, headers={**headers, "Content-Encoding": "zstd"})
        assert r.status_code == 202 and r.json()["accepted"] == 1
        state = client.get("/api/v1/agent/state", headers=headers)
        assert state.status_code == 200 and state.json()["last_seq"] == 1
        again = body.replace(b'"seq": 1', b'"seq": 2')
        r = client.post(
            "/api/v1/readings", content=gzip.compress(again), headers={**headers, "Content-Encoding": "gzip"}
        )
        assert r.status_code == 202 and r.json()["accepted"] == 1
        bomb = zstandard.ZstdCompressor().compress(b" " * (platform.settings.max_body_bytes + 1))
        r = client.post("/api/v1/readings", content=bomb, headers={**headers, "Content-Encoding": "zstd"})
        assert r.status_code == 413
        r = client.post(
            "/api/v1/readings", content=b"\x28\xb5junk", headers={**headers, "Content-Encoding": "zstd"}
        )
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_encoding"
        r = client.post("/api/v1/readings", content=body, headers={**headers, "Content-Encoding": "br"})
        assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_encoding"
        assert client.get("/api/v1/agent/state").status_code == 401


# -- end to end ----------------------------------------------------------------------------------


def test_a_tailed_csv_lands_once_in_order_through_an_outage(platform: Platform, tmp_path: Path) -> None:
    token = token_file(platform, tmp_path, "edge-1")
    log = tmp_path / "logger.csv"
    rows = turbofan_rows(600)
    write_csv(log, rows[:300])
    port = free_port()
    agent = Agent(config(tmp_path, f"http://127.0.0.1:{port}", token, f"tail:{log}", batch_max=100))
    agent.start()
    try:
        time.sleep(0.5)  # no server yet: everything waits in the buffer
        assert agent.buffer.depth == 300
        with serve(platform, port):
            assert agent.wait_drained(30)
            write_csv(log, rows[300:], start=300, header=False)
            time.sleep(0.3)
            assert agent.wait_drained(30)
        report = status(tmp_path / "agent")
        assert report["buffer_depth"] == 0 and report["sent"] == 600 and report["link"] == "up"
        assert report["ignored_fields"] == ["line"], "a column the type lacks is left out, and said so"
    finally:
        agent.stop()
    lake = landed(platform, "edge-1")
    assert lake.height == 600
    assert lake["seq"].to_list() == list(range(600)), "every reading once, in the source's order"
    assert lake[SENSORS[0]].to_list() == [r[SENSORS[0]] for r in rows]


def test_a_clock_years_behind_is_corrected_from_the_servers_date(platform: Platform, tmp_path: Path) -> None:
    token = token_file(platform, tmp_path, "edge-1")
    clock = SimClock(wall_error_us=-30 * YEAR_US)  # booted without a real-time clock: 1996
    source = tmp_path / "in.ndjson"
    source.write_text("".join(json.dumps(r) + "\n" for r in turbofan_rows(20)))
    with serve(platform) as url:
        agent = Agent(config(tmp_path, url, token, f"tail:{source}"), clock=clock)
        drain(agent)
    lake = landed(platform, "edge-1")
    assert lake.height == 20
    now = time.time()
    stamps = [t.timestamp() for t in lake["ts"].to_list()]
    assert all(abs(now - t) < 60 for t in stamps), "stamped by the server's clock, not 1996"
    assert stamps == sorted(stamps)


def test_a_new_buffer_for_a_machine_that_sent_before_starts_above_its_seqs(
    platform: Platform, tmp_path: Path
) -> None:
    token = token_file(platform, tmp_path, "edge-1")
    source = tmp_path / "in.ndjson"
    source.write_text("".join(json.dumps(r) + "\n" for r in turbofan_rows(10)))
    with serve(platform) as url:
        headers = {"Authorization": f"Bearer {token.read_text().strip()}"}
        body = [
            {"machine_id": "edge-1", "ts": "2026-01-01T00:00:00Z", "seq": 41, "values": turbofan_rows(1)[0]}
        ]
        assert httpx.post(f"{url}/api/v1/readings", json=body, headers=headers).status_code == 202
        agent = Agent(config(tmp_path, url, token, f"tail:{source}"))
        drain(agent)
    lake = landed(platform, "edge-1")
    assert lake["seq"].to_list() == [41, *range(42, 52)], (
        "none of the agent's readings was taken for a re-send"
    )


def test_refused_readings_are_kept_aside_and_the_rest_is_delivered(
    platform: Platform, tmp_path: Path
) -> None:
    token = token_file(platform, tmp_path, "edge-1")
    rows = turbofan_rows(5)
    lines = [json.dumps({**r, "ts": "2026-01-01T00:00:00Z"}) for r in rows]
    lines[2] = json.dumps({**rows[2], "ts": "2099-01-01T00:00:00Z"})  # the server refuses the future
    source = tmp_path / "in.ndjson"
    source.write_text("\n".join(lines) + "\n")
    with serve(platform) as url:
        agent = Agent(config(tmp_path, url, token, f"tail:{source}"))
        drain(agent)
    assert status(tmp_path / "agent")["rejected"] == 1
    assert landed(platform, "edge-1")["seq"].to_list() == [0, 1, 3, 4]


def test_agent_status_command_reports_the_buffer(platform: Platform, tmp_path: Path) -> None:
    token = token_file(platform, tmp_path, "edge-1")
    source = tmp_path / "in.ndjson"
    source.write_text("".join(json.dumps(r) + "\n" for r in turbofan_rows(7)))
    port = free_port()  # nothing listens: the link stays down
    agent = Agent(config(tmp_path, f"http://127.0.0.1:{port}", token, f"tail:{source}"))
    agent.start()
    try:
        deadline = time.monotonic() + 10
        while agent.buffer.depth < 7 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        result = CliRunner().invoke(cli, ["agent", "status", "--dir", str(tmp_path / "agent"), "--json"])
    finally:
        agent.stop()
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["buffer_depth"] == 7
    assert report["link"] == "down" and report["running"]
    assert report["last_send"] is None
    text = CliRunner().invoke(cli, ["agent", "status", "--dir", str(tmp_path / "agent")])
    assert "7 readings waiting" in text.output and "not running" in text.output


def test_the_agent_command_says_what_is_missing(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["agent", "--machine-id", "m"], env={"PITSTOP_AGENT_DIR": str(tmp_path)})
    assert result.exit_code == 2
    assert "agent_config" in result.output and "--server" in result.output and "--source" in result.output


def test_a_sigterm_style_stop_keeps_everything_read(platform: Platform, tmp_path: Path) -> None:
    token = token_file(platform, tmp_path, "edge-1")
    port = free_port()
    cfg = config(tmp_path, f"http://127.0.0.1:{port}", token, "sim:harvester?rate=0")
    agent = Agent(cfg)
    agent.start()
    deadline = time.monotonic() + 10
    while agent.buffer.depth < 1000 and time.monotonic() < deadline:
        time.sleep(0.05)
    stopper = threading.Thread(target=agent.stop)
    stopper.start()
    stopper.join(15)
    again = Buffer(cfg.folder / "buffer.db")
    counts = again.counts()
    assert counts["depth"] == counts["next_seq"] >= 1000, "every reading taken from the source is buffered"


def test_a_wrong_server_url_keeps_every_reading(platform: Platform, tmp_path: Path) -> None:
    token = token_file(platform, tmp_path, "edge-1")
    source = tmp_path / "in.ndjson"
    source.write_text("".join(json.dumps(r) + "\n" for r in turbofan_rows(5)))
    with serve(platform) as url:
        agent = Agent(config(tmp_path, f"{url}/not-pitstop", token, f"tail:{source}"))
        agent.start()
        try:
            deadline = time.monotonic() + 10
            while status(tmp_path / "agent")["link"] != "error" and time.monotonic() < deadline:
                time.sleep(0.05)
            report = status(tmp_path / "agent")
        finally:
            agent.stop()
    assert report["link"] == "error" and "404" not in str(report["rejected"])
    assert report["buffer_depth"] == 5 and report["rejected"] == 0, "a 404 is about the URL, not the readings"


def test_a_long_outage_keeps_the_buffer_bounded_thins_old_readings_first_then_drops(tmp_path: Path) -> None:
    buffer = Buffer(tmp_path / "b.db", max_readings=200, max_level=3)
    for k in range(100):
        buffer.append(incoming(50, mono=k * 50))
    counts = buffer.counts()
    assert counts["depth"] <= 200
    assert counts["thinned"] > 0 and counts["dropped"] > 0, "past max_level the oldest are dropped"
    assert counts["thinned"] + counts["dropped"] + counts["depth"] == 5000, "every reading is accounted for"
    levels = [r.level for r in buffer.oldest(300)]
    assert max(levels) <= 3
    assert levels[-1] == 0 and levels[0] >= levels[-1], "older readings are thinner"


def test_tail_survives_a_late_file_a_long_line_and_a_rotation_with_a_new_header(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    first = open_source(f"tail:{path}", "m")
    first.open(json.dumps({"inode": 1, "offset": 10, "print": "", "header": "a,b"}))  # not there yet
    path.write_text("a,b\n1,2\n" + "9" * (1 << 21) + "\n3,4\n")
    chunks = [first.read(0.3) for _ in range(3)]
    readings = [r.values for c in chunks if c for r in c.readings]
    errors = [e for c in chunks if c for e in c.errors]
    assert readings == [{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 4.0}], "a new file is read from its start"
    assert any("skipped" in e for e in errors), "a line over 1 MiB is skipped and said"
    path.rename(tmp_path / "log.csv.1")
    path.write_text("b,a\n5,6\n")  # rotated, and the new file has its columns the other way round
    after = first.read(0.5)
    assert after is not None and [r.values for r in after.readings] == [{"b": 5.0, "a": 6.0}]
    first.close()


def test_epoch_milliseconds_are_a_source_error_not_a_year_56000(tmp_path: Path) -> None:
    path = tmp_path / "in.ndjson"
    path.write_text('{"ts": 1767225600000, "a": 1}\n{"ts": 1767225600, "a": 2}\n{"ts": "inf", "a": 3}\n')
    source = open_source(f"tail:{path}", "m")
    source.open(None)
    chunk = source.read(0.3)
    source.close()
    assert chunk is not None
    assert [r.values for r in chunk.readings] == [{"a": 2.0}]
    assert len(chunk.errors) == 2


def test_a_second_agent_on_the_same_folder_is_refused(platform: Platform, tmp_path: Path) -> None:
    token = token_file(platform, tmp_path, "edge-1")
    source = tmp_path / "in.ndjson"
    source.write_text("")
    cfg = config(tmp_path, "http://127.0.0.1:9", token, f"tail:{source}")
    first = Agent(cfg)
    first.start()
    try:
        second = Agent(cfg)
        with pytest.raises(AgentError, match="another agent is running"):
            second.start()
        assert status(cfg.folder)["running"]
    finally:
        first.stop()
    assert not status(cfg.folder)["running"]


def test_the_server_reads_every_zstd_frame_and_refuses_a_truncated_one(platform: Platform) -> None:
    _, token = DeviceRegistry(platform.db).add("z-2", "turbofan", platform.fleet)
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/x-ndjson",
        "Content-Encoding": "zstd",
    }
    lines = [
        json.dumps(
            {"machine_id": "z-2", "ts": "2026-01-01T00:00:00Z", "seq": s, "values": turbofan_rows(1)[0]}
        )
        + "\n"
        for s in range(3)
    ]
    frames = b"".join(zstandard.ZstdCompressor().compress(line.encode()) for line in lines)
    with TestClient(create_app(platform)) as client:
        r = client.post("/api/v1/readings", content=frames[:-4], headers=headers)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_encoding"
        r = client.post("/api/v1/readings", content=frames, headers=headers)
        assert r.status_code == 202 and r.json()["accepted"] == 3
