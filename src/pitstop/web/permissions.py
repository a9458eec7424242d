"""Who may do what: one table, enforced server-side on every route.

Roles are ordered; each includes the ones before it. A route names the permission it needs; a
permission names the least role that has it. ``create_app`` refuses to start when a route has no
rule, and the test suite calls every route with every role from this table.
"""

from __future__ import annotations

from typing import Final

ROLES: Final = ("viewer", "technician", "engineer", "admin")
_RANK: Final = {role: i for i, role in enumerate(ROLES)}

# permission -> the least role that holds it
PERMISSIONS: Final[dict[str, str]] = {
    "fleet.read": "viewer",  # machines, work orders, models, data, status, predictions, assistant
    "work_orders.transition": "technician",  # acknowledge, start, close with a finding, cancel
    "events.record": "engineer",  # failures, maintenance and inspections by API
    "models.promote": "engineer",  # promote, roll back
    "features.read": "engineer",  # machines' online feature vectors (model internals)
    "quarantine.release": "engineer",
    "alerts.silence": "engineer",
    "audit.read": "engineer",
    "devices.manage": "admin",
    "users.manage": "admin",
}
PUBLIC: Final = "public"  # no login: health, the login page itself
DEVICE: Final = "device"  # a device token, checked by the intake itself
METRICS: Final = "metrics"  # public unless the metrics_public setting is off, then fleet.read

# (method, path as declared) -> permission, PUBLIC, DEVICE or METRICS
ROUTES: Final[dict[tuple[str, str], str]] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/metrics"): METRICS,
    ("GET", "/login"): PUBLIC,
    ("POST", "/login"): PUBLIC,
    ("POST", "/logout"): "fleet.read",
    # dashboard pages
    ("GET", "/"): "fleet.read",
    ("GET", "/machines/{machine_id}"): "fleet.read",
    ("GET", "/work-orders"): "fleet.read",
    ("GET", "/models"): "fleet.read",
    ("GET", "/data"): "fleet.read",
    ("GET", "/audit"): "audit.read",
    # device intake
    ("POST", "/api/v1/readings"): DEVICE,
    ("GET", "/api/v1/agent/state"): DEVICE,
    ("GET", "/api/v1/agent/model"): DEVICE,
    ("GET", "/api/v1/agent/model/files/{name}"): DEVICE,
    # the API
    ("GET", "/api/v1/me"): "fleet.read",
    ("GET", "/api/v1/status"): "fleet.read",
    ("GET", "/api/v1/machines"): "fleet.read",
    ("GET", "/api/v1/machines/{machine_id}"): "fleet.read",
    ("GET", "/api/v1/machines/{machine_id}/telemetry"): "fleet.read",
    ("GET", "/api/v1/machines/{machine_id}/predictions"): "fleet.read",
    ("GET", "/api/v1/machines/{machine_id}/explanation"): "fleet.read",
    ("GET", "/api/v1/work-orders"): "fleet.read",
    ("POST", "/api/v1/work-orders/{order_id}/transition"): "work_orders.transition",
    ("POST", "/api/v1/predict"): "fleet.read",
    ("GET", "/api/v1/features"): "features.read",
    ("POST", "/api/v1/assistant/ask"): "fleet.read",
    ("POST", "/api/v1/assistant/chat"): "fleet.read",  # each action is checked against its own permission
    ("GET", "/api/v1/assistant/conversations"): "fleet.read",
    ("GET", "/api/v1/assistant/conversations/{conversation_id}"): "fleet.read",
    ("DELETE", "/api/v1/assistant/conversations/{conversation_id}"): "fleet.read",
    ("GET", "/api/v1/models"): "fleet.read",
    ("POST", "/api/v1/models/{machine_type}/promote"): "models.promote",
    ("POST", "/api/v1/models/{machine_type}/rollback"): "models.promote",
    ("GET", "/api/v1/deployments"): "fleet.read",
    ("GET", "/api/v1/monitoring/performance"): "fleet.read",
    ("GET", "/api/v1/monitoring/drift"): "fleet.read",
    ("GET", "/api/v1/lake"): "fleet.read",
    ("GET", "/api/v1/quarantine"): "fleet.read",
    ("POST", "/api/v1/quarantine/release"): "quarantine.release",
    ("GET", "/api/v1/audit"): "audit.read",
    ("GET", "/api/v1/alerts"): "fleet.read",
    ("POST", "/api/v1/alerts/silences"): "alerts.silence",
    ("DELETE", "/api/v1/alerts/silences/{silence_id}"): "alerts.silence",
    ("POST", "/api/v1/admin/events"): "events.record",
    ("GET", "/api/v1/admin/devices"): "devices.manage",
    ("POST", "/api/v1/admin/devices"): "devices.manage",
    ("POST", "/api/v1/admin/devices/{device_id}/disable"): "devices.manage",
    ("POST", "/api/v1/admin/devices/{device_id}/rotate"): "devices.manage",
}


def role_has(role: str, permission: str) -> bool:
    """Whether ``role`` holds ``permission``."""
    needed = PERMISSIONS[permission]
    return _RANK.get(role, -1) >= _RANK[needed]


def permissions_of(role: str) -> list[str]:
    """Every permission ``role`` holds."""
    return [p for p in PERMISSIONS if role_has(role, p)]


def _by_path(item: tuple[tuple[str, str], str]) -> tuple[str, str]:
    (method, path), _ = item
    return path, method


def permissions_markdown() -> str:
    """The permission table for the README (a test keeps the README equal to this)."""
    lines = [
        "| permission | least role | routes |",
        "|---|---|---|",
    ]
    for permission, role in PERMISSIONS.items():
        routes = [f"`{m} {p}`" for (m, p), need in sorted(ROUTES.items(), key=_by_path) if need == permission]
        lines.append(f"| `{permission}` | {role} | {', '.join(routes)} |")
    lines.append("")
    lines.append(
        "Without login: `GET /healthz`, `GET /login`, `POST /login`; `GET /metrics` while "
        "`metrics_public` is true (else `fleet.read`); `POST /api/v1/readings`, `GET /api/v1/agent/state`, "
        "`GET /api/v1/agent/model` and `GET /api/v1/agent/model/files/{name}` take a device token."
    )
    return "\n".join(lines)
