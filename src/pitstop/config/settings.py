from __future__ import annotations

import tomllib
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pitstop.config.urls import check_webhook_url
from pitstop.errors import ConfigError


class Settings(BaseSettings):
    """Every knob of Pitstop. Environment variables are ``PITSTOP_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="PITSTOP_", extra="forbid", frozen=True)

    data_dir: Path = Field(
        Path("pitstop-data"), description="Folder for the ops DB, lake, bus and MLflow store."
    )
    ops_db_url: str = Field(
        "",
        validate_default=True,
        description="The ops DB: empty for SQLite at <data_dir>/ops.db, or postgresql+psycopg://user@host/db "
        "(scale-out: every API server and processor shares it).",
    )
    mlflow_tracking_uri: str = Field(
        "",
        validate_default=True,
        description="MLflow's backend store: empty for SQLite at <data_dir>/mlflow.db, or "
        "postgresql+psycopg://… (scale-out).",
    )
    mlflow_artifacts_uri: str = Field(
        "",
        validate_default=True,
        description="Where model artifacts are kept: empty for <data_dir>/mlartifacts, or s3://bucket/prefix "
        "(endpoint in s3_endpoint_url, keys and region from AWS_* variables).",
    )
    lake_uri: str = Field(
        "",
        validate_default=True,
        description="The lake's root: empty for <data_dir>/lake, or s3://bucket/prefix for Delta tables on "
        "S3-compatible storage (options in lake_storage_options and AWS_* variables).",
    )
    lake_storage_options: dict[str, str] = Field(
        default_factory=dict,
        description="delta-rs storage options for an s3:// lake (e.g. region, access keys; env as JSON); "
        "AWS_* variables are read too. Commits use S3's conditional put unless these choose another "
        "method (AWS_S3_LOCKING_PROVIDER=dynamodb).",
    )
    s3_endpoint_url: str = Field(
        "",
        description="Endpoint of S3-compatible storage (MinIO, Ceph, moto) for an s3:// lake and s3:// "
        "MLflow artifacts, e.g. http://minio:9000; empty for AWS S3. Keys and region: AWS_* variables.",
    )
    host: str = Field("127.0.0.1", description="Address the HTTP API listens on.")
    port: int = Field(8000, ge=0, le=65535, description="Port the HTTP API listens on.")
    model_name: str = Field("pitstop-rul", description="Registered model name in MLflow.")
    rul_cap: int = Field(
        125, gt=0, description="Cap on the RUL training target (piecewise-linear degradation)."
    )
    train_seed: int = Field(42, description="Seed for training and cross-validation folds.")
    train_folds: int = Field(5, ge=2, description="Grouped folds used for the interval and CV metrics.")
    interval_coverage: float = Field(0.8, gt=0, lt=1, description="Nominal coverage of the RUL interval.")
    interval_horizon: float = Field(
        150.0,
        gt=0,
        description="The interval is calibrated on held-out readings this close to a failure (readings).",
    )
    deployment: Literal["champion", "shadow", "canary", "ab"] = Field(
        "champion",
        description=(
            "How the challenger alias serves: not at all, shadow (scored and logged, never acted on), "
            "canary or ab (a stable hash of machine id sends challenger_percent of machines to it)."
        ),
    )
    challenger_percent: int = Field(
        10, ge=0, le=100, description="Share of machines the challenger serves under canary or ab."
    )
    guard_invalid_share: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Share of an arm's outputs in a batch that may be invalid before it is withdrawn.",
    )
    serving_poll_s: float = Field(
        2.0, ge=0, description="How often the processor checks whether the champion alias moved."
    )
    canary_schedule: str = Field(
        "",
        description=(
            "Progressive canary (deployment canary): the challenger's share of machines per step, "
            "e.g. 5,25,50,100; it advances while the challenger is not worse, is promoted after the "
            "step before 100 and rolled back when worse. Empty: a fixed challenger_percent."
        ),
    )
    canary_step_min_s: float = Field(
        3600.0, ge=0, description="Least time a progressive canary stays at a step before it advances."
    )
    canary_step_failures: int = Field(
        3,
        ge=1,
        description="Failures scored on the challenger's arm during a canary step before it may advance.",
    )
    canary_check_s: float = Field(
        30.0, ge=0, description="How often the processor weighs the canary's evidence between batches."
    )
    deployments_alpha: float = Field(
        0.05, gt=0, lt=1, description="Significance level of the deployment arms' tests (report, canary)."
    )
    failure_horizon: float = Field(
        30.0, gt=0, description="Horizon of the failure-within-horizon label and its CV metrics (readings)."
    )
    lead_time: float = Field(
        20.0, ge=0, description="Time units the workshop needs between a work order and the repair."
    )
    work_order_rul_threshold: float = Field(
        35.0,
        gt=0,
        description="Open a work order when the RUL interval's lower bound falls below this (time units).",
    )
    work_order_hysteresis: float = Field(
        10.0,
        ge=0,
        description=(
            "A machine gets another order in an episode only once its lower bound rose this far "
            "above the threshold."
        ),
    )
    recheck_after: float = Field(
        10.0,
        ge=0,
        description="After an order closed 'no fault found', readings until the machine is watched again.",
    )

    time_unit_seconds: float = Field(3600.0, gt=0, description="Length of one time unit, for due dates.")
    maintenance_policies: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description=(
            "Per machine type overrides of the risk policy: lead_time, threshold, hysteresis, "
            "recheck_after, unit_seconds."
        ),
    )
    component_map: Path | None = Field(
        None,
        description="TOML mapping sensors to components to procedures (default: the fleet file's).",
    )
    webhook_allow_link_local: bool = Field(
        False,
        description="Allow webhook URLs on link-local or cloud metadata addresses (169.254.0.0/16, "
        "fe80::/10, metadata.google.internal …); refused by default.",
    )
    webhook_urls: list[str] = Field(
        default_factory=list, description="URLs that receive work-order events (POST, HMAC-signed)."
    )
    webhook_secret: SecretStr | None = Field(
        None, description="HMAC key for webhooks (default: generated into <data_dir>/webhook-secret)."
    )
    model_signing_key: SecretStr | None = Field(
        None,
        description="Deployment key: every model version registered is signed with it (HMAC-SHA256 "
        "over its manifest's sha256) and a version without a valid signature is refused. "
        "Set it on every process that trains or serves (env PITSTOP_MODEL_SIGNING_KEY).",
    )
    webhook_max_backoff_s: float = Field(
        300.0, gt=0, description="Longest wait between two attempts to deliver a webhook."
    )
    alert_min_severity: Literal["info", "warning", "critical"] = Field(
        "warning", description="Least severity of an alert that is sent (every alert is recorded)."
    )
    alert_group_s: float = Field(
        30.0,
        ge=0,
        description="Alerts of one group (kind and machine type) raised within this many seconds go out "
        "as one message (0: each at once).",
    )
    alert_event_ttl_s: float = Field(
        86400.0,
        gt=0,
        description="An event alert (rollback, retrain outcome, missed failure) resolves quietly this long "
        "after it was last raised.",
    )
    alert_check_s: float = Field(
        60.0, ge=0, description="How often overdue work orders are checked for alerts, in seconds (0: never)."
    )
    alert_slack_urls: list[str] = Field(
        default_factory=list, description="Slack incoming-webhook URLs that receive alerts."
    )
    alert_teams_urls: list[str] = Field(
        default_factory=list, description="Microsoft Teams incoming-webhook URLs that receive alerts."
    )
    alert_webhook_urls: list[str] = Field(
        default_factory=list,
        description="URLs that receive alerts as JSON, HMAC-signed like work-order webhooks.",
    )
    alert_email_to: list[str] = Field(
        default_factory=list, description="Addresses that receive alerts by email (needs smtp_host)."
    )
    smtp_host: str | None = Field(None, description="SMTP server for alert emails.")
    smtp_port: int = Field(25, ge=1, le=65535, description="SMTP server port.")
    smtp_from: str = Field("pitstop@localhost", description="Sender address of alert emails.")
    smtp_starttls: bool = Field(False, description="Upgrade the SMTP connection with STARTTLS.")
    smtp_user: str | None = Field(None, description="SMTP login user (none: no login).")
    smtp_password: SecretStr | None = Field(
        None, description="SMTP login password (set it in PITSTOP_SMTP_PASSWORD, not in a file you share)."
    )
    drift_window: int = Field(
        500,
        ge=50,
        description="Scored readings per live window checked for drift (per machine type).",
    )
    drift_alpha: float = Field(
        0.05, gt=0, lt=1, description="Family-wise significance of the per-feature KS drift tests."
    )
    drift_psi_threshold: float = Field(
        0.2, ge=0, description="Least PSI for a significant shift to count as drift (0.2: a material shift)."
    )
    drift_correction: Literal["holm", "bonferroni", "bh"] = Field(
        "holm", description="Correction of the KS p-values for the number of features tested."
    )
    drift_persist_windows: int = Field(
        3,
        ge=1,
        description="Drift windows in a row a fleet-wide distribution shift must last before it alerts.",
    )
    drift_machine_windows: int = Field(
        3,
        ge=1,
        description="Drift windows in a row one machine's sensor must disagree with its others to alert.",
    )
    quality_window: int = Field(
        500,
        ge=10,
        description="Readings per machine type over which the missing and out-of-range rates are taken.",
    )
    quality_missing_rate: float = Field(
        0.2,
        gt=0,
        le=1,
        description="Share of readings lacking an optional sensor that raises a quality alert.",
    )
    quality_out_of_range_rate: float = Field(
        0.05,
        gt=0,
        le=1,
        description="Share of readings quarantined (out of range) that raises a quality alert.",
    )
    quality_stuck_readings: int = Field(
        30,
        ge=2,
        description="Readings in a row with one unchanged value after which a sensor counts as stuck.",
    )
    quality_gap_factor: float = Field(
        5.0, gt=1, description="An interval this many times a machine's usual one counts as a sampling gap."
    )
    quality_clock_skew_s: float = Field(
        300.0, gt=0, description="Seconds between a reading's time and its arrival that count as clock skew."
    )
    retrain_holdout: float = Field(
        0.2, gt=0, lt=1, description="Share of failed machines (the newest) a retrain holds out to gate on."
    )
    retrain_tolerance: float = Field(
        0.05, ge=0, description="How much worse than the champion (RMSE, backtest cost) a retrain may be."
    )
    retrain_shadow_readings: int = Field(
        500,
        ge=0,
        description="Live readings a gated retrain is scored on beside the champion before promotion.",
    )
    retrain_shadow_timeout_s: float = Field(
        3600.0, gt=0, description="How long a retrain waits for its shadow readings before it gives up."
    )
    retrain_on_drift: bool = Field(False, description="Retrain when a drift alert is raised.")
    retrain_on_performance: bool = Field(
        False, description="Retrain when a machine fails with no work order opened in time."
    )
    retrain_every_s: float = Field(0.0, ge=0, description="Retrain on this schedule, in seconds (0: never).")
    cost_failure: float = Field(10.0, ge=0, description="Cost of an unplanned failure (backtest).")
    cost_repair: float = Field(2.0, ge=0, description="Cost of a planned repair (backtest).")
    cost_inspection: float = Field(
        0.5, ge=0, description="Cost of an inspection that finds no fault (backtest)."
    )
    max_batch_readings: int = Field(5000, gt=0, description="Most readings accepted in one request.")
    max_body_bytes: int = Field(
        8 * 1024 * 1024, gt=0, description="Largest request body accepted, on every route (413)."
    )
    max_predict_rows: int = Field(
        50_000,
        gt=0,
        le=10_000_000,
        description="Most feature rows one POST /api/v1/predict may score, in any form (422 too_many_rows): "
        "they are scored on the server's event loop.",
    )
    max_future_skew_s: float = Field(300.0, ge=0, description="How far in the future a reading's ts may be.")
    intake_workers: int = Field(
        2,
        ge=0,
        description="Processes that parse and validate reading batches beside the server (0: in the server).",
    )
    device_rate_limit: float = Field(20.0, gt=0, description="Requests per second a device may sustain.")
    device_rate_burst: int = Field(40, gt=0, description="Requests a device may send in a burst.")
    admin_token: SecretStr | None = Field(
        None, description="Bearer token for the admin API (default: generated into <data_dir>/admin-token)."
    )
    assistant_llm_url: str | None = Field(
        None,
        description="OpenAI-compatible chat endpoint for the assistant (e.g. http://127.0.0.1:8080/v1); "
        "none: intents and templates, no LLM.",
    )
    assistant_llm_model: str = Field("", description="The model name sent to assistant_llm_url.")
    assistant_llm_key: SecretStr | None = Field(
        None, description="API key for assistant_llm_url (set it in PITSTOP_ASSISTANT_LLM_KEY)."
    )
    assistant_llm_timeout_s: float = Field(
        30.0, gt=0, description="How long the assistant waits for the LLM before answering from templates."
    )
    assistant_max_chars: int = Field(
        2000, ge=10, le=20_000, description="The longest message the assistant takes (characters)."
    )
    assistant_rate_per_minute: int = Field(
        30, gt=0, description="Messages a user may send the assistant per minute (429 beyond)."
    )
    session_idle_s: float = Field(
        3600.0, gt=0, description="A browser session ends after this many seconds without a request."
    )
    session_max_s: float = Field(
        12 * 3600.0, gt=0, description="A browser session ends this many seconds after login, however used."
    )
    login_max_failures: int = Field(
        5, gt=0, description="Failed logins per user name (10x per address) before login is refused."
    )
    login_window_s: float = Field(
        900.0, gt=0, description="The window failed logins are counted over, and how long a refusal lasts."
    )
    metrics_public: bool = Field(
        True, description="Serve /metrics without login (for Prometheus); false: viewer or above."
    )
    forwarded_allow_ips: str = Field(
        "",
        description=(
            "Comma-separated addresses of reverse proxies trusted for X-Forwarded-For/-Proto "
            "(client address for the login throttle, https for Secure cookies); empty: none."
        ),
    )
    log_format: Literal["auto", "json", "text"] = Field(
        "auto",
        description="Log lines on stderr: JSON objects (ts, level, logger, message, request_id), plain "
        "text, or auto (text on a terminal, JSON otherwise).",
    )
    auth_cache_s: float = Field(
        2.0, ge=0, description="How long a resolved API key or session is trusted before it is checked again."
    )
    bus_backend: Literal["sqlite", "nats"] = Field(
        "sqlite", description="Bus backend: the embedded SQLite log, or NATS JetStream for scale-out."
    )
    nats_url: str = Field("nats://127.0.0.1:4222", description="NATS server for bus_backend = nats.")
    nats_stream: str = Field(
        "PITSTOP", pattern=r"^[A-Za-z0-9_-]+$", description="JetStream stream holding the reading batches."
    )
    bus_partitions: int = Field(
        1,
        ge=1,
        le=1024,
        description="With bus_backend = nats: partitions of the bus; machines are split across them by a "
        "stable hash of their id, and each is processed by one worker at a time (pitstop process --workers). "
        "Fixed once readings flow.",
    )
    lease_ttl_s: float = Field(
        3.0,
        gt=0.5,
        le=300,
        description="With bus_backend = nats: a processor worker's lease on a partition lapses this long "
        "after its last renewal, and another worker takes the partition over.",
    )
    mqtt_intake: bool = Field(
        False,
        description="With bus_backend = nats: take device readings over MQTT (pitstop/mqtt/<machine_id>).",
    )
    processor_poll_s: float = Field(0.5, gt=0, description="Processor wait between empty polls of the bus.")
    processor_batch_interval_s: float = Field(
        0.5, ge=0, description="Least time between micro-batch starts, so each batch amortises its commits."
    )
    processor_max_messages: int = Field(500, gt=0, description="Bus messages per processor micro-batch.")
    features_max_ids: int = Field(
        1000, gt=0, le=100_000, description="Most machines one GET /api/v1/features request may ask for."
    )
    feature_snapshot_s: float = Field(
        60.0, ge=0, description="Least time between snapshots of the processor's online feature state."
    )
    lake_upkeep_every_s: float = Field(
        600.0,
        ge=0,
        description="Lake upkeep (compaction, checkpoint, vacuum, log cleanup) on a processor thread, "
        "this often in seconds (0: off; `pitstop lake upkeep` runs it by hand).",
    )
    lake_retention_hours: int = Field(
        24,
        ge=1,
        description="Unpinned lake history kept readable (time travel), in hours. Versions a registered "
        "model's lineage names are kept however old; make it longer than the longest training run.",
    )
    lake_checkpoint_every: int = Field(
        100, ge=1, description="Lake commits between checkpoints (each table's delta.checkpointInterval)."
    )
    manual_max_mb: int = Field(
        50,
        ge=1,
        le=1024,
        description="Largest manual file `pitstop manuals add` accepts, in MiB (split a bigger one).",
    )
    manuals_retrieval: Literal["bm25", "hybrid"] = Field(
        "bm25",
        description="How the assistant searches manuals: bm25 (words), or hybrid (BM25 plus a small "
        "embedding model shipped in the wordllama wheel, for questions in other words; needs "
        "pip install 'pitstop[dense]').",
    )
    # -- the device agent (pitstop agent; README "Edge agent") --
    agent_server: str = Field(
        "", description="The agent's Pitstop server, e.g. https://pitstop.example:8000 (or --server)."
    )
    agent_token_file: Path | None = Field(
        None, description="File holding the agent's device token (or --token-file); never logged."
    )
    agent_machine_id: str = Field("", description="The machine the agent runs on (or --machine-id).")
    agent_source: str = Field(
        "",
        description="Where the agent reads readings (or --source): tail:PATH (CSV/NDJSON), stdin, "
        "mqtt://host:port/topic, sim:harvester, plugin:NAME.",
    )
    agent_dir: Path = Field(
        Path("pitstop-agent"), description="The agent's folder: its buffer (buffer.db) and model cache."
    )
    agent_buffer_max_readings: int = Field(
        1_000_000,
        ge=2,
        description="Readings the agent's buffer holds (~450 bytes each on disk); when full, the oldest are "
        "thinned to half, then dropped, and both are counted.",
    )
    agent_batch_max: int = Field(1000, ge=1, le=100_000, description="Readings per batch the agent sends.")
    agent_send_interval_s: float = Field(
        1.0, gt=0, description="How often the agent sends what it has when it has less than a batch."
    )
    agent_retry_max_s: float = Field(
        60.0, gt=0, description="Longest wait between the agent's retries (jittered exponential backoff)."
    )
    agent_clock_tolerance_s: float = Field(
        5.0,
        gt=0,
        description="How far the agent's clock may stray from the server's Date before its readings' "
        "times are corrected.",
    )
    agent_compress: bool = Field(True, description="Send batches compressed with zstd.")
    agent_edge_scoring: bool = Field(
        True, description="Score on the device with the champion model, and alert locally while offline."
    )
    agent_alert_hook: str = Field(
        "",
        description="Command the agent runs on a local alert (the alert as JSON on stdin, PITSTOP_ALERT_* "
        "variables); empty: the alert is printed only.",
    )
    agent_model_refresh_s: float = Field(
        300.0, gt=0, description="How often the online agent asks for a newer champion model."
    )

    @field_validator("data_dir", "agent_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("agent_server")
    @classmethod
    def _agent_server(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(
                f"must be an http:// or https:// URL, e.g. http://pitstop.local:8000 (got {value!r})"
            )
        return value

    @field_validator("ops_db_url", "mlflow_tracking_uri", "mlflow_artifacts_uri", "lake_uri")
    @classmethod
    def _derived(cls, value: str, info: ValidationInfo) -> str:
        """Empty: the embedded default under data_dir; else checked for a scheme we can use."""
        data_dir = Path(info.data.get("data_dir") or "pitstop-data").expanduser()
        name = info.field_name
        if not value.strip():
            return {
                "ops_db_url": f"sqlite:///{(data_dir / 'ops.db').resolve()}",
                "mlflow_tracking_uri": f"sqlite:///{(data_dir / 'mlflow.db').resolve()}",
                "mlflow_artifacts_uri": str((data_dir / "mlartifacts").resolve()),
                "lake_uri": str((data_dir / "lake").resolve()),
            }[str(name)]
        value = value.strip()
        databases = ("ops_db_url", "mlflow_tracking_uri")
        if name in databases and not value.startswith(("sqlite:///", "postgresql")):
            raise ValueError(
                f"{value!r} is not a database URL Pitstop uses: sqlite:///path or "
                "postgresql+psycopg://user:password@host:5432/db"
            )
        if (
            name in ("mlflow_artifacts_uri", "lake_uri")
            and "://" in value
            and not value.startswith(("s3://", "file://"))
        ):
            raise ValueError(f"{value!r}: a local folder, or s3://bucket/prefix for object storage")
        return value

    @field_validator("s3_endpoint_url")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(
                f"{value!r} is not an endpoint URL: write it as http://host:port or https://host"
            )
        return value

    @field_validator("canary_schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        if value.strip():
            canary_steps(value)
        return value

    @field_validator("model_signing_key")
    @classmethod
    def _signing_key(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None and len(key.get_secret_value()) < 16:
            raise ValueError(
                "a model signing key needs at least 16 characters (e.g. `openssl rand -hex 32`); "
                "unset it to turn signing off"
            )
        return key

    @field_validator("webhook_urls", "alert_slack_urls", "alert_teams_urls", "alert_webhook_urls")
    @classmethod
    def _webhooks(cls, urls: list[str], info: ValidationInfo) -> list[str]:
        for url in urls:
            check_webhook_url(url, bool(info.data.get("webhook_allow_link_local")))
        return urls

    @model_validator(mode="after")
    def _email_route(self) -> Settings:
        if self.alert_email_to and not self.smtp_host:
            raise ValueError("alert_email_to needs smtp_host (the SMTP server that sends the emails)")
        return self

    # Paths derived from data_dir, in one place (the stores' URLs above default to places under it).
    @property
    def bus_path(self) -> Path:
        return self.data_dir / "bus.db"

    @property
    def lake_dir(self) -> Path:
        """The lake's local folder (a lake on object storage has none: see ``lake_is_local``)."""
        return Path(self.lake_uri.removeprefix("file://"))

    @property
    def lake_is_local(self) -> bool:
        return not self.lake_uri.startswith("s3://")

    @property
    def mlflow_uri(self) -> str:
        return self.mlflow_tracking_uri

    @property
    def mlflow_artifacts_dir(self) -> Path:
        """The local artifacts folder (artifacts on object storage have none)."""
        return Path(self.mlflow_artifacts_uri.removeprefix("file://"))


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from (lowest first) defaults, a TOML file, the environment, then overrides.

    Errors name the setting, the bad value and how to fix it.
    """
    values: dict[str, Any] = {}
    if config_file is not None:
        try:
            values.update(tomllib.loads(Path(config_file).read_text()))
        except FileNotFoundError:
            raise ConfigError(f"config file {config_file} does not exist: check the --config path") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from None
    try:
        from_env = Settings()  # defaults + PITSTOP_* variables
        values.update({name: getattr(from_env, name) for name in from_env.model_fields_set})
        values.update({k: v for k, v in overrides.items() if v is not None})
        return Settings(**values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]) or "settings"
            field = Settings.model_fields.get(name)
            help_text = f" ({field.description})" if field and field.description else ""
            problems.append(
                f"{name}: {err['msg']}{help_text}; fix it in the config file, "
                f"in PITSTOP_{name.upper()}, or on the command line"
            )
        raise ConfigError("invalid settings:\n  " + "\n  ".join(problems)) from None


def describe_settings() -> list[tuple[str, str, str, str]]:
    """(name, type, default, help) for each setting: feeds docs and ``pitstop settings``."""
    rows = []
    for name, field in Settings.model_fields.items():
        annotation = getattr(field.annotation, "__name__", str(field.annotation))
        default = str(field.default) if isinstance(field.default, Path) else repr(field.default)
        rows.append((name, annotation, default, field.description or ""))
    return rows


def settings_markdown() -> str:
    """The settings table for the README (a test keeps the README equal to this)."""
    lines = ["| setting | environment | type | default | what it does |", "|---|---|---|---|---|"]
    for name, kind, default, help_text in describe_settings():
        kind = kind.replace("pydantic.types.", "").replace(" | ", " or ")  # a pipe would split the cell
        lines.append(f"| `{name}` | `PITSTOP_{name.upper()}` | {kind} | `{default}` | {help_text} |")
    return "\n".join(lines)


def canary_steps(schedule: str) -> tuple[int, ...]:
    """A canary schedule (``5,25,50,100``) as its steps: rising percentages ending at 100."""
    try:
        steps = tuple(int(part) for part in schedule.replace(" ", "").split(",") if part)
    except ValueError:
        raise ValueError(
            f"canary_schedule {schedule!r}: comma-separated whole percentages, e.g. 5,25,50,100"
        ) from None
    if not steps:
        return ()
    if len(steps) < 2 or steps[-1] != 100 or any(not 0 < a < b for a, b in pairwise(steps)):
        raise ValueError(
            f"canary_schedule {schedule!r}: at least two rising percentages above 0, the last 100 "
            "(e.g. 5,25,50,100)"
        )
    return steps
