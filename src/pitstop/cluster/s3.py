"""A local S3 endpoint (``moto_server`` from pip ``moto[server]``) for ``pitstop cluster up`` and tests.

It keeps objects in memory: a restart empties it. Use real S3 (or any S3-compatible store) for data
you keep.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from pitstop.errors import ServerError

# credentials moto accepts (any); the region delta-rs and boto3 both need
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "pitstop",
    "AWS_SECRET_ACCESS_KEY": "pitstop-secret",
    "AWS_REGION": "us-east-1",
}


def find_moto() -> str:
    beside = Path(sys.executable).parent / "moto_server"
    found = shutil.which("moto_server") or (str(beside) if beside.exists() else None)
    if found is None:
        raise ServerError(
            "moto_server not found: `pip install 'moto[server]'` (or point lake_uri at real S3)"
        )
    return found


def start_s3(folder: Path, port: int) -> subprocess.Popen[bytes]:
    """Start moto_server on 127.0.0.1:``port``; returns once it answers."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "s3.log", "wb") as log:
        proc = subprocess.Popen(
            [find_moto(), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"moto_server exited at start: see {folder / 's3.log'}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.05)
    proc.kill()
    raise ServerError("moto_server did not start listening within 20 s")


def create_bucket(endpoint: str, bucket: str) -> None:
    """Make ``bucket`` on the endpoint (no error if it exists)."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=CREDENTIALS["AWS_REGION"],
    )
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=bucket)
