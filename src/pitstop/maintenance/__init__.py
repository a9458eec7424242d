"""From predictions to maintenance work orders: the risk policy, explanations, the work-order
lifecycle and webhook notifications."""

from pitstop.maintenance.components import ComponentMap, Explanation
from pitstop.maintenance.notify import Notifier
from pitstop.maintenance.policy import CLOSED_STATES, FINDINGS, OPEN_STATES, PolicyState, RiskPolicy
from pitstop.maintenance.work_orders import Reading, open_work_orders, transition, work_order_json

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
