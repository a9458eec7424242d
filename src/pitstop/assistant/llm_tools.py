"""The toolbox as an LLM sees it: JSON schemas generated from the read-only ``Toolbox`` methods'
signatures and docstrings, and one checked way to run a call the model asked for.

Only the tools named in ``READ_ONLY`` exist for the model; nothing here can change state. A call the
model gets wrong (unknown tool, bad arguments, a tool its user's role may not use) comes back as an
error for the model to read, never as an exception.
"""

from __future__ import annotations

import inspect
import json
import logging
import types
import typing
from collections.abc import Callable
from typing import Any

from pitstop.assistant.tools import Toolbox, ToolResult
from pitstop.errors import first_line

log = logging.getLogger(__name__)

READ_ONLY = (
    "machine",
    "at_risk",
    "fleet_summary",
    "work_orders",
    "work_order",
    "maintenance_history",
    "prediction_history",
    "alerts",
    "model_versions",
    "audit_log",
    "search_manuals",
    "manual_section",
)
PERMISSION = {"audit_log": "audit.read"}  # tools that need more than reading the fleet
MAX_LIMIT = 20
MAX_TEXT = 500
MAX_RESULT_CHARS = 6000

_JSON_TYPE = {str: "string", int: "integer", float: "number", bool: "boolean"}
_PARAMETER_HELP = {
    "machine_id": "a machine id exactly as the fleet stores it",
    "order_id": "a work order number (12 for WO-12)",
    "work_order": "a work order number (12 for WO-12)",
    "status": "open (not done or cancelled), closed, all, or one state",
    "priority": "urgent, high or normal",
    "limit": f"how many to return (1 to {MAX_LIMIT})",
    "kind": "an alert kind, e.g. drift or data_quality",
    "actor": "a user name",
    "query": "words to search the manuals for",
    "reference": "a manual section as document#anchor",
}
_STATUSES = ["open", "closed", "all", "new", "acknowledged", "in_progress", "done", "cancelled"]


def _parameter_type(annotation: Any) -> tuple[type, bool]:
    """The plain type of a parameter and whether it may be null."""
    args = typing.get_args(annotation)
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        plain = [a for a in args if a is not type(None)]
        return plain[0], len(plain) < len(args)
    return annotation, False


def _hints(name: str) -> tuple[inspect.Signature, dict[str, Any]]:
    method = getattr(Toolbox, name)
    return inspect.signature(method), typing.get_type_hints(method)


def tool_schemas(machine_types: list[str], allowed: Callable[[str], bool]) -> list[dict[str, Any]]:
    """The OpenAI ``tools`` list: one function per read-only tool the role may use."""
    schemas = []
    for name in READ_ONLY:
        if name in PERMISSION and not allowed(PERMISSION[name]):
            continue
        signature, hints = _hints(name)
        properties: dict[str, Any] = {}
        required = []
        for parameter in list(signature.parameters.values())[1:]:
            plain, _ = _parameter_type(hints[parameter.name])
            prop: dict[str, Any] = {"type": _JSON_TYPE[plain]}
            if parameter.name == "machine_type" and machine_types:
                prop["enum"] = list(machine_types)
            elif parameter.name == "status":
                prop["enum"] = _STATUSES
            if parameter.name in _PARAMETER_HELP:
                prop["description"] = _PARAMETER_HELP[parameter.name]
            if parameter.name == "limit":
                prop["minimum"], prop["maximum"] = 1, MAX_LIMIT
            properties[parameter.name] = prop
            if parameter.default is inspect.Parameter.empty:
                required.append(parameter.name)
        doc = " ".join((inspect.getdoc(getattr(Toolbox, name)) or name).split())
        schemas.append(
            {
                "type": "function",
                "function": {
                    "name": name,
                    "description": doc,
                    "parameters": {
                        "type": "object",
                        "properties": properties,
                        "required": required,
                        "additionalProperties": False,
                    },
                },
            }
        )
    return schemas


class ToolCallError(Exception):
    """A call the model got wrong; its message goes back to the model."""


def _arguments(name: str, raw: Any) -> dict[str, Any]:
    """The call's arguments checked against the tool's signature (types, required, ranges)."""
    if raw in (None, ""):
        raw = "{}"
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise ToolCallError(f"arguments are not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ToolCallError("arguments must be a JSON object")
    signature, hints = _hints(name)
    parameters = dict(list(signature.parameters.items())[1:])
    unknown = sorted(set(raw) - set(parameters))
    if unknown:
        raise ToolCallError(f"unknown argument(s) {unknown}; {name} takes {sorted(parameters)}")
    checked: dict[str, Any] = {}
    for pname, parameter in parameters.items():
        if pname not in raw:
            if parameter.default is inspect.Parameter.empty:
                raise ToolCallError(f"missing argument {pname!r}")
            continue
        value = raw[pname]
        plain, nullable = _parameter_type(hints[pname])
        if value is None:
            if not nullable:
                raise ToolCallError(f"{pname} cannot be null")
            checked[pname] = None
            continue
        if plain is int and isinstance(value, str) and value.strip().removeprefix("WO-").isdigit():
            value = int(value.strip().removeprefix("WO-"))  # models often quote numbers
        if plain is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, plain):
            raise ToolCallError(f"{pname} must be {_JSON_TYPE[plain]}, not {type(value).__name__}")
        if isinstance(value, str) and len(value) > MAX_TEXT:
            raise ToolCallError(f"{pname} is longer than {MAX_TEXT} characters")
        if isinstance(value, int) and not 0 <= value < 2**53:
            raise ToolCallError(f"{pname} is out of range")
        if pname == "limit" and isinstance(value, int) and not 1 <= value <= MAX_LIMIT:
            raise ToolCallError(f"limit must be between 1 and {MAX_LIMIT}")
        checked[pname] = value
    return checked


def call_tool(
    tools: Toolbox, name: Any, raw_arguments: Any, allowed: Callable[[str], bool]
) -> tuple[str, ToolResult | None]:
    """Run one call the model asked for: the content of its ``tool`` message, and the result
    when the call ran. Unknown tools, bad arguments and tools the role may not use are refused."""
    try:
        if not isinstance(name, str) or name not in READ_ONLY:
            raise ToolCallError(
                f"there is no tool {str(name)[:80]!r}; the tools are {', '.join(READ_ONLY)}. "
                "You cannot change anything: the user asks for changes in their own words."
            )
        if name in PERMISSION and not allowed(PERMISSION[name]):
            raise ToolCallError(f"the user's role may not use {name}; say so, do not guess its content")
        arguments = _arguments(name, raw_arguments)
    except ToolCallError as exc:
        return json.dumps({"error": str(exc)}), None
    try:
        result: ToolResult = getattr(tools, name)(**arguments)
    except Exception as exc:  # a tool failing on odd input is the model's answer, not a crash
        log.warning("assistant tool %s(%s) failed: %s", name, arguments, first_line(exc))
        return json.dumps({"error": f"{name} failed: {first_line(exc, 200)}"}), None
    content = result.to_json()
    if len(content) > MAX_RESULT_CHARS:
        content = content[:MAX_RESULT_CHARS] + " …(truncated)"
    return content, result
