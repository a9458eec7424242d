"""From predictions to maintenance work orders: the risk policy, explanations, the work-order
lifecycle and webhook notifications.

Names are imported on first use: ``pitstop.maintenance.policy`` is pure Python (the edge agent
uses it) and must not pull the ops DB in through this package.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pitstop.maintenance.components import ComponentMap, Explanation
    from pitstop.maintenance.notify import Notifier
    from pitstop.maintenance.policy import CLOSED_STATES, FINDINGS, OPEN_STATES, PolicyState, RiskPolicy
    from pitstop.maintenance.work_orders import Reading, open_work_orders, transition, work_order_json

_WHERE = {
    "CLOSED_STATES": "policy",
    "FINDINGS": "policy",
    "OPEN_STATES": "policy",
    "ComponentMap": "components",
    "Explanation": "components",
    "Notifier": "notify",
    "PolicyState": "policy",
    "Reading": "work_orders",
    "RiskPolicy": "policy",
    "open_work_orders": "work_orders",
    "transition": "work_orders",
    "work_order_json": "work_orders",
}

__all__ = [
    "CLOSED_STATES",
    "FINDINGS",
    "OPEN_STATES",
    "ComponentMap",
    "Explanation",
    "Notifier",
    "PolicyState",
    "Reading",
    "RiskPolicy",
    "open_work_orders",
    "transition",
    "work_order_json",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'pitstop.maintenance' has no attribute {name!r}")
    value = getattr(import_module(f"pitstop.maintenance.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
