"""Monitoring: Prometheus metrics for ingest, bus, processing, scoring and work orders.

``Metrics`` loads on first use, not when the package is imported: the CLI reads the alert rules'
kinds (``monitoring.alert_rules``) without prometheus-client (an agent install)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pitstop.monitoring.metrics import Metrics

__all__ = ["Metrics"]


def __getattr__(name: str) -> Any:
    if name != "Metrics":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from pitstop.monitoring.metrics import Metrics

    globals()["Metrics"] = Metrics
    return Metrics
