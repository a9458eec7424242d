"""One exception tree. Every error carries a machine-readable code and an HTTP status."""

from __future__ import annotations

from typing import Any


class PitstopError(Exception):
    """Base of every error Pitstop raises on purpose."""

    code = "internal_error"
    status = 500

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details
        self.headers = headers or {}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return {"error": body}


class ConfigError(PitstopError):
    code = "config_invalid"
    status = 500


class AuthError(PitstopError):
    code = "unauthorized"
    status = 401


class ForbiddenError(PitstopError):
    code = "forbidden"
    status = 403


class NotFoundError(PitstopError):
    code = "not_found"
    status = 404


class ValidationError(PitstopError):
    code = "invalid_request"
    status = 422


class ManualError(ValidationError):
    """A manual that cannot be added or read; ``code`` names why (``manual_unsupported_format``,
    ``manual_empty``, ``manual_unreadable``, ``manual_too_large``, ``manual_unknown_machine_type``)."""

    code = "manual_invalid"


class PayloadTooLargeError(PitstopError):
    code = "payload_too_large"
    status = 413


class RateLimitedError(PitstopError):
    code = "rate_limited"
    status = 429


class BusError(PitstopError):
    code = "bus_unavailable"
    status = 503


class LakeError(PitstopError):
    code = "lake_error"
    status = 500


class StorageError(PitstopError):
    code = "storage_unavailable"
    status = 503


class LeaseLostError(PitstopError):
    """A processor worker's lease on a partition lapsed (or was taken): it must stop at once."""

    code = "lease_lost"
    status = 409


class ServerError(PitstopError):
    """A local engine (PostgreSQL, the S3 endpoint, nats-server) could not be started or stopped."""

    code = "server_failed"


class ServerMissingError(PitstopError):
    """A command that needs the platform's parts (``pitstop[server]``: Polars, Delta, MLflow,
    FastAPI...) was run in an install without them, e.g. a device's ``pitstop[agent]``."""

    code = "server_missing"


class ModelError(PitstopError):
    code = "model_unavailable"
    status = 503


class ArtifactIntegrityError(ModelError):
    code = "artifact_integrity"


class LlmError(PitstopError):
    """The assistant's LLM endpoint timed out, failed or answered outside the protocol."""

    code = "llm_unavailable"
    status = 503


class ConflictError(PitstopError):
    code = "conflict"
    status = 409


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's first line (or its type's name), for one-line messages and log lines:
    library errors (SQLAlchemy, delta-rs) append the statement or a cause chain below it."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


class AgentError(PitstopError):
    """The device agent cannot go on: a bad source, an unreadable buffer, a refused token."""

    code = "agent_error"
    status = 500
