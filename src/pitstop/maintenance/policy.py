from __future__ import annotations

from dataclasses import dataclass

OPEN_STATES = ("open", "acknowledged", "in_progress")


@dataclass(frozen=True)
class RiskPolicy:
    """Open a work order when the predicted RUL falls below ``threshold`` (fleet time units)."""

    threshold: float

    def triggers(self, rul: float) -> bool:
        return rul < self.threshold

    def priority(self, rul: float) -> str:
        if rul < self.threshold / 3:
            return "urgent"
        if rul < 2 * self.threshold / 3:
            return "high"
        return "normal"
