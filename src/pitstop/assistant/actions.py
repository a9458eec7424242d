"""What the assistant may do, and how: a proposal, then the user's own "yes" in the next turn.

An action is only ever built from the user's message (never from a manual, a note or a model's
output), checked against the user's role when proposed and again when confirmed, and carried out
through the same functions as the API, so it is audited as that user.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pitstop.assistant.grounding import when
from pitstop.errors import PitstopError

if TYPE_CHECKING:
    from pitstop.platform import Platform

# an action -> the permission it needs (pitstop.web.permissions names them)
PERMISSION = {"work_order.transition": "work_orders.transition", "event.inspection": "events.record"}
LEAST_ROLE = {"work_order.transition": "technician", "event.inspection": "engineer"}
VERB = {
    "acknowledged": "Acknowledge",
    "in_progress": "Start",
    "done": "Close",
    "cancelled": "Cancel",
}
FINDING_WORDS = {
    "fault_confirmed": "fault confirmed",
    "no_fault_found": "no fault found",
    "other": "other work",
}
# the moves a work order makes on the way to the state asked for
PATHS = {
    ("open", "in_progress"): ("in_progress",),
    ("open", "done"): ("in_progress", "done"),
    ("acknowledged", "done"): ("in_progress", "done"),
}


@dataclass(frozen=True)
class Executors:
    """The two writes the assistant can make, bound to a platform: the API's own functions."""

    transition: Callable[..., dict[str, Any]]  # (order_id, status, finding, note, technician, role)
    record_inspection: Callable[..., dict[str, Any]]  # (machine_id, note, key, actor, role)

    @classmethod
    def from_platform(cls, platform: Platform) -> Executors:
        from pitstop.ingest.admin import NewEvent, record_event
        from pitstop.maintenance import transition

        def move(
            order_id: int, status: str, finding: str | None, note: str | None, who: str, role: str
        ) -> Any:
            return transition(platform, order_id, status, finding, note, technician=who, role=role)

        def inspect(machine_id: str, note: str | None, key: str, who: str, role: str) -> dict[str, Any]:
            body = NewEvent(machine_id=machine_id, kind="inspection", detail=note)
            stored, _ = record_event(platform, body, key, who, role)
            return stored

        return cls(move, inspect)


def proposal(kind: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": secrets.token_hex(6),
        "type": kind,
        "state": "proposed",
        "proposed_at": time.time(),
        **fields,
    }


def question(action: dict[str, Any]) -> str:
    """The confirmation question for a proposed action."""
    if action["type"] == "event.inspection":
        note = f" with the note “{action['note']}”" if action.get("note") else ""
        return f"Record an inspection of {action['machine_id']}{note}? yes/no"
    verb = VERB[action["to"]]
    finding = f" as {FINDING_WORDS[action['finding']]}" if action.get("finding") else ""
    steps = action.get("steps", [action["to"]])
    via = ""
    if len(steps) > 1:
        via = f" (it is {action['from'].replace('_', ' ')}: it will be started, then closed)"
    note = f" with the note “{action['note']}”" if action.get("note") else ""
    return f"{verb} WO-{action['work_order']} on {action['machine_id']}{finding}{note}{via}? yes/no"


def execute(
    action: dict[str, Any], run: Executors, user: str, role: str, key: str
) -> tuple[str, dict[str, Any]]:
    """Carry out a confirmed action as ``user``; the answer and the action's final record."""
    done = dict(action)
    try:
        if action["type"] == "event.inspection":
            stored = run.record_inspection(action["machine_id"], action.get("note"), key, user, role)
            done["state"] = "done"
            done["recorded_at"] = str(stored.get("ts", ""))
            return (
                f"Recorded an inspection of {action['machine_id']} at {when(done['recorded_at'])}, "
                f"as {user}.",
                done,
            )
        body: dict[str, Any] = {}
        for step in action.get("steps", [action["to"]]):
            finding = action.get("finding") if step == "done" else None
            body = run.transition(action["work_order"], step, finding, action.get("note"), user, role)
    except PitstopError as exc:
        done["state"] = "failed"
        done["error"] = {"code": exc.code, "message": exc.message}
        return f"That did not go through: {exc.message}. Nothing else changed.", done
    done["state"] = "done"
    status = str(body.get("status", action["to"])).replace("_", " ")
    finding = f" with the finding {FINDING_WORDS[action['finding']]}" if action.get("finding") else ""
    return (
        f"Done: WO-{action['work_order']} on {action['machine_id']} is now {status}{finding}, as {user}.",
        done,
    )
