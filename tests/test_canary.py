"""The progressive canary through the real processor: a good challenger advances step by step
and is promoted; a worse one is rolled back on its own; every step is audited and survives a
restart."""

from __future__ import annotations

import json

from click.testing import CliRunner
from fastapi.testclient import TestClient

from pitstop.cli import cli
from pitstop.platform import Platform
from pitstop.processor import Processor
from pitstop.store import Prediction
from tests.canaryfleet import MACHINES, Fleet, canary_steps, same_model, worse_model
from tests.conftest import admin_headers, make_settings
from tests.test_deploy import reopen

CANARY = {
    "deployment": "canary",
    "canary_schedule": "25,50,100",
    "canary_step_min_s": 0,
    "canary_step_failures": 2,
    "canary_check_s": 0,
}


def served(platform: Platform, after_id: int = 0) -> set[tuple[str, str]]:
    from sqlalchemy import select

    with platform.db.session() as s:
        rows = s.execute(
            select(Prediction.arm, Prediction.model_version).where(
                Prediction.id > after_id, Prediction.machine_id.in_(MACHINES)
            )
        ).all()
    return {(a, v) for a, v in rows}


def last_prediction_id(platform: Platform) -> int:
    from sqlalchemy import func, select

    with platform.db.session() as s:
        return int(s.scalar(select(func.max(Prediction.id))) or 0)


def test_a_good_challenger_advances_step_by_step_and_is_promoted(trained: Platform) -> None:
    platform = reopen(trained, **CANARY)
    data_dir = platform.settings.data_dir
    try:
        v1 = platform.registry.alias_version("champion")
        v2 = same_model(platform)
        proc = Processor(platform)
        proc.bootstrap()
        deployment = platform.deployments[platform.default_type]
        assert deployment.options.challenger_percent == 25  # the first step, before any batch
        Fleet(platform, proc).life(0)
        assert [(s["action"], s["to_percent"]) for s in canary_steps(platform)] == [
            ("canary_started", 25),
            ("canary_advanced", 50),
        ]
        advanced = canary_steps(platform)[-1]["evidence"]
        assert advanced["mae_at_failure"]["verdict"] != "worse"
        assert advanced["mae_at_failure"]["n"] == {"champion": 10, "challenger": 2}
        assert advanced["step_failures"] == 2
    finally:
        platform.close()

    # a restart resumes at the step reached (from the audit log), it does not start again
    platform = Platform.open(make_settings(data_dir, serving_poll_s=0, **CANARY))
    try:
        proc = Processor(platform)
        proc.bootstrap()
        assert platform.deployments[platform.default_type].options.challenger_percent == 50
        before = last_prediction_id(platform)
        Fleet(platform, proc, seed=8).life(1)
        steps = canary_steps(platform)
        assert [(s["action"], s["to_percent"]) for s in steps] == [
            ("canary_started", 25),
            ("canary_advanced", 50),
            ("canary_completed", 100),
        ]
        assert steps[-1]["evidence"]["step_failures"] == 7  # the machines the 50% step adds
        assert platform.registry.alias_version("champion") == v2
        assert platform.registry.alias_version("previous-champion") == v1
        promoted = platform.db.audit_entries(limit=5, action="model_promoted")[0]
        assert promoted["actor"] == "canary" and promoted["detail"]["to_version"] == v2
        assert {v for _, v in served(platform, before)} == {v1, v2}
        # the report, by CLI and API, says the same
        with TestClient(create_app(platform), headers=admin_headers(platform)) as client:
            api = client.get("/api/v1/deployments").json()
        out = CliRunner().invoke(cli, ["deployments", "report", "--json", "--data-dir", str(data_dir)])
        assert out.exit_code == 0, out.output
        assert (
            json.loads(out.output.splitlines()[-1])["machine_types"]["turbofan"]["canary"]
            == api["machine_types"]["turbofan"]["canary"]
        )
        assert api["machine_types"]["turbofan"]["canary"]["action"] == "canary_completed"
    finally:
        platform.close()


def create_app(platform: Platform) -> object:
    from pitstop.web import create_app as make

    return make(platform)


def test_a_worse_challenger_is_rolled_back_on_its_own(trained: Platform) -> None:
    platform = reopen(trained, **CANARY)
    data_dir = platform.settings.data_dir
    try:
        v1 = platform.registry.alias_version("champion")
        v2 = worse_model(platform)
        proc = Processor(platform)
        proc.bootstrap()
        Fleet(platform, proc).life(0)
        steps = canary_steps(platform)
        assert [(s["action"], s["to_percent"]) for s in steps] == [
            ("canary_started", 25),
            ("canary_rolled_back", 0),
        ]
        errors = steps[-1]["evidence"]["mae_at_failure"]
        assert errors["verdict"] == "worse" and errors["p_value"] < 0.05
        assert errors["challenger"] > errors["champion"]
        assert "MAE at failures" in steps[-1]["reason"]
        assert platform.registry.alias_version("champion") == v1  # nothing promoted
        withdrawn = platform.db.audit_entries(limit=5, action="challenger_withdrawn")[0]
        assert withdrawn["actor"] == "canary" and withdrawn["detail"]["version"] == v2
        before = last_prediction_id(platform)
        Fleet(platform, proc, seed=8).life(1, batches=1, fail=False)
        assert served(platform, before) == {("champion", v1)}  # the challenger serves no machine
    finally:
        platform.close()

    # after a restart it stays withdrawn: its alias has not moved
    platform = Platform.open(make_settings(data_dir, serving_poll_s=0, **CANARY))
    try:
        proc = Processor(platform)
        proc.bootstrap()
        before = last_prediction_id(platform)
        Fleet(platform, proc, seed=9).life(2, batches=1, fail=False)
        assert served(platform, before) == {("champion", v1)}
        assert [s["action"] for s in canary_steps(platform)] == ["canary_started", "canary_rolled_back"]
    finally:
        platform.close()


def test_each_step_is_judged_once_on_its_own_failures_at_its_share_of_alpha(trained: Platform) -> None:
    """Failures written as the processor's monitor writes them (``failure_scored``), to fix the
    numbers: the second step's challenger is worse by p = 0.036, which is no evidence at that
    step's alpha (0.05 over two deciding steps); pooled with the first step's easier failures it
    would look far worse."""
    platform = reopen(trained, **CANARY)
    try:
        v1 = platform.registry.alias_version("champion")
        v2 = same_model(platform)
        proc = Processor(platform)
        proc.bootstrap()
        canary = proc.canaries["turbofan"]

        def failures(arm: str, version: str, maes: list[float]) -> None:
            for i, mae in enumerate(maes):
                platform.db.audit(
                    "monitor",
                    "failure_scored",
                    machine_id=f"eng-{i + 1:03d}",
                    caught_in_time=True,
                    arms=[{"arm": arm, "version": version, "predictions": 5, "mae": mae, "rmse": mae}],
                    arm_at_failure={"arm": arm, "version": version},
                )

        assert canary.check(force=True) is None  # no evidence yet: no look at the numbers
        failures("champion", v1, [1.5, 1.7, 1.3, 1.6, 1.4] * 2)
        failures("canary", v2, [1.5])
        assert canary.check(force=True) is None  # one failure on the challenger's arm: not yet
        failures("canary", v2, [1.6])
        assert canary.check(force=True) == "canary_advanced"
        assert platform.deployments["turbofan"].options.challenger_percent == 50

        failures("champion", v1, [3.0, 3.2, 2.8, 3.1, 2.9])
        failures("canary", v2, [x + 0.22 for x in (3.0, 3.2, 2.8, 3.1, 2.9, 3.05, 2.95)])
        assert canary.check(force=True) == "canary_completed"
        decided = canary_steps(platform)[-1]["evidence"]
        assert decided["alpha"] == 0.025
        assert 0.025 < decided["mae_at_failure"]["p_value"] < 0.05
        assert decided["mae_at_failure"]["n"] == {"champion": 5, "challenger": 7}  # this step's only
        assert platform.registry.alias_version("champion") == v2
        assert platform.registry.alias_version("challenger") is None
    finally:
        platform.close()
