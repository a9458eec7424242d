"""Which audit rows raise or resolve which alerts: one table (``RULES``), documented in the README.

An alert source needs nothing but its audit call: ``alerts.Alerts`` sees each new audit row in the
transaction that writes it and looks its action up here.

- ``fire``: raise the key's alert (a re-fire of a firing key bumps its count, nothing is sent).
- ``resolve``: resolve the key's firing alert (sent too, when its raise was).
- ``event``: something that happened and needs no clearing (a rollback, a retrain outcome): raised
  like ``fire``, then resolved quietly ``alert_event_ttl_s`` after it was last raised.

The key is the kind and the values of the rule's key fields that the row carries, joined by ``:``
(``drift:type:turbofan:s2``), so a silence can match on a key prefix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

SEVERITIES: Final = ("info", "warning", "critical")
Kind = Literal[
    "drift",
    "data_quality",
    "performance",
    "guard",
    "rollback",
    "retrain",
    "deployment",
    "work_order_overdue",
]
KINDS: Final = get_args(Kind)

Op = Literal["fire", "resolve", "event"]


@dataclass(frozen=True)
class Rule:
    action: str
    op: Op
    kind: str
    severity: str
    key: tuple[str, ...]  # detail fields the key is made of (those present, in this order)
    summary: str  # a format string over the row's detail
    tag: str = ""  # a literal part of the key, to tell two actions of one kind apart
    when: Callable[[dict[str, Any], str], bool] | None = None  # raises only when this holds (detail, actor)


@dataclass(frozen=True)
class Signal:
    """What one audit row means for the alerts."""

    op: Op
    kind: str
    key: str
    severity: str
    summary: str
    machine_type: str | None
    machine_id: str | None

    @property
    def group(self) -> str:
        """Alerts of one group raised within ``alert_group_s`` go out as one message."""
        return f"{self.kind}:{self.machine_type or 'fleet'}"


def _missed(detail: dict[str, Any], actor: str) -> bool:
    return detail.get("caught_in_time") is False


def _not_by(actor_of_own_alert: str) -> Callable[[dict[str, Any], str], bool]:
    """A row written as a step of a move that raises its own alert (a canary's withdrawal, the
    guard's rollback) raises none: one event, one alert."""
    return lambda detail, actor: actor != actor_of_own_alert


_QUALITY_KEY = ("machine_type", "check", "sensor", "machine_id")
_OVERDUE = "work order {work_order} on {machine_id} is past its due date ({due_at})"

RULES: Final[tuple[Rule, ...]] = (
    Rule(
        "drift_alert",
        "fire",
        "drift",
        "warning",
        ("scope", "sensor", "machine_id"),
        "drift on {sensor} {machine_id} ({scope}, {kind})",
    ),
    Rule(
        "drift_cleared",
        "resolve",
        "drift",
        "warning",
        ("scope", "sensor", "machine_id"),
        "no more drift on {sensor} {machine_id}",
    ),
    Rule(
        "quality_alert",
        "fire",
        "data_quality",
        "warning",
        _QUALITY_KEY,
        "data quality: {check} on {machine_type} {sensor} {machine_id} "
        "(value {value}, threshold {threshold})",
    ),
    Rule("quality_cleared", "resolve", "data_quality", "warning", _QUALITY_KEY, "data quality: {check} ok"),
    Rule(
        "failure_scored",
        "event",
        "performance",
        "critical",
        ("machine_id", "failure_seq"),
        "{machine_id} failed with no work order in time",
        when=_missed,
    ),
    Rule(
        "challenger_withdrawn",
        "event",
        "guard",
        "warning",
        ("machine_type", "version"),
        "{machine_type} challenger {version} withdrawn: {reason}",
        when=_not_by("canary"),  # the canary's rollback alerts as canary_rolled_back
    ),
    Rule(
        "champion_rolled_back",
        "event",
        "guard",
        "critical",
        ("machine_type", "from_version"),
        "{machine_type} champion {from_version} rolled back to {to_version}: {reason}",
        tag="champion",
    ),
    Rule(
        "model_rolled_back",
        "event",
        "rollback",
        "warning",
        ("model", "from_version"),
        "{model} rolled back from {from_version} to {to_version} by {actor}",
        when=_not_by("guard"),  # the guard's rollback alerts as champion_rolled_back
    ),
    Rule(
        "retrain_promoted",
        "event",
        "retrain",
        "info",
        ("machine_type", "version"),
        "retrain ({trigger}) promoted {machine_type} version {version}",
        tag="promoted",
    ),
    Rule(
        "retrain_rejected",
        "event",
        "retrain",
        "warning",
        ("machine_type", "version", "trigger"),
        "retrain ({trigger}) rejected version {version}: {reason}",
        tag="rejected",
    ),
    Rule(
        "retrain_failed",
        "event",
        "retrain",
        "warning",
        ("machine_type", "trigger"),
        "retrain ({trigger}) of {machine_type} failed: {error}",
        tag="failed",
    ),
    Rule(
        "canary_rolled_back",
        "event",
        "deployment",
        "critical",
        ("machine_type", "version"),
        "{machine_type} canary {version} rolled back: {reason}",
    ),
    Rule("work_order_overdue", "fire", "work_order_overdue", "warning", ("work_order",), _OVERDUE),
    Rule("work_order_overdue_cleared", "resolve", "work_order_overdue", "warning", ("work_order",), ""),
    Rule("work_order_done", "resolve", "work_order_overdue", "warning", ("work_order",), ""),
    Rule("work_order_cancelled", "resolve", "work_order_overdue", "warning", ("work_order",), ""),
)
BY_ACTION: Final[dict[str, Rule]] = {rule.action: rule for rule in RULES}


class _Blank(dict[str, Any]):
    def __missing__(self, name: str) -> str:
        return ""


def signal_for(action: str, actor: str, detail: dict[str, Any]) -> Signal | None:
    """The alert an audit row raises or resolves, if any."""
    rule = BY_ACTION.get(action)
    if rule is None or (rule.when is not None and not rule.when(detail, actor)):
        return None
    parts = [rule.kind, *([rule.tag] if rule.tag else [])]
    parts += [str(detail[name]) for name in rule.key if detail.get(name) is not None]
    machine_type = detail.get("machine_type")
    scope = detail.get("scope")
    if machine_type is None and isinstance(scope, str) and scope.startswith("type:"):
        machine_type = scope.removeprefix("type:")
    summary = " ".join(rule.summary.format_map(_Blank(detail, actor=actor)).split())
    return Signal(
        op=rule.op,
        kind=rule.kind,
        key=":".join(parts),
        severity=rule.severity,
        summary=summary,
        machine_type=str(machine_type) if machine_type is not None else None,
        machine_id=str(detail["machine_id"]) if detail.get("machine_id") is not None else None,
    )


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else 0
