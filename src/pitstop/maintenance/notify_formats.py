"""How a batch of alerts reads in each channel: Slack and Microsoft Teams incoming webhooks, and
email. The generic webhook gets the outbox payload itself (signed), so it has no format here.

Each takes the ``data`` of an ``alerts`` event: ``{"group": ..., "alerts": [alert, ...]}``, each
alert with ``status`` (firing | resolved), ``severity``, ``kind``, ``key``, ``summary``.
"""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any

_MARK = {"critical": "🔴", "warning": "🟠", "info": "🔵"}
_TEAMS_COLOUR = {"critical": "D13438", "warning": "FFAA44", "info": "0078D4"}
_RANK = {"info": 0, "warning": 1, "critical": 2}


def _line(alert: dict[str, Any]) -> str:
    state = "RESOLVED" if alert.get("status") == "resolved" else str(alert.get("severity", "")).upper()
    return f"{state} [{alert.get('kind')}] {alert.get('summary')} (key {alert.get('key')})"


def title(data: dict[str, Any]) -> str:
    alerts = data.get("alerts", [])
    firing = sum(a.get("status") != "resolved" for a in alerts)
    resolved = len(alerts) - firing
    parts = [f"{firing} firing"] if firing else []
    parts += [f"{resolved} resolved"] if resolved else []
    return f"Pitstop alerts ({data.get('group')}): {', '.join(parts) or 'none'}"


def worst(data: dict[str, Any]) -> str:
    firing = [a for a in data.get("alerts", []) if a.get("status") != "resolved"]
    if not firing:
        return "info"
    return max((str(a.get("severity")) for a in firing), key=lambda s: _RANK.get(s, 0))


def slack(data: dict[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook message: ``text`` (notifications, fallback) plus blocks."""
    lines = [f"{_MARK.get(a.get('severity', ''), '')} {_line(a)}".strip() for a in data.get("alerts", [])]
    head = title(data)
    return {
        "text": head + "\n" + "\n".join(lines),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": head[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:3000]}},
        ],
    }


def teams(data: dict[str, Any]) -> dict[str, Any]:
    """A Microsoft Teams incoming-webhook message (MessageCard)."""
    return {
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "summary": title(data),
        "themeColor": _TEAMS_COLOUR.get(worst(data), "0078D4"),
        "title": title(data),
        "sections": [
            {
                "activityTitle": _line(a),
                "facts": [
                    {"name": "severity", "value": str(a.get("severity"))},
                    {"name": "status", "value": str(a.get("status"))},
                    {"name": "machine type", "value": str(a.get("machine_type") or "-")},
                    {"name": "count", "value": str(a.get("count"))},
                ],
            }
            for a in data.get("alerts", [])
        ],
    }


def email(data: dict[str, Any], sender: str, to: list[str]) -> EmailMessage:
    """A plain-text email: the title as subject, one line per alert."""
    message = EmailMessage()
    message["Subject"] = title(data)
    message["From"] = sender
    message["To"] = ", ".join(to)
    message.set_content("\n".join(_line(a) for a in data.get("alerts", [])) + "\n")
    return message
