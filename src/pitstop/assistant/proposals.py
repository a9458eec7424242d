"""From "close WO-27 as fault confirmed" to a proposal awaiting the user's yes: the target
resolved, the role checked, the move checked against the work order's lifecycle."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pitstop.assistant.actions import FINDING_WORDS, LEAST_ROLE, PATHS, PERMISSION, VERB, proposal, question
from pitstop.assistant.tools import Toolbox, ToolResult
from pitstop.assistant.understand import Parsed
from pitstop.maintenance import FINDINGS
from pitstop.maintenance.work_orders import TRANSITIONS

Proposed = tuple[dict[str, Any] | None, str, ToolResult | None]


def propose(
    parsed: Parsed, context: dict[str, Any], role: str, can: Callable[[str, str], bool], tools: Toolbox
) -> Proposed:
    """A proposed action (``state`` proposed, or refused), the text to show, the tool result
    behind it."""
    kind = "event.inspection" if parsed.action == "inspection" else "work_order.transition"
    if not can(role, PERMISSION[kind]):
        what = "record inspections" if kind == "event.inspection" else "change work orders"
        refused = {"type": kind, "state": "refused", "reason": "role", "role": role}
        return (
            refused,
            f"Your role ({role}) cannot {what}; {_article(LEAST_ROLE[kind])} or above can. Nothing changed.",
            None,
        )
    if kind == "event.inspection":
        return _inspection(parsed, context, tools)
    return _transition(parsed, context, tools)


def _machine(parsed: Parsed, context: dict[str, Any]) -> str | None:
    if parsed.machines:
        return parsed.machines[0]
    listed = context.get("listed") or {}
    if parsed.ordinal is not None and listed.get("kind") == "machine":
        return _pick(listed["ids"], parsed.ordinal)
    if context.get("machine"):
        return str(context["machine"])
    return None


def _pick(ids: list[Any], ordinal: int) -> Any:
    if ordinal == -1:
        return ids[-1] if ids else None
    return ids[ordinal - 1] if 0 < ordinal <= len(ids) else None


def _inspection(parsed: Parsed, context: dict[str, Any], tools: Toolbox) -> Proposed:
    if parsed.unknown_machines and not parsed.machines:
        return None, f"There is no machine {parsed.unknown_machines[0]} in the fleet. Nothing changed.", None
    machine_id = _machine(parsed, context)
    if machine_id is None:
        return None, "Which machine did you inspect? Name it by its id.", None
    result = tools.machine(machine_id)
    action = proposal("event.inspection", machine_id=machine_id, note=parsed.note)
    context["machine"] = machine_id
    return action, question(action), result


Target = tuple[int | None, str | None, ToolResult | None]


def _order_id(parsed: Parsed, context: dict[str, Any], tools: Toolbox) -> Target:
    """The work order meant, or a reason there is none; with the tool result behind either."""
    if parsed.orders:
        return parsed.orders[0], None, None
    listed = context.get("listed") or {}
    if parsed.ordinal is not None and not parsed.machines:
        if not listed:
            return (
                None,
                "I have listed nothing in this conversation yet; name the work order (WO-…) or machine.",
                None,
            )
        picked = _pick(listed["ids"], parsed.ordinal)
        if picked is None:
            shown = ToolResult("conversation", {}, {"listed": listed["ids"], "count": len(listed["ids"])})
            return None, f"The last list I gave had {len(listed['ids'])} items.", shown
        if listed["kind"] == "work_order":
            return int(picked), None, None
        return _open_order(tools, str(picked))
    if parsed.unknown_machines and not parsed.machines:
        return None, f"There is no machine {parsed.unknown_machines[0]} in the fleet.", None
    if parsed.machines or (parsed.pronoun and context.get("machine") and not context.get("order")):
        machine_id = _machine(parsed, context)
        if machine_id is not None:
            return _open_order(tools, machine_id)
    if context.get("order"):
        return int(context["order"]), None, None
    if context.get("machine"):
        found = _open_order(tools, str(context["machine"]))
        if found[0] is not None:
            return found
    return None, "Which work order? Name it (WO-…) or its machine.", None


def _open_order(tools: Toolbox, machine_id: str) -> Target:
    status = tools.machine(machine_id)
    order = status.data.get("open_work_order")
    if order is None:
        return None, f"{machine_id} has no open work order.", status
    return int(order["id"]), None, None


def _transition(parsed: Parsed, context: dict[str, Any], tools: Toolbox) -> Proposed:
    order_id, problem, evidence = _order_id(parsed, context, tools)
    if order_id is None:
        return None, f"{problem} Nothing changed.", evidence
    result = tools.work_order(order_id)
    order = result.data
    if not order["found"]:
        return None, f"There is no work order WO-{order_id}. Nothing changed.", None
    context["order"], context["machine"] = order_id, order["machine_id"]
    to = str(parsed.action)
    now = order["status"]
    steps = PATHS.get((now, to)) or ((to,) if to in TRANSITIONS.get(now, ()) else None)
    if steps is None:
        state = now.replace("_", " ")
        if not TRANSITIONS.get(now):
            text = f"WO-{order_id} on {order['machine_id']} is {state} already: it cannot change any more."
        else:
            moves = ", ".join(VERB[m].lower() for m in TRANSITIONS[now])
            text = f"WO-{order_id} on {order['machine_id']} is {state}: it can only {moves} now."
        return None, text + " Nothing changed.", result
    if to == "done" and parsed.finding is None:
        options = ", ".join(FINDING_WORDS[f] for f in FINDINGS)
        return None, f"Close WO-{order_id} on {order['machine_id']} with which finding: {options}?", result
    action = proposal(
        "work_order.transition",
        work_order=order_id,
        machine_id=order["machine_id"],
        to=to,
        steps=list(steps),
        note=parsed.note,
        finding=parsed.finding if to == "done" else None,
        **{"from": now},
    )
    return action, question(action), result


def _article(role: str) -> str:
    return f"an {role}" if role[:1] in "aeiou" else f"a {role}"
