"""Edge scoring: the device scores its own readings with its machine type's champion, and raises a
local alert when the link is down.

``fetch_model`` gets the champion from the server (``GET /api/v1/agent/model``), every file
checked against the manifest sha256 the registry recorded, and keeps it in a cache folder so a
restarted agent in a dead zone still scores (the cache is verified again at each load).

``EdgeScorer.observe`` takes the device's readings in seq order and, for **every** reading, updates
the machine's online features (``pitstop.features.OnlineFeatures``, the server's own code) and
scores them with the model. The server scores each micro-batch's latest reading of a machine, so
its scores are a subset of the agent's, and equal to them at those readings (same features, same
trees). The risk policy (``RiskPolicy.step``, also the server's) is stepped on every score, online
or not, so the device's hysteresis follows the same lower bounds; an alert is raised only when it
fires while offline (online, the server opens the work order). The device has no work orders: after
firing the policy re-arms once the lower bound rose by the hysteresis, or at a reset event.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from pitstop.agent.edge_model import EdgeModel, needed_files, read_manifest, refuse_pickles
from pitstop.errors import ArtifactIntegrityError, AuthError, ModelError
from pitstop.features.online import OnlineFeatures
from pitstop.maintenance.policy import PolicyState, RiskPolicy
from pitstop.registry.files import MANIFEST_FILE

log = logging.getLogger(__name__)

POINTER = "model.json"  # the cached version: what the server said about it
HOOK_TIMEOUT_S = 10.0


# ---------------------------------------------------------------- fetching the model


def fetch_model(client: httpx.Client, cache_dir: Path) -> EdgeModel | None:
    """The machine type's champion: from the server when it answers (files downloaded only when
    the version changed), else the cached one, verified; None when neither has one. ``client``
    has the server's base URL and the device's ``Authorization`` header."""
    try:
        response = client.get("/api/v1/agent/model")
    except httpx.HTTPError as exc:
        log.info("server unreachable (%s): using the cached model", exc)
        return load_cached(cache_dir)
    if response.status_code in (401, 403):
        raise AuthError(f"the server refused the device token: {response.text[:200]}", code="invalid_token")
    if response.status_code == 404:
        return None  # the server says the type has no champion: nothing to score with
    if response.status_code != 200:
        log.warning("the server answered %s for the model: using the cached one", response.status_code)
        return load_cached(cache_dir)
    info = response.json()
    cached = _pointer(cache_dir)
    if (
        cached is not None
        and cached.get("version") == info["version"]
        and cached.get("manifest_sha256") == info["manifest_sha256"]
    ):
        _write_pointer(cache_dir, {**cached, **_about(info)})
        try:
            return load_cached(cache_dir)
        except ArtifactIntegrityError as exc:
            log.warning("the cached model failed its check (%s): downloading it again", exc)
    try:
        folder = _download(client, cache_dir, info)
    except httpx.HTTPError as exc:
        log.info("download interrupted (%s): using the cached model", exc)
        return load_cached(cache_dir)
    _write_pointer(cache_dir, {"folder": folder.name, **_about(info)})
    for old in cache_dir.iterdir():  # earlier versions
        if old.is_dir() and old != folder:
            shutil.rmtree(old, ignore_errors=True)
    return load_cached(cache_dir)


def load_cached(cache_dir: Path) -> EdgeModel | None:
    """The cached model, verified against the digest recorded when it was fetched (None if none)."""
    pointer = _pointer(cache_dir)
    if pointer is None:
        return None
    return EdgeModel.load(
        cache_dir / pointer["folder"],
        pointer["manifest_sha256"],
        version=str(pointer["version"]),
        policy=_policy(pointer.get("policy")),
        machine_type=str(pointer.get("machine_type", "")),
        episode_start_us=pointer.get("episode_start_us"),
    )


def _about(info: dict[str, Any]) -> dict[str, Any]:
    start = info.get("episode_start")
    return {
        "version": str(info["version"]),
        "manifest_sha256": str(info["manifest_sha256"]),
        "machine_type": str(info.get("machine_type", "")),
        "policy": info.get("policy"),
        "episode_start_us": _us(datetime.fromisoformat(start)) if start else None,
    }


def _download(client: httpx.Client, cache_dir: Path, info: dict[str, Any]) -> Path:
    """The version's files into a new folder of the cache, each checked before it is kept."""
    version, digest = str(info["version"]), str(info["manifest_sha256"])
    refuse_pickles(list(info.get("files", {})))

    def get(name: str) -> bytes:
        r = client.get(f"/api/v1/agent/model/files/{name}", params={"version": version})
        if r.status_code != 200:
            raise ModelError(
                f"the server answered {r.status_code} for model file {name}", code="model_changed"
            )
        return r.content

    manifest_bytes = get(MANIFEST_FILE)
    manifest = read_manifest(manifest_bytes, digest)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".fetch-"))
    try:
        (tmp / MANIFEST_FILE).write_bytes(manifest_bytes)
        for name in needed_files(manifest):
            data = get(name)
            found = hashlib.sha256(data).hexdigest()
            if found != manifest.get(name):
                raise ArtifactIntegrityError(
                    f"model file {name} arrived with sha256 {found[:12]}…, the manifest says "
                    f"{str(manifest.get(name))[:12]}…: refusing it"
                )
            (tmp / name).write_bytes(data)
        folder = cache_dir / f"{version}-{digest[:12]}"
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _pointer(cache_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((cache_dir / POINTER).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _write_pointer(cache_dir: Path, data: dict[str, Any]) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / (POINTER + ".tmp")
    tmp.write_text(json.dumps(data, sort_keys=True))
    os.replace(tmp, cache_dir / POINTER)


def _policy(data: Any) -> RiskPolicy | None:
    if not isinstance(data, dict):
        return None
    known = {f.name for f in fields(RiskPolicy)}
    return RiskPolicy(**{k: v for k, v in data.items() if k in known})


def _us(ts: datetime) -> int:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return int(ts.timestamp() * 1_000_000)


# ---------------------------------------------------------------- scoring and alerts


@dataclass(frozen=True)
class EdgeAlert:
    """A local alert: the RUL interval's lower bound fell under the policy's threshold offline."""

    machine_id: str
    seq: int
    ts_us: int
    rul: float
    lower: float
    upper: float
    threshold: float
    version: str

    @property
    def ts(self) -> datetime:
        return datetime.fromtimestamp(self.ts_us / 1e6, UTC)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["ts_us"]
        return {
            "alert": "rul_below_threshold",
            **out,
            "ts": self.ts.isoformat(),
            "model_version": self.version,
        }


@dataclass(frozen=True)
class EdgeScore:
    seq: int
    ts_us: int
    rul: float
    lower: float
    upper: float


class EdgeScorer:
    """One machine's online features, scores and policy state on the device (see the module doc).

    ``policy`` is the machine type's risk policy; by default the one the server sent with the
    model (``EdgeModel.policy``). ``state`` is what ``snapshot`` returned (the runner keeps it
    in the buffer's SQLite, so a killed agent resumes its features); a state for another feature
    spec is dropped."""

    def __init__(
        self, model: EdgeModel, machine_id: str, state: bytes | None = None, policy: RiskPolicy | None = None
    ) -> None:
        self.model = model
        self.policy = policy if policy is not None else model.policy
        self.machine_id = machine_id
        self.memory = PolicyState()
        self.last_reset_us = -1
        self.last: EdgeScore | None = None
        self.features: np.ndarray | None = None  # what the last score was computed from
        self.online = OnlineFeatures(model.spec, capacity=1)
        if state is not None:
            try:
                self.online, extra = OnlineFeatures.restore(model.spec, state)
            except (ValueError, KeyError, OSError) as exc:
                log.warning("edge state not restored (%s): features start afresh", exc)
            else:
                extra = extra or {}
                self.memory = PolicyState(**extra.get("policy", {}))
                self.last_reset_us = int(extra.get("last_reset_us", -1))
        if model.episode_start_us is not None:
            self.reset(model.episode_start_us)
        self._inputs = model.spec.inputs

    @property
    def version(self) -> str:
        return self.model.version

    def reset(self, ts_us: int) -> None:
        """A reset event (maintenance, failure) at ``ts_us``: features restart at the first reading
        after it and the policy is armed again. One already known is ignored."""
        if ts_us <= self.last_reset_us:
            return
        self.last_reset_us = int(ts_us)
        self.online.reset(self.machine_id, int(ts_us))
        RiskPolicy.reset(self.memory)

    def observe(self, rows: list[tuple[int, int, dict[str, float]]], online: bool) -> list[EdgeAlert]:
        """Readings ``(seq, ts_us, values by sensor)`` in seq order: features and policy updated for
        each; the alerts the policy fired on them, when not ``online``."""
        alerts = []
        for seq, ts_us, values in rows:
            x = np.array([[float(values.get(name, np.nan)) for name in self._inputs]])
            used = self.online.update([self.machine_id], np.array([seq]), np.array([ts_us]), x)
            if not used[0]:
                continue  # late: the server does not use it either
            features = self.online.get([self.machine_id])
            self.features = features[0]
            rul, lower, upper = (float(v[0]) for v in self.model.predict(features))
            self.last = EdgeScore(seq, ts_us, rul, lower, upper)
            position = self.policy.position(seq, datetime.fromtimestamp(ts_us / 1e6, UTC))
            if self.policy.step(self.memory, lower, position):
                self.memory.open = False  # no work order on the device: hysteresis re-arms it
                if not online:
                    alerts.append(
                        EdgeAlert(
                            self.machine_id,
                            seq,
                            ts_us,
                            rul,
                            lower,
                            upper,
                            self.policy.threshold,
                            self.version,
                        )
                    )
        return alerts

    def snapshot(self) -> bytes:
        """The features and policy state, to hand back as ``state``."""
        extra = {"policy": asdict(self.memory), "last_reset_us": self.last_reset_us}
        return self.online.snapshot(extra=extra)


def raise_alert(alert: EdgeAlert, hook: str | None, timeout_s: float = HOOK_TIMEOUT_S) -> None:
    """One JSON line on stdout; with ``hook``, the command (split like a shell would, run without
    one) gets the alert's JSON on stdin and ``PITSTOP_ALERT_*`` variables. A hook that fails or
    runs past ``timeout_s`` is logged, never raised."""
    body = json.dumps(alert.to_dict(), sort_keys=True)
    print(body, file=sys.stdout, flush=True)
    if not hook:
        return
    env = dict(os.environ)
    for key, value in alert.to_dict().items():
        env[f"PITSTOP_ALERT_{key.upper()}"] = str(value)
    try:
        done = subprocess.run(
            shlex.split(hook),
            input=body.encode(),
            env=env,
            timeout=timeout_s,
            capture_output=True,
            check=False,
        )
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        log.warning("alert hook %r failed: %s", hook, exc)
        return
    if done.returncode != 0:
        log.warning(
            "alert hook %r exited %s: %s", hook, done.returncode, done.stderr.decode(errors="replace")[:300]
        )


__all__ = ["EdgeAlert", "EdgeScore", "EdgeScorer", "fetch_model", "load_cached", "raise_alert"]
