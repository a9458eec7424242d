"""The fleet as the live API shows it when a case starts: the values of a case's placeholders."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pitstop.errors import ValidationError

# (method, path, role, json body) -> (status code, JSON body)
Call = Callable[[str, str, str, dict[str, Any] | None], tuple[int, Any]]

_PLACEHOLDER = re.compile(r"\{([a-z_0-9]+)\}")


@dataclass
class Snapshot:
    """The fleet as the API shows it when a case starts: machines, work orders, placeholders."""

    machines: dict[str, dict[str, Any]]  # every machine, any lifecycle
    orders: dict[int, dict[str, Any]]
    values: dict[str, str]  # placeholder -> value
    extra: dict[str, Any] = field(default_factory=dict)  # counts and versions

    @classmethod
    def read(cls, call: Call) -> Snapshot:
        _, body = call("GET", "/api/v1/machines?lifecycle=all&trend=0", "admin", None)
        machines = {m["machine_id"]: m for m in body["machines"]}
        _, body = call("GET", "/api/v1/work-orders?status=all&limit=5000", "admin", None)
        orders = {int(o["id"]): o for o in body["work_orders"]}
        _, body = call("GET", "/api/v1/audit?limit=1000", "admin", None)
        audit = body["entries"]
        _, models = call("GET", "/api/v1/models", "admin", None)
        return cls(machines, orders, {}, {"audit": audit, "models": models})._resolve()

    def _resolve(self) -> Snapshot:
        v = self.values
        active = [m for m in self.machines.values() if m["lifecycle"] == "active"]
        scored = [m for m in active if m["predicted_rul"] is not None]

        def urgency(m: dict[str, Any]) -> tuple[float, str]:
            low = (m["rul_interval"] or [m["predicted_rul"]])[0]
            low = m["predicted_rul"] if low is None else low
            return (low / max(m["threshold"], 1e-9), m["machine_id"])

        ranked = sorted(scored, key=urgency)
        for i, name in enumerate(("worst", "second_worst", "third_worst", "fourth_worst", "fifth_worst")):
            if len(ranked) > i:
                v[name] = ranked[i]["machine_id"]
        if ranked:
            v["healthiest"] = ranked[-1]["machine_id"]
            v["worst_number"] = _tail_number(ranked[0]["machine_id"])
            v["second_number"] = _tail_number(ranked[1]["machine_id"]) if len(ranked) > 1 else ""
        ok = [m for m in ranked if m["status"] == "ok"]
        ok.sort(key=lambda m: m["open_work_order_id"] is None)  # one without an order, if any
        if ok:
            v["ok_machine"] = ok[-1]["machine_id"]
            v["ok_number"] = _tail_number(ok[-1]["machine_id"])
        retired = sorted(m["machine_id"] for m in self.machines.values() if m["lifecycle"] == "retired")
        if retired:
            v["retired_machine"] = retired[0]
        by_status: dict[str, list[dict[str, Any]]] = {}
        for o in sorted(self.orders.values(), key=lambda o: o["id"]):
            by_status.setdefault(o["status"], []).append(o)
        for status, name in (("open", "open"), ("acknowledged", "acked"), ("in_progress", "started")):
            if by_status.get(status):
                v[f"{name}_order"] = str(by_status[status][0]["id"])
                v[f"{name}_machine"] = by_status[status][0]["machine_id"]
            if len(by_status.get(status, [])) > 1:
                v[f"{name}_order_2"] = str(by_status[status][1]["id"])
                v[f"{name}_machine_2"] = by_status[status][1]["machine_id"]
        closed = by_status.get("done", [])
        if closed:
            v["closed_order"] = str(closed[0]["id"])
            v["closed_machine"] = closed[0]["machine_id"]
        open_ranked = [m for m in ranked if m["open_work_order_id"] is not None]
        if open_ranked:
            v["order_machine"] = open_ranked[0]["machine_id"]
            v["machine_order"] = str(open_ranked[0]["open_work_order_id"])
        worst = self.machines.get(v.get("worst", ""))
        if worst is not None and worst["open_work_order_id"] is not None:
            v["worst_order"] = str(worst["open_work_order_id"])
        events = [e for e in self.extra["audit"] if e["action"].startswith("event")]
        for e in reversed(events):  # oldest first
            kind = (e.get("detail") or {}).get("kind")
            machine = (e.get("detail") or {}).get("machine_id")
            if kind in ("inspection", "failure") and machine and f"{kind}_machine" not in v:
                v[f"{kind}_machine"] = machine
        open_states = ("open", "acknowledged", "in_progress")
        due = sorted(
            (o for o in self.orders.values() if o["status"] in open_states),
            key=lambda o: (o.get("due_at") or "9999", o["id"]),
        )
        if due:
            v["first_due_order"] = str(due[0]["id"])
            v["first_due_machine"] = due[0]["machine_id"]
        v["unknown_machine"] = _unknown_id({m["machine_id"]: m for m in active} or self.machines)
        v["unknown_order"] = str(max(self.orders, default=0) + 500)
        types = sorted({m["machine_type"] for m in active})
        if types:
            v["machine_type"] = types[0]
            v["time_unit"] = str(active[0]["time_unit"])
        self.extra["at_risk_count"] = sum(m["status"] == "at_risk" for m in active)
        self.extra["open_orders"] = sum(
            o["status"] in ("open", "acknowledged", "in_progress") for o in self.orders.values()
        )
        self.extra["active"] = len(active)
        self.extra["machines"] = len(self.machines)
        return self

    def fill(self, text: str) -> str:
        """``text`` with its placeholders replaced; an unknown one raises ``ValidationError``."""

        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.values:
                raise ValidationError(f"no value for {{{name}}} in this fleet", code="bad_case")
            return self.values[name]

        return _PLACEHOLDER.sub(one, text)

    def champion(self, machine_type: str) -> str | None:
        models = self.extra["models"]
        types = models.get("machine_types", models) if isinstance(models, dict) else {}
        entry = types.get(machine_type) if isinstance(types, dict) else None
        if isinstance(entry, dict):
            champ = entry.get("champion")
            if isinstance(champ, dict):
                return str(champ.get("version"))
            if champ is not None:
                return str(champ)
        return None


def _tail_number(machine_id: str) -> str:
    found = re.search(r"(\d+)\D*$", machine_id)
    return str(int(found.group(1))) if found else ""


def _unknown_id(machines: dict[str, Any]) -> str:
    sample = sorted(machines)[-1] if machines else "m-1"
    prefix = re.sub(r"\d+\D*$", "", sample)
    for n in range(977, 10_000):
        candidate = f"{prefix}{n}"
        if candidate not in machines:
            return candidate
    return "zz-99999"
