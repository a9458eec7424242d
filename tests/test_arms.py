"""Deployments judged by numbers: the tests per metric (verdicts, the sample size they need) and
the arms report against a hand-computed case, by API and CLI."""

from __future__ import annotations

import json
import math
from datetime import timedelta

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from scipy import stats

from pitstop.cli import cli
from pitstop.monitoring.arms import Arms, arms_report
from pitstop.monitoring.stats import (
    compare_counts,
    compare_distributions,
    compare_errors,
    compare_rates,
    n_for_means,
    n_for_proportions,
)
from pitstop.platform import Platform
from pitstop.store import Machine, Prediction, WorkOrder, utcnow
from tests.conftest import admin_headers


def test_the_sample_sizes_needed_are_the_textbook_ones() -> None:
    # two means one standard deviation apart by half: 63 per group; 50% against 30%: 93 per group
    assert n_for_means(1.0, 0.5) == 63
    assert n_for_proportions(0.5, 0.3) == 93
    assert n_for_means(0.0, 1.0) is None and n_for_proportions(0.4, 0.4) is None


def test_a_clearly_worse_arm_is_worse_and_identical_arms_give_no_evidence() -> None:
    rng = np.random.default_rng(1)
    good, bad = rng.normal(10, 2, 30), rng.normal(20, 2, 30)
    worse = compare_errors("mae", good, bad)
    assert worse.verdict == "worse" and worse.p_value is not None and worse.p_value < 1e-6
    assert worse.p_value == pytest.approx(stats.ttest_ind(bad, good, equal_var=False).pvalue, abs=1e-6)
    assert worse.effect == pytest.approx(bad.mean() - good.mean(), abs=1e-3)
    assert compare_errors("mae", bad, good).verdict == "better"
    same = compare_errors("mae", good, good.copy())
    assert same.verdict == "no evidence" and same.p_value == pytest.approx(1.0)
    # n needed: a fifth of the champion's mean (2.0) at the observed spread (sd about 2): ~16
    assert same.n_needed == n_for_means(float(good.std(ddof=1)), 0.2 * float(good.mean()))
    assert same.n_needed is not None and 10 < same.n_needed < 30
    few = compare_errors("mae", good[:1], bad[:1])
    assert few.verdict == "no evidence" and few.p_value is None  # one failure per arm: no test

    caught = compare_rates("caught", (18, 20), (4, 20))
    assert caught.verdict == "worse" and caught.p_value == pytest.approx(
        stats.fisher_exact([[4, 16], [18, 2]]).pvalue, abs=1e-6
    )
    even = compare_rates("caught", (10, 20), (10, 20))
    assert even.verdict == "no evidence" and even.n_needed == 93  # 0.5 against 0.3

    shifted = compare_distributions("rul", good, bad)
    assert shifted.verdict == "different" and shifted.effect == pytest.approx(
        np.median(bad) - np.median(good), abs=1e-3
    )
    alike = compare_distributions("rul", good, good.copy())
    # a shift of 0.2 sd by Mann-Whitney: the t-test's 393 over its efficiency 3/pi
    assert alike.verdict == "no evidence" and alike.n_needed == 411

    more = compare_counts("orders", (10, 1000), (40, 1000))
    assert more.verdict == "different" and more.effect == pytest.approx(4.0)
    assert more.p_value == pytest.approx(stats.binomtest(40, 50, 0.5).pvalue, abs=1e-6)
    assert compare_counts("orders", (10, 1000), (10, 1000)).verdict == "no evidence"


def _fill(platform: Platform) -> None:
    """A canary (champion version 1, challenger version 2) of turbofan, written by hand."""
    t0 = utcnow() - timedelta(hours=1)
    with platform.db.session() as s:
        for machine, kind in [("m1", "turbofan"), ("m2", "turbofan"), ("m3", "turbofan"), ("m4", "turbofan")]:
            s.add(Machine(machine_id=machine, machine_type=kind, installed_at=t0, created_at=t0))
        s.add(Machine(machine_id="x9", machine_type="pump", installed_at=t0, created_at=t0))
        rows = [
            ("m1", 10, "champion", "1"),
            ("m1", 20, "champion", "1"),
            ("m2", 30, "champion", "1"),
            ("m2", 40, "champion", "1"),
            ("m2", 50, "champion", "1"),
            ("m3", 100, "canary", "2"),
            ("m3", 110, "canary", "2"),
            ("m1", 999, "champion", "0"),  # an older champion: not in the comparison
        ]
        for i, (machine, rul, arm, version) in enumerate(rows):
            s.add(
                Prediction(
                    machine_id=machine,
                    ts=t0,
                    seq=i,
                    rul=rul,
                    rul_lower=rul - 5,
                    rul_upper=rul + 5,
                    model_name="m",
                    model_version=version,
                    arm=arm,
                    created_at=t0,
                )
            )
        for machine, version in [("m1", "1"), ("m1", "1"), ("m2", "1"), ("m3", "2"), ("x9", "1")]:
            s.add(
                WorkOrder(
                    machine_id=machine,
                    status="open",
                    priority="high",
                    reason="test",
                    predicted_rul=5.0,
                    model_version=version,
                    opened_at=t0 + timedelta(minutes=1),
                )
            )

    def failure(machine: str, caught: bool, *arms: tuple[str, str, int, float, float]) -> None:
        platform.db.audit(
            "monitor",
            "failure_scored",
            machine_id=machine,
            caught_in_time=caught,
            arms=[
                {"arm": a, "version": v, "predictions": n, "mae": mae, "rmse": rmse}
                for a, v, n, mae, rmse in arms
            ],
            arm_at_failure={"arm": arms[-1][0], "version": arms[-1][1]},
        )

    failure("m1", True, ("champion", "1", 2, 4.0, 5.0))
    failure("m2", False, ("champion", "1", 3, 6.0, 6.0))
    failure("m3", True, ("canary", "2", 4, 20.0, 25.0))
    failure("m4", False, ("champion", "1", 1, 1.0, 1.0), ("canary", "2", 1, 2.0, 2.0))  # moved mid-life
    failure("x9", False, ("champion", "1", 9, 100.0, 100.0))  # another type's machine
    platform.db.audit("guard", "challenger_withdrawn", machine_type="turbofan", version="2", reason="x")
    platform.db.audit("guard", "challenger_withdrawn", machine_type="pump", version="2", reason="x")


def test_the_arms_report_matches_a_hand_computed_case(platform: Platform) -> None:
    _fill(platform)
    report = arms_report(platform.db, Arms("turbofan", "m", "canary", 25, "1", "2"))
    champion, challenger = report["arms"]["champion"], report["arms"]["challenger"]
    assert champion["predictions"] == {
        "n": 5,
        "machines": 2,
        "mean": 30.0,
        "quantiles": {"p05": 12.0, "p25": 20.0, "p50": 30.0, "p75": 40.0, "p95": 48.0},
        "sample": 5,
    }
    assert challenger["predictions"]["n"] == 2 and challenger["predictions"]["mean"] == 105.0
    # MAE over the 5 predictions before m1's and m2's failures: (2*4 + 3*6) / 5; RMSE likewise
    assert champion["failures"] == {
        "scored": 2,
        "predictions": 5,
        "mae": 5.2,
        "rmse": round(math.sqrt((2 * 25 + 3 * 36) / 5), 4),
        "mae_per_failure": 5.0,
        "mae_per_failure_sd": round(math.sqrt(2), 4),
        "at_failure": 2,
        "caught_in_time": 1,
        "caught_rate": 0.5,
    }
    assert challenger["failures"]["scored"] == 1 and challenger["failures"]["rmse"] == 25.0
    assert report["failures_mixed"] == 1  # m4 counts for neither arm
    assert champion["work_orders"] == {
        "opened": 3,
        "machines": 2,
        "per_machine": 1.5,
        "per_1000_readings": 600.0,
    }
    assert (
        challenger["work_orders"]["opened"] == 1 and challenger["work_orders"]["per_1000_readings"] == 500.0
    )
    assert (champion["guard_events"]["count"], challenger["guard_events"]["count"]) == (0, 1)

    by_metric = {c["metric"]: c for c in report["comparisons"]}
    errors = by_metric["mae_at_failure"]
    # one failure on the challenger's arm: no test yet, and the failures per arm it would need to
    # see a fifth of the champion's 5.0 at the champion's spread (sd sqrt 2): 2 (1.96+0.84)^2 2
    assert errors["verdict"] == "no evidence" and errors["p_value"] is None and errors["effect"] == 15.0
    assert errors["n_needed"] == 32 and errors["n"] == {"champion": 2, "challenger": 1}
    rul = by_metric["predicted_rul"]
    assert rul["p_value"] == pytest.approx(2 / 21, abs=1e-6) and rul["effect"] == 75.0  # exact U test
    orders = by_metric["work_orders_per_reading"]
    assert orders["p_value"] == pytest.approx(stats.binomtest(1, 4, 2 / 7).pvalue, abs=1e-6)
    assert by_metric["caught_in_time"]["n"] == {"champion": 2, "challenger": 1}


def test_the_api_and_the_cli_give_the_same_report(platform: Platform) -> None:
    _fill(platform)
    with TestClient(_app(platform), headers=admin_headers(platform)) as client:
        api = client.get("/api/v1/deployments")
        unknown = client.get("/api/v1/deployments", params={"machine_type": "harvester"})
    assert api.status_code == 200, api.text
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_machine_type"
    data_dir = str(platform.settings.data_dir)
    out = CliRunner().invoke(cli, ["deployments", "report", "--json", "--data-dir", data_dir])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output.splitlines()[-1]) == api.json()
    assert set(api.json()["machine_types"]) == {"turbofan"} and api.json()["power"] == 0.8
    bad = CliRunner().invoke(cli, ["deployments", "report", "--machine-type", "nope", "--data-dir", data_dir])
    assert bad.exit_code == 2 and "unknown_machine_type" in bad.output


def _app(platform: Platform) -> object:
    from pitstop.web import create_app

    return create_app(platform)


@pytest.mark.parametrize("schedule", ["50,25,100", "5,25,50", "a,b", "100", "0,50,100"])
def test_a_canary_schedule_that_cannot_run_is_refused_at_start_with_an_example(schedule: str) -> None:
    from pitstop.config import canary_steps, load_settings
    from pitstop.errors import ConfigError

    with pytest.raises(ConfigError, match=r"canary_schedule.*e\.g\. 5,25,50,100"):
        load_settings(None, canary_schedule=schedule)
    assert canary_steps(" 5, 25,50,100") == (5, 25, 50, 100) and canary_steps("") == ()
