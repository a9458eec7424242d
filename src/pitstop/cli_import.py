"""``pitstop import readings | events``: bring a fleet's history in from CSV or Parquet files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pitstop.cli_common import _platform, _progress_bar, data_dir_option

if TYPE_CHECKING:
    from pitstop.platform import Platform

_file = click.Path(dir_okay=False, path_type=Path)
rejects_option = click.option(
    "--rejects",
    type=_file,
    default=None,
    help="Where to write rejected rows (default: <FILE>.rejects.csv next to each input).",
)


@click.group("import")
def import_group() -> None:
    """Bring a fleet's history in: readings, then events (CSV or Parquet)."""


@import_group.command("readings")
@data_dir_option
@click.argument("files", nargs=-1, required=True, type=_file)
@click.option(
    "--machine-type",
    default=None,
    help="The machine type of every row (default: a machine_type column, or the fleet's only type).",
)
@rejects_option
@click.pass_context
def readings(
    ctx: click.Context,
    data_dir: Path | None,
    files: tuple[Path, ...],
    machine_type: str | None,
    rejects: Path | None,
) -> None:
    """Import readings (machine_id, ts, one column per sensor) into the lake.

    Checked like HTTP intake: bad rows go to the reject file with their code, out-of-range rows to
    quarantine. Rows already stored are skipped, so an import can be run again. Exits 0 even with
    rejected rows; the last line is a JSON summary.
    """
    from pitstop.ingest.history import import_readings

    with _platform(ctx, data_dir) as p:
        progress, close = _progress_bar("reading", err=True)
        try:
            result = import_readings(
                list(files),
                lake=p.lake,
                db=p.db,
                fleet=p.fleet,
                max_future_skew_s=p.settings.max_future_skew_s,
                machine_type=machine_type,
                rejects=rejects,
                progress=progress,
            )
        finally:
            close()
        summary = result.to_dict() | {"validation": _validate(p, "readings", files)}
    _say(
        f"{result.rows:,} rows in {result.seconds:.1f} s ({result.rows_per_s:,.0f} rows/s): "
        f"{result.stored:,} stored, {result.quarantined:,} quarantined (out of range; "
        f"`pitstop quarantine list`), {result.duplicates:,} already stored or repeated, "
        f"{result.rejected:,} rejected, {result.machines:,} machines"
    )
    _say_rejects(result.rejected, [str(f) for f in result.rejects_files])
    click.echo(json.dumps(summary))


@import_group.command("events")
@data_dir_option
@click.argument("file", type=_file)
@rejects_option
@click.pass_context
def events(ctx: click.Context, data_dir: Path | None, file: Path, rejects: Path | None) -> None:
    """Import events (machine_id, ts, kind = failure | maintenance | inspection, optional component
    and detail) into the lake. Import the machines' readings first."""
    from pitstop.ingest.history_events import import_events

    with _platform(ctx, data_dir) as p:
        result = import_events(
            file,
            lake=p.lake,
            db=p.db,
            fleet=p.fleet,
            max_future_skew_s=p.settings.max_future_skew_s,
            rejects=rejects,
        )
        validation = _validate(p, "events", (file,))
    _say(
        f"{result.rows:,} events: {result.stored:,} stored, "
        f"{result.duplicates:,} already stored or repeated, {result.rejected:,} rejected"
    )
    if result.components_dropped:
        _say(
            f"note: {result.components_dropped:,} components were not stored: "
            "the lake's events table has no component column yet"
        )
    _say_rejects(result.rejected, [str(result.rejects_file)] if result.rejects_file else [])
    click.echo(json.dumps(result.to_dict() | {"validation": validation}))


def _validate(p: Platform, kind: str, files: tuple[Path, ...]) -> list[dict[str, Any]]:
    """Validate the lake's data per machine type after an import and keep each report with an
    MLflow run (experiment ``pitstop-imports``); say where. A registry that cannot be used costs
    the kept report, never the import."""
    from pitstop.errors import PitstopError
    from pitstop.training.validation_runs import lake_reports, log_report_run

    out = []
    for report in lake_reports(p):
        entry: dict[str, Any] = {"machine_type": report.machine_type, "verdict": report.verdict}
        try:
            logged = log_report_run(
                p.registry_for(report.machine_type),
                report,
                f"import {kind}",
                {"import_kind": kind, "files": ", ".join(str(f) for f in files)[:4000]},
            )
        except PitstopError as exc:
            _say(f"validation report of {report.machine_type} ({report.verdict}) not kept: {exc.message}")
        else:
            entry |= {"run_id": logged.run_id, "report": logged.html}
            _say(f"validation of {report.machine_type}: {report.verdict}; report: {logged.html}")
        for problem in report.problems:
            _say(f"  {problem.severity}: {problem.message}")
        out.append(entry)
    return out


def _say(text: str) -> None:
    click.echo(text, err=True)


def _say_rejects(count: int, files: list[str]) -> None:
    if count:
        _say(f"{count:,} rows rejected, each with its code and reason: see {', '.join(files)}")
