"""The agent's link to the server: one HTTP client, zstd-compressed batches, and what each answer means.

``hello`` asks the server for the machine's last accepted seq (and reads its clock from ``Date``);
``post`` sends one batch of readings as JSON compressed with zstd (``Content-Encoding: zstd``)
and sorts the answer into an ``Outcome``: delivered (202), refused readings (422 with their
indexes), a batch too large (413), an error to wait out (429, 503, other 5xx, no connection, with
the server's ``Retry-After`` when it gave one) or a refusal of the device (401, 403).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import httpx

from pitstop.agent.clock import server_time_us

log = logging.getLogger(__name__)

READINGS = "/api/v1/readings"
STATE = "/api/v1/agent/state"


@dataclass
class Outcome:
    """What one request came to."""

    kind: str  # delivered | refused | too_large | retry | denied | unsupported
    status: int | None = None
    message: str = ""
    retry_after: float | None = None
    server_us: int | None = None  # the server's clock (Date), when it answered
    sent_mono: int = 0
    got_mono: int = 0
    body: dict[str, Any] = field(default_factory=dict)
    problems: dict[int, tuple[str, str]] = field(default_factory=dict)  # index -> (code, message)


class Link:
    """HTTP to one Pitstop server with one device token."""

    def __init__(
        self,
        server: str,
        token: str,
        *,
        compress: bool = True,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.compress = compress
        self.client = httpx.Client(
            base_url=self.server,
            headers={"Authorization": f"Bearer {token}", "User-Agent": "pitstop-agent"},
            timeout=httpx.Timeout(timeout_s, connect=min(5.0, timeout_s)),
            transport=transport,
        )
        self._zstd: Any = None
        if compress:
            import zstandard

            self._zstd = zstandard.ZstdCompressor(level=3)

    def hello(self, mono: Any) -> Outcome:
        """GET the machine's state at the server: ``body`` has ``last_seq`` (-1: none yet)."""
        return self._request("GET", STATE, mono)

    def post(self, readings: list[dict[str, Any]], mono: Any) -> Outcome:
        body = json.dumps({"readings": readings}, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        if self._zstd is not None:
            body = self._zstd.compress(body)
            headers["Content-Encoding"] = "zstd"
        outcome = self._request("POST", READINGS, mono, content=body, headers=headers)
        if outcome.kind == "unsupported" and self._zstd is not None:  # an older server: plain JSON
            log.warning("the server does not take zstd bodies (%s): sending uncompressed", outcome.message)
            self._zstd = None
            return self.post(readings, mono)
        return outcome

    def _request(self, method: str, path: str, mono: Any, **kwargs: Any) -> Outcome:
        sent = mono()
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:  # no connection, a reset, a timeout, a broken answer
            return Outcome(
                "retry", None, f"{type(exc).__name__}: {exc}"[:300], sent_mono=sent, got_mono=mono()
            )
        got = mono()
        return _sort(response, sent, got)

    def close(self) -> None:
        self.client.close()


def _sort(response: httpx.Response, sent: int, got: int) -> Outcome:
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    raw = body.get("error")
    error: dict[str, Any] = raw if isinstance(raw, dict) else {}
    message = str(error.get("message") or response.text[:200])
    out = Outcome(
        "retry",
        status,
        message,
        _retry_after(response),
        server_time_us(response.headers.get("date")),
        sent,
        got,
        body,
    )
    if status in (200, 202):
        out.kind = "delivered"
    elif status == 413:
        out.kind = "too_large"
    elif status == 415 and error.get("code") == "unsupported_encoding":
        out.kind = "unsupported"
    elif status in (401, 403):
        out.kind = "denied"
    elif status == 422:
        details = error.get("details")
        if isinstance(details, list):
            for item in details:
                if isinstance(item, dict) and isinstance(item.get("index"), int):
                    out.problems[item["index"]] = (
                        str(item.get("code", "invalid")),
                        str(item.get("message", "")),
                    )
        out.kind = "refused"
        if error.get("code") == "batch_too_large":
            out.kind = "too_large"
    elif status == 404 and STATE in str(response.request.url):
        out.kind = "unsupported"  # a server without the agent routes
    elif status == 400:
        out.kind = "refused"
    # anything else (404 for a wrong server URL, 405, 5xx, 429 …) says nothing about the readings:
    # they are kept and sent again; only 400 and 422 set readings aside
    return out


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
