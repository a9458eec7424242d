"""A small TCP proxy for tests that breaks connections on purpose (toxiproxy-like).

It listens on a free local port and forwards to one upstream ``host:port``. Its ``mode`` can be
switched at any time, and applies to the connections already open as well as to new ones:

- ``pass``: forward both ways.
- ``drop``: a new connection is closed at once with a TCP RST; an open one is reset too.
- ``stall``: accept, forward nothing, hold the connection open (the bytes wait in the kernel and
  flow again when the mode changes back to ``pass``).
- ``reset``: forward a random number of bytes in one direction (chosen per connection: a cut in the
  request or a cut in the response), then close both sides with a RST (``SO_LINGER`` 0). A cut in
  the response is the hard case for a sender: the server took the request, the sender never hears.

``cycle(seed)`` switches between the modes on a seeded random schedule (each held for a fraction of
a second to a couple of seconds) on a background thread. ``stats`` counts what was done.

    with FaultProxy(("127.0.0.1", port)) as proxy:
        proxy.cycle(seed=7)
        ... point a client at proxy.url ...
"""

from __future__ import annotations

import contextlib
import random
import select
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Sequence
from types import TracebackType

MODES = ("pass", "drop", "stall", "reset")
TICK_S = 0.05  # how often a quiet connection looks at the mode again


def _rst(sock: socket.socket) -> None:
    """Close with a RST instead of a FIN: the peer sees 'connection reset by peer'."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class _Link:
    """One client connection and its upstream connection, pumped by two threads."""

    def __init__(self, proxy: FaultProxy, client: socket.socket, upstream: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.closed = threading.Event()
        self._lock = threading.Lock()
        self.stalled = False
        self.budget: dict[str, int] | None = None  # bytes each direction may still carry (reset mode)

    def start(self) -> None:
        for src, dst, way in ((self.client, self.upstream, "up"), (self.upstream, self.client, "down")):
            threading.Thread(target=self._pump, args=(src, dst, way), daemon=True).start()

    def kill(self, why: str) -> None:
        with self._lock:
            if self.closed.is_set():
                return
            self.closed.set()
        self.proxy.stats[why] += 1
        _rst(self.client)
        _rst(self.upstream)

    def close(self) -> None:
        with self._lock:
            if self.closed.is_set():
                return
            self.closed.set()
        self.client.close()
        self.upstream.close()

    def _allowance(self, way: str) -> int:
        with self._lock:
            if self.budget is None:  # this connection's cut: in the request or in the response
                rng = self.proxy.rng
                cut = rng.choice(("up", "down"))
                limit = rng.randint(0, 64 * 1024) if cut == "up" else rng.randint(0, 400)
                self.budget = {"up": 1 << 62, "down": 1 << 62, cut: limit}
            return self.budget[way]

    def _pump(self, src: socket.socket, dst: socket.socket, way: str) -> None:
        try:
            while not self.closed.is_set():
                mode = self.proxy.mode
                if mode == "drop":
                    self.kill("dropped")
                    return
                if mode == "stall":
                    if not self.stalled:
                        self.stalled = True
                        self.proxy.stats["stalled"] += 1
                    time.sleep(TICK_S)
                    continue
                if not select.select([src], [], [], TICK_S)[0]:
                    continue
                data = src.recv(65536)
                if not data:
                    self.close()
                    return
                if self.proxy.mode == "reset":
                    left = self._allowance(way)
                    if len(data) >= left:
                        if left:
                            dst.sendall(data[:left])
                        self.kill("reset")
                        return
                    with self._lock:
                        assert self.budget is not None
                        self.budget[way] -= len(data)
                dst.sendall(data)
        except (OSError, ValueError):  # the other pump closed the sockets
            self.close()


class FaultProxy:
    """TCP proxy from ``url`` (a free local port) to ``upstream``; see the module's docstring."""

    def __init__(self, upstream: tuple[str, int], *, seed: int = 0) -> None:
        self.upstream = upstream
        self.mode = "pass"
        self.rng = random.Random(seed)
        self.stats: Counter[str] = Counter()
        self.history: list[tuple[str, float]] = []  # (mode, seconds held), from cycle()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(TICK_S)
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self._cycling = threading.Event()
        self._links: list[_Link] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: one of {', '.join(MODES)}")
        self.mode = mode

    def cycle(
        self,
        seed: int,
        modes: Sequence[str] = MODES,
        hold_s: tuple[float, float] = (0.2, 1.5),
    ) -> None:
        """Switch to a random mode of ``modes`` every ``hold_s`` (a random span), until
        ``calm()`` or ``close()``."""
        rng = random.Random(seed)
        self._cycling.set()

        def run() -> None:
            while self._cycling.is_set() and not self._stop.is_set():
                mode, hold = rng.choice(list(modes)), rng.uniform(*hold_s)
                self.set(mode)
                self.history.append((mode, round(hold, 2)))
                self._stop.wait(hold)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self._threads.append(thread)

    def calm(self) -> None:
        """Stop cycling and pass everything again."""
        self._cycling.clear()
        time.sleep(2 * TICK_S)
        self.set("pass")

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.stats["connections"] += 1
            if self.mode == "drop":
                self.stats["refused"] += 1
                _rst(client)
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
                upstream.settimeout(None)
                client.settimeout(None)
            except OSError:
                self.stats["upstream_down"] += 1
                _rst(client)
                continue
            link = _Link(self, client, upstream)
            self._links = [k for k in self._links if not k.closed.is_set()] + [link]
            link.start()

    def close(self) -> None:
        self._stop.set()
        self._cycling.clear()
        self._listener.close()
        for link in list(self._links):
            link.close()
        for thread in self._threads:
            thread.join(2)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
