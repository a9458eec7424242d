"""The agent's sender waits up to ``send_interval_s`` to fill a batch, whatever the source's pace:
a source that hands over one reading at a time must not cost one request per reading."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from pitstop.agent.link import Link
from pitstop.agent.runner import Agent, AgentConfig
from pitstop.agent.sources import Chunk, SourceReading
from pitstop.platform import Platform
from tests.agentkit import landed, serve, token_file, turbofan_rows


class OneAtATime:
    """A source that hands over one reading every ``every_s`` seconds, ``n`` in all."""

    def __init__(self, n: int, every_s: float) -> None:
        self.rows = turbofan_rows(n)
        self.every_s = every_s
        self.taken = 0

    def open(self, position: str | None) -> None:
        self.taken = int(position) if position else 0

    def read(self, timeout: float) -> Chunk | None:
        if self.taken >= len(self.rows):
            time.sleep(timeout)
            return None
        time.sleep(self.every_s)
        self.taken += 1
        return Chunk([SourceReading(self.rows[self.taken - 1])], str(self.taken))

    def ack(self, position: str | None) -> None:
        pass

    def close(self) -> None:
        pass


class CountingTransport(httpx.HTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.posts = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.posts += request.method == "POST"
        return super().handle_request(request)


def test_a_trickling_source_is_sent_in_batches_of_one_send_interval(
    platform: Platform, tmp_path: Path
) -> None:
    token = token_file(platform, tmp_path, "edge-1").read_text().strip()
    with serve(platform) as url:
        transport = CountingTransport()
        config = AgentConfig(
            server=url,
            token=token,
            machine_id="edge-1",
            source="trickle",
            folder=tmp_path / "agent",
            send_interval_s=0.5,
            edge_scoring=False,
        )
        agent = Agent(config, source=OneAtATime(60, 0.02), link=Link(url, token, transport=transport))
        agent.start()
        try:
            assert agent.wait_drained(30)
        finally:
            agent.stop()
    assert len(landed(platform, "edge-1")) == 60
    assert transport.posts <= 6, f"{transport.posts} requests for ~1.2 s of readings at a 0.5 s send interval"
