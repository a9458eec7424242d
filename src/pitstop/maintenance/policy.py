"""The risk policy: when a prediction becomes a work order, with what priority and due point.

One decision function, ``RiskPolicy.step``, is used by the streaming processor and by
``pitstop backtest``; the per-machine memory it needs (``PolicyState``) is kept in the ops DB by
the processor and in memory by the backtest.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pitstop.errors import ConfigError

if TYPE_CHECKING:
    from pitstop.config import Settings

OPEN_STATES = ("open", "acknowledged", "in_progress")
CLOSED_STATES = ("done", "cancelled")
FINDINGS = ("fault_confirmed", "no_fault_found", "other")


@dataclass(frozen=True)
class RiskPolicy:
    """Open a work order when the lower bound of the RUL interval falls below ``threshold``.

    All quantities are in the machine type's time unit (readings: cycles, hours).

    - ``lead_time``: what the workshop needs between an order and the repair. An order is in time
      when the machine fails no sooner than ``lead_time`` after it opened.
    - ``threshold``: the trigger on the interval's lower bound; at least ``lead_time``, the margin
      above it buys the share of failures caught in time (``pitstop backtest --search`` finds it).
    - ``hysteresis``: once an order opened, the machine gets another in the same episode only after
      its lower bound rose to ``threshold + hysteresis`` (so it does not flap around the threshold),
      or, after an order closed "no fault found", after ``recheck_after`` readings.
    - ``unit_seconds``: the length of one time unit, for due dates.
    """

    lead_time: float = 20.0
    threshold: float = 35.0
    hysteresis: float = 10.0
    recheck_after: float = 10.0
    unit_seconds: float = 3600.0
    # the type counts time, not readings: positions (recheck_after, the backtest) are timestamps
    # in units of unit_seconds
    timed: bool = False

    def __post_init__(self) -> None:
        if self.threshold < self.lead_time:
            raise ConfigError(
                f"work-order threshold {self.threshold:g} is below the lead time {self.lead_time:g}: "
                "an order would open too late for the workshop; raise work_order_rul_threshold"
            )
        for f in fields(self):
            if getattr(self, f.name) < 0:
                raise ConfigError(f"risk policy {f.name} must be at least 0, got {getattr(self, f.name)}")

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        machine_type: str | None = None,
        fleet_policy: dict[str, float] | None = None,
        unit_seconds: float | None = None,
    ) -> RiskPolicy:
        """The fleet-wide policy from settings; then the machine type's own from its fleet file
        (``fleet_policy``, in the type's unit of ``unit_seconds`` seconds); then the deployment's
        overrides for the type (``maintenance_policies.<type>``)."""
        values: dict[str, Any] = {
            "lead_time": settings.lead_time,
            "threshold": settings.work_order_rul_threshold,
            "hysteresis": settings.work_order_hysteresis,
            "recheck_after": settings.recheck_after,
            "unit_seconds": settings.time_unit_seconds if unit_seconds is None else unit_seconds,
        }
        overrides = settings.maintenance_policies.get(machine_type or "", {})
        unknown = sorted(set(overrides) - set(values))
        if unknown:
            raise ConfigError(
                f"maintenance_policies.{machine_type} has unknown keys {unknown}; known: {sorted(values)}"
            )
        return cls(**(values | (fleet_policy or {}) | overrides), timed=unit_seconds is not None)

    def position(self, seq: int, ts: datetime | None) -> int:
        """Where a reading is on the policy's axis: its seq, or for a type that counts time its
        timestamp in whole time units."""
        if self.timed and ts is not None:
            return int(ts.timestamp() // self.unit_seconds)
        return seq

    def at_risk(self, lower: float) -> bool:
        """Whether an RUL interval's lower bound is below the threshold."""
        return lower < self.threshold

    def step(self, state: PolicyState, lower: float, seq: int) -> bool:
        """One prediction of a machine (the lower bound of its RUL interval, at reading ``seq``):
        whether to open a work order now. Updates ``state``."""
        if state.open:
            return False
        if not state.armed:
            rearmed = lower >= self.threshold + self.hysteresis
            if state.rearm_seq is not None and seq >= state.rearm_seq:
                rearmed = True
            if not rearmed:
                return False
            state.armed, state.rearm_seq = True, None
        if lower < self.threshold:
            state.armed, state.open = False, True
            return True
        return False

    def closed(self, state: PolicyState, finding: str | None, seq: int) -> None:
        """The machine's order closed at reading ``seq``. After "no fault found" the machine is
        watched again ``recheck_after`` readings later; otherwise hysteresis alone re-arms it."""
        state.open = False
        state.rearm_seq = int(seq + self.recheck_after) if finding == "no_fault_found" else None

    @staticmethod
    def reset(state: PolicyState) -> None:
        """A maintenance or failure event: a new episode, armed again."""
        state.armed, state.open, state.rearm_seq = True, False, None

    def priority(self, lower: float) -> str:
        """Urgent when the lower bound is within half the lead time, high within the lead time."""
        if lower < 0.5 * self.lead_time:
            return "urgent"
        if lower < self.lead_time:
            return "high"
        return "normal"

    def due_in(self, lower: float) -> float:
        """Time units until the repair is due: before the interval's lower bound runs out."""
        return max(lower, 0.0)


@dataclass
class PolicyState:
    """What the policy remembers of one machine in its current episode."""

    armed: bool = True
    open: bool = False
    rearm_seq: int | None = None
