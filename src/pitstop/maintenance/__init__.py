"""From predictions to maintenance work orders: the risk policy and the work-order lifecycle."""

from pitstop.maintenance.policy import OPEN_STATES, RiskPolicy
from pitstop.maintenance.work_orders import apply_policy

__all__ = ["OPEN_STATES", "RiskPolicy", "apply_policy"]
