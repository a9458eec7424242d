"""Validation reports of the lake's datasets, kept as MLflow runs (``pitstop import`` logs one per
machine type in the ``pitstop-imports`` experiment)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pitstop.errors import ModelError, PitstopError, first_line
from pitstop.training.validation import ValidationReport, report_texts, validate_dataset

if TYPE_CHECKING:
    from pitstop.platform import Platform
    from pitstop.registry import Registry

IMPORT_EXPERIMENT = "pitstop-imports"


@dataclass(frozen=True)
class LoggedReport:
    report: ValidationReport
    run_id: str
    html: str  # where the HTML report is (an artifact URI)


def lake_reports(platform: Platform, dataset: str = "import") -> list[ValidationReport]:
    """One report per machine type with readings in the lake: its readings and events, newest."""
    from pitstop.training.pipeline import machines_of_type

    lake = platform.lake
    present = set(lake.columns("telemetry"))
    reports = []
    for mt in platform.fleet.machine_types.values():
        members = machines_of_type(platform, mt.name)
        if members is not None and not members:
            continue
        columns = ["machine_id", "ts", "seq", *(s for s in mt.sensor_names if s in present)]
        telemetry = lake.read("telemetry", columns=columns, machine_ids=members)
        if telemetry.height == 0 and members is not None:
            continue
        events = lake.read("events", machine_ids=members)
        cap = mt.rul_cap if mt.rul_cap is not None else None
        if cap is None and mt.unit_seconds is None:
            cap = float(platform.settings.rul_cap)
        reports.append(validate_dataset(telemetry, events, mt, dataset=dataset, rul_cap=cap))
    return reports


def log_report_run(
    registry: Registry, report: ValidationReport, run_name: str, tags: dict[str, str]
) -> LoggedReport:
    """An MLflow run in ``pitstop-imports`` holding the report (``validation/report.json`` and
    ``.html``), tagged with its verdict; a registry that cannot be used raises ``ModelError``."""
    try:
        client = registry.client
        experiment = client.get_experiment_by_name(IMPORT_EXPERIMENT)
        if experiment is None:
            location = registry.artifact_location("imports")
            experiment_id = client.create_experiment(IMPORT_EXPERIMENT, artifact_location=location)
        else:
            experiment_id = experiment.experiment_id
        all_tags = {
            "pitstop.machine_type": report.machine_type,
            "pitstop.validation_verdict": report.verdict,
            **{f"pitstop.{k}": v for k, v in tags.items()},
        }
        run = client.create_run(str(experiment_id), run_name=run_name, tags=all_tags)
        for name, text in report_texts(report).items():
            client.log_text(run.info.run_id, text, name)
        client.set_terminated(run.info.run_id)
    except PitstopError:
        raise
    except Exception as exc:  # MLflow's own errors, a store that is down, a full disk
        raise ModelError(
            f"could not keep the validation report in MLflow at {registry.tracking_uri}: {first_line(exc)}",
            code="registry_unavailable",
        ) from exc
    return LoggedReport(report, run.info.run_id, f"{run.info.artifact_uri}/validation/report.html")
