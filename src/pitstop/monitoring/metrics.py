from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    """All Pitstop metrics on one registry per running platform (never the global one)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.readings_accepted = Counter(
            "pitstop_readings_accepted",
            "Readings acknowledged by ingest (durable in the bus)",
            registry=r,
        )
        self.readings_resent = Counter(
            "pitstop_readings_resent",
            "Readings acknowledged as re-sends of already accepted ones",
            registry=r,
        )
        self.readings_rejected = Counter(
            "pitstop_readings_rejected",
            "Ingest requests rejected, by error code",
            ["code"],
            registry=r,
        )
        self.lake_rows = Counter("pitstop_lake_rows_written", "Readings appended to the lake", registry=r)
        self.quarantined = Counter(
            "pitstop_readings_quarantined", "Readings held in quarantine (e.g. out of range)", registry=r
        )
        self.duplicates = Counter(
            "pitstop_readings_duplicate",
            "Readings skipped as already seen (machine_id, seq)",
            registry=r,
        )
        self.bus_lag = Gauge("pitstop_bus_lag_messages", "Bus messages not yet processed", registry=r)
        self.batch_seconds = Histogram(
            "pitstop_processor_batch_seconds",
            "Processor micro-batch duration",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.predictions = Counter(
            "pitstop_predictions", "Predictions made", ["model_version", "arm"], registry=r
        )
        self.work_orders_opened = Counter("pitstop_work_orders_opened", "Work orders opened", registry=r)
        self.model_info = Gauge(
            "pitstop_serving_model_info",
            "Serving model version per arm",
            ["name", "version", "arm"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
