"""Where alerts are sent, from the settings: Slack and Teams incoming webhooks, a generic signed
webhook, and email over SMTP. One typed object, built once at start."""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pitstop.config import Settings


@dataclass(frozen=True)
class SmtpRoute:
    host: str
    port: int
    sender: str
    to: tuple[str, ...]
    starttls: bool = False
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_s: float = 10.0

    @property
    def url(self) -> str:
        """What the outbox row names as its receiver (no credentials)."""
        return f"smtp://{self.host}:{self.port}"

    def send(self, message: EmailMessage) -> None:
        """Send one message; raises ``smtplib.SMTPException`` or ``OSError`` when it is not taken."""
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.user is not None:
                smtp.login(self.user, self.password or "")
            smtp.send_message(message, from_addr=self.sender, to_addrs=list(self.to))


@dataclass(frozen=True)
class AlertRoutes:
    """Every receiver of alert notifications: ``(channel, url)`` pairs and an SMTP route."""

    slack: tuple[str, ...] = ()
    teams: tuple[str, ...] = ()
    webhooks: tuple[str, ...] = ()
    email: SmtpRoute | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertRoutes:
        email = None
        if settings.smtp_host and settings.alert_email_to:
            password = settings.smtp_password
            email = SmtpRoute(
                host=settings.smtp_host,
                port=settings.smtp_port,
                sender=settings.smtp_from,
                to=tuple(settings.alert_email_to),
                starttls=settings.smtp_starttls,
                user=settings.smtp_user,
                password=password.get_secret_value() if password is not None else None,
            )
        return cls(
            slack=tuple(settings.alert_slack_urls),
            teams=tuple(settings.alert_teams_urls),
            webhooks=tuple(settings.alert_webhook_urls),
            email=email,
        )

    def targets(self) -> list[tuple[str, str]]:
        """``(channel, url)`` for each receiver, the outbox's key for a delivery."""
        found = [("slack", u) for u in self.slack] + [("teams", u) for u in self.teams]
        found += [("webhook", u) for u in self.webhooks]
        if self.email is not None:
            found.append(("email", self.email.url))
        return found
