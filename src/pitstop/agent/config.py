"""The agent's settings: the command line's values first, then the ``agent_*`` settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pitstop.errors import AgentError


@dataclass(frozen=True)
class AgentConfig:
    server: str
    token: str
    machine_id: str
    source: str
    folder: Path
    buffer_max_readings: int = 1_000_000
    batch_max: int = 1000
    send_interval_s: float = 1.0
    retry_max_s: float = 60.0
    clock_tolerance_s: float = 5.0
    compress: bool = True
    edge_scoring: bool = True
    alert_hook: str = ""
    model_refresh_s: float = 300.0

    @classmethod
    def from_settings(cls, settings: Any, **given: Any) -> AgentConfig:
        """The agent's settings, with the command line's values (``given``, None: not given) first."""

        def pick(name: str) -> Any:
            value = given.get(name)
            return value if value not in (None, "") else getattr(settings, f"agent_{name}")

        server, machine_id, source = pick("server"), pick("machine_id"), pick("source")
        if server and not str(server).startswith(("http://", "https://")):
            raise AgentError(
                f"--server must be an http:// or https:// URL, e.g. http://pitstop.local:8000 "
                f"(got {server!r})",
                code="agent_config",
            )
        token_file = given.get("token_file") or settings.agent_token_file
        missing = [
            flag
            for flag, value in (
                ("--server", server),
                ("--token-file", token_file),
                ("--machine-id", machine_id),
                ("--source", source),
            )
            if not value
        ]
        if missing:
            raise AgentError(
                f"the agent needs {', '.join(missing)} (or agent_* in the settings file)", code="agent_config"
            )
        return cls(
            server=str(server).rstrip("/"),
            token=read_token(Path(token_file)),
            machine_id=str(machine_id),
            source=str(source),
            folder=Path(given.get("folder") or settings.agent_dir),
            buffer_max_readings=settings.agent_buffer_max_readings,
            batch_max=settings.agent_batch_max,
            send_interval_s=settings.agent_send_interval_s,
            retry_max_s=settings.agent_retry_max_s,
            clock_tolerance_s=settings.agent_clock_tolerance_s,
            compress=settings.agent_compress,
            edge_scoring=settings.agent_edge_scoring,
            alert_hook=settings.agent_alert_hook,
            model_refresh_s=settings.agent_model_refresh_s,
        )


def read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise AgentError(
            f"cannot read the device token file {path}: {exc.strerror}", code="agent_config"
        ) from exc
    if not token:
        raise AgentError(f"the device token file {path} is empty", code="agent_config")
    return token
