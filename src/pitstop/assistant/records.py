"""What a tool call returns, and the small shared pieces of the assistant's tools."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

CODE = re.compile(r"\b[A-Za-z]{1,4}-\d{2,4}\b")  # a procedure code: P-101, H-204


@dataclass
class ToolResult:
    """What one tool call returned: JSON-able ``data`` and the ``sources`` to cite for it."""

    tool: str
    args: dict[str, Any]
    data: Any
    sources: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(self.data, default=str)


def iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None
