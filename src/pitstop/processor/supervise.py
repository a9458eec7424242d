"""``pitstop process --workers N``: N worker processes on this host, each a ``PartitionWorker``.

The supervisor starts them, starts a worker again a second after it exits on its own (its
partitions are meanwhile taken over by the others), and on SIGTERM or Ctrl-C stops them all."""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import click

log = logging.getLogger(__name__)


def worker_command(config: Path | None, data_dir: Path | None) -> list[str]:
    cmd = [sys.executable, "-m", "pitstop"]
    if config is not None:
        cmd += ["--config", str(config)]
    cmd += ["process", "--workers", "1"]
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    return cmd


def supervise(workers: int, config: Path | None, data_dir: Path | None) -> None:
    cmd = worker_command(config, data_dir)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    procs: list[subprocess.Popen[bytes]] = [subprocess.Popen(cmd) for _ in range(workers)]
    click.echo(f"{workers} processor workers started: pids {' '.join(str(p.pid) for p in procs)}")
    try:
        while not stop.wait(1.0):
            for i, proc in enumerate(procs):
                code = proc.poll()
                if code is not None:
                    click.echo(f"worker pid {proc.pid} exited ({code}); starting another", err=True)
                    procs[i] = subprocess.Popen(cmd)
    except KeyboardInterrupt:
        pass
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        deadline = time.monotonic() + 30
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
