"""``pitstop deployments report``: each machine type's champion and challenger arms, by numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from pitstop.cli_common import _platform, data_dir_option


@click.group()
def deployments() -> None:
    """Deployments (shadow, canary, A/B) judged by numbers."""


@deployments.command("report")
@data_dir_option
@click.option("--machine-type", default=None, help="Only this machine type (default: every type).")
@click.option("--json", "as_json", is_flag=True, help="Only the JSON object (no summary).")
@click.pass_context
def report(ctx: click.Context, data_dir: Path | None, machine_type: str | None, as_json: bool) -> None:
    """Per machine type and arm (champion's version, challenger's version): prediction
    distribution, live error at failures, work orders opened and guard events, with a test per
    metric (p-value, effect, verdict) and the failures or readings per arm it needs to detect a
    stated effect at alpha and power 0.8. The last line is one JSON object (the same as
    ``GET /api/v1/deployments``)."""
    from pitstop.monitoring.arms import deployments_report

    with _platform(ctx, data_dir) as platform:
        body = deployments_report(
            platform.db, platform.deployments, platform.settings.deployments_alpha, machine_type
        )
    if not as_json:
        for name, one in body["machine_types"].items():
            click.echo(_summary(name, one), err=True)
    click.echo(json.dumps(body, default=str))


def _summary(name: str, one: dict[str, Any]) -> str:
    lines = [f"{name}: {one['mode']} deployment, challenger share {one['challenger_percent']}%"]
    for side in ("champion", "challenger"):
        arm = one["arms"].get(side)
        if arm is None:
            lines.append(f"  {side}: none")
            continue
        p, f, w = arm["predictions"], arm["failures"], arm["work_orders"]
        lines.append(
            f"  {side} v{arm['version']}: {p['n']} predictions on {p['machines']} machines "
            f"(median {(p['quantiles'] or {}).get('p50')}), {f['scored']} failures scored "
            f"(MAE {f['mae']}, caught {f['caught_in_time']}/{f['at_failure']}), "
            f"{w['opened']} work orders, {arm['guard_events']['count']} guard events"
        )
    for c in one["comparisons"]:
        lines.append(
            f"  {c['metric']}: {c['verdict']} ({c['test']}, p={c['p_value']}, effect {c['effect']}, "
            f"n {c['n']['challenger']} vs {c['n']['champion']}, needed {c['n_needed']} per arm "
            f"for {c['target']})"
        )
    if one.get("canary"):
        c = one["canary"]
        lines.append(f"  canary: {c['action']} at {c.get('to_percent')}% (version {c.get('version')})")
    return "\n".join(lines)
