"""Where the lake lives: a local folder, or ``s3://bucket/prefix`` on S3-compatible storage.

Concurrent writers on S3. A Delta commit is the creation of ``_delta_log/<version>.json``; two
writers must never both create the same version. delta-rs (1.x) does this on S3 with a conditional
put (``If-None-Match: *``, which AWS S3 honours since August 2024, as do MinIO, R2 and moto): the
loser gets "already exists", reads the winner's commit and retries at the next version. It needs no
other service. The DynamoDB lock (``AWS_S3_LOCKING_PROVIDER=dynamodb``) predates S3's conditional
writes and is only needed to share a table with Spark's ``S3DynamoDBLogStore``;
``AWS_S3_ALLOW_UNSAFE_RENAME`` lets two writers overwrite each other's commit. So an s3:// lake
gets ``conditional_put=etag`` unless the options choose a commit method themselves, and the unsafe
one is logged as a warning at every start.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from pitstop.errors import LakeError, first_line

log = logging.getLogger(__name__)

# storage options that choose how commits are made exclusive (their absence: conditional put)
COMMIT_METHODS = ("conditional_put", "aws_conditional_put", "aws_s3_locking_provider", "copy_if_not_exists")
UNSAFE = "aws_s3_allow_unsafe_rename"
TRUTHY = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class LakeLocation:
    """The lake's root (a local folder or an s3:// URI) and the delta-rs storage options for it."""

    uri: str
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls, root: str | Path | LakeLocation, options: dict[str, str] | None = None, endpoint: str = ""
    ) -> LakeLocation:
        if isinstance(root, LakeLocation):
            return root
        uri = str(root)
        if not uri.startswith("s3://"):
            return cls(str(Path(uri.removeprefix("file://"))), {})
        return cls(uri.rstrip("/"), s3_options(options or {}, endpoint))

    @classmethod
    def from_settings(cls, settings: Any) -> LakeLocation:
        return cls.of(settings.lake_uri, settings.lake_storage_options, settings.s3_endpoint_url)

    @property
    def is_local(self) -> bool:
        return not self.uri.startswith("s3://")

    @property
    def storage_options(self) -> dict[str, str] | None:
        """What delta-rs gets (None for a local folder)."""
        return None if self.is_local else dict(self.options)

    def join(self, *parts: str) -> str:
        if self.is_local:
            return str(Path(self.uri, *parts))
        return "/".join([self.uri, *parts])

    def prepare(self) -> None:
        """Make the local folder (an S3 prefix needs nothing: the bucket must exist)."""
        if self.is_local:
            Path(self.uri).mkdir(parents=True, exist_ok=True)

    def is_table(self, name: str) -> bool:
        try:
            return bool(DeltaTable.is_deltatable(self.join(name), storage_options=self.storage_options))
        except (DeltaError, OSError) as exc:
            if self.is_local:
                raise
            raise LakeError(
                f"cannot reach the lake at {self.uri}: {first_line(exc)}. Check that the bucket "
                "exists, s3_endpoint_url (for storage other than AWS) and the AWS_* keys and region",
                code="lake_unreachable",
            ) from exc

    def exists(self) -> bool:
        """Whether a lake was made here already (its telemetry table exists)."""
        if self.is_local:
            return Path(self.uri).exists()
        return self.is_table("telemetry")

    # -- plain files, for upkeep's counts and checkpoint check -------------------------------------
    def files(self, *parts: str) -> list[str]:
        """Every file under ``parts`` (recursively), relative to it; [] when there is none."""
        fs, base = self._filesystem(*parts)
        try:
            infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        except FileNotFoundError:
            return []
        return sorted(i.path[len(base) :].lstrip("/") for i in infos if i.type == pafs.FileType.File)

    def read_text(self, *parts: str) -> str | None:
        fs, path = self._filesystem(*parts)
        try:
            with fs.open_input_stream(path) as stream:
                return bytes(stream.read()).decode()
        except (FileNotFoundError, OSError):
            return None

    def _filesystem(self, *parts: str) -> tuple[pafs.FileSystem, str]:
        if self.is_local:
            return pafs.LocalFileSystem(), str(Path(self.uri, *parts))
        return _s3_filesystem(self.options), self.join(*parts).removeprefix("s3://")


def s3_options(user: dict[str, str], endpoint: str = "") -> dict[str, str]:
    """The user's options, made safe for concurrent writers and complete for an http endpoint."""
    options = dict(user)
    keys = {k.lower(): k for k in options}
    env = {k.lower(): v for k, v in os.environ.items()}
    if not any(k in keys or k in env for k in COMMIT_METHODS):
        options["conditional_put"] = "etag"
    unsafe = options.get(keys[UNSAFE], "") if UNSAFE in keys else env.get(UNSAFE, "")
    if unsafe.strip().lower() in TRUTHY:
        log.warning(
            "lake: AWS_S3_ALLOW_UNSAFE_RENAME is set: two writers can overwrite each other's commit "
            "and lose rows; unset it (Pitstop then uses S3's conditional put)"
        )
    if endpoint and "aws_endpoint_url" not in keys:
        options["AWS_ENDPOINT_URL"] = endpoint
    url = options.get(keys.get("aws_endpoint_url", "AWS_ENDPOINT_URL")) or env.get("aws_endpoint_url", "")
    if url.startswith("http://") and "aws_allow_http" not in keys and "aws_allow_http" not in env:
        options["AWS_ALLOW_HTTP"] = "true"
    return options


def _s3_filesystem(options: dict[str, str]) -> pafs.S3FileSystem:
    """pyarrow's S3 client on the same endpoint, region and keys as delta-rs (options, else env)."""
    low = {k.lower(): v for k, v in options.items()}

    def get(name: str) -> str | None:
        return low.get(name) or os.environ.get(name.upper()) or None

    endpoint = get("aws_endpoint_url")
    kwargs: dict[str, Any] = {"region": get("aws_region") or get("aws_default_region") or "us-east-1"}
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kwargs.update(endpoint_override=host.rstrip("/"), scheme=scheme)
    key, secret = get("aws_access_key_id"), get("aws_secret_access_key")
    if key and secret:
        kwargs.update(access_key=key, secret_key=secret, session_token=get("aws_session_token"))
    return pafs.S3FileSystem(**kwargs)
