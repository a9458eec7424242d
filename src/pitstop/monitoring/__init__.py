"""Monitoring: Prometheus metrics for ingest, bus, processing, scoring and work orders."""

from pitstop.monitoring.metrics import Metrics

__all__ = ["Metrics"]
