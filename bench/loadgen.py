"""The benchmarks' HTTP client: minimal keep-alive HTTP/1.1 on asyncio streams.

A load generator should cost the machine as little CPU as possible (httpx spent about half a
core here at 25k readings/s).
"""

from __future__ import annotations

import asyncio


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(
        self, path: str, body: bytes, token: str | None = None, content_type: str = "application/json"
    ) -> tuple[int, bytes]:
        """POST a body (JSON unless ``content_type`` says otherwise); the status and the response body."""
        return await self.request("POST", path, body, token, content_type)

    async def get(self, path: str, token: str | None = None) -> tuple[int, bytes]:
        return await self.request("GET", path, None, token)

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None,
        token: str | None,
        content_type: str = "application/json",
    ) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        content = "" if body is None else f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{auth}{content}\r\n".encode()
        self.writer.write(head + (body or b""))
        await self.writer.drain()
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
