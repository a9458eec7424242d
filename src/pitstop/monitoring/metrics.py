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
        self.rest_predict = Counter(
            "pitstop_rest_predict_requests",
            "POST /api/v1/predict requests answered, by path: fast (the usual request, before the "
            "web framework) or route",
            ["path"],
            registry=r,
        )
        self.work_orders_opened = Counter("pitstop_work_orders_opened", "Work orders opened", registry=r)
        self.model_info = Gauge(
            "pitstop_serving_model_info",
            "Serving model version per arm",
            ["name", "version", "arm"],
            registry=r,
        )

        self.scoring_seconds = Histogram(
            "pitstop_scoring_seconds",
            "Time to score one micro-batch's machines (all arms)",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=r,
        )
        self.scoring_failures = Counter(
            "pitstop_scoring_failures_total",
            "Micro-batches in which a machine type's machines could not be scored (its model failed)",
            ["machine_type"],
            registry=r,
        )
        self.drift_psi = Gauge(
            "pitstop_drift_psi",
            "PSI of the latest live window against the model's training profile",
            ["scope", "feature"],
            registry=r,
        )
        self.drift_alert = Gauge(
            "pitstop_drift_alert",
            "1 while a sensor's features (or the prediction) drift, per scope",
            ["scope", "sensor"],
            registry=r,
        )
        self.drift_checks = Counter(
            "pitstop_drift_checks", "Live windows checked for drift", ["scope"], registry=r
        )
        self.work_orders = Gauge("pitstop_work_orders", "Work orders by state", ["state"], registry=r)
        self.failures_scored = Counter(
            "pitstop_failures_scored",
            "Failures the live predictions were scored against, by whether an order opened in time",
            ["outcome"],
            registry=r,
        )
        self.live_rul_mae = Gauge(
            "pitstop_live_rul_mae",
            "RUL mean absolute error before the latest failure, by readings left",
            ["horizon"],
            registry=r,
        )
        self.missing_values = Counter(
            "pitstop_readings_missing_values",
            "Sensor values missing from accepted readings",
            ["sensor"],
            registry=r,
        )

        self.quality_missing_rate = Gauge(
            "pitstop_quality_missing_rate",
            "Share of a machine type's recent readings lacking an optional sensor's value",
            ["machine_type", "sensor"],
            registry=r,
        )
        self.quality_out_of_range_rate = Gauge(
            "pitstop_quality_out_of_range_rate",
            "Share of a machine type's recent readings held in quarantine (out of range)",
            ["machine_type"],
            registry=r,
        )
        self.quality_stuck = Gauge(
            "pitstop_quality_stuck_sensors",
            "Machines whose sensor repeated one value quality_stuck_readings times in a row",
            ["machine_type", "sensor"],
            registry=r,
        )
        self.quality_gaps = Counter(
            "pitstop_quality_sampling_gaps",
            "Intervals between a machine's readings over quality_gap_factor times its usual one",
            ["machine_type"],
            registry=r,
        )
        self.quality_clock_skew = Gauge(
            "pitstop_quality_clock_skew_seconds",
            "Largest clock skew (reading time against arrival) of a machine type's latest batch",
            ["machine_type"],
            registry=r,
        )
        self.quality_alerts = Gauge(
            "pitstop_quality_alerts",
            "Data-quality alerts open, by machine type and check",
            ["machine_type", "check"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
