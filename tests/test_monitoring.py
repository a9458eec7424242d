"""Drift: the statistics against scipy, and the live monitor on the champion's training profile:
a +3σ shift on one sensor raises an alert within one window, and nothing else does."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy.stats import ks_2samp

from pitstop.features import build_features
from pitstop.monitoring.drift import PREDICTION, adjust, drift_between, drift_from_profile, reference_profile
from pitstop.monitoring.monitor import DriftMonitor, DriftReport
from pitstop.platform import Platform


def test_ks_matches_scipy_and_profiles_stay_close() -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(5000, 4))
    cur = rng.normal(size=(3000, 4))
    cur[:, 1] += 0.2
    ref[:, 3] = cur[:, 3] = 2.0  # a constant feature never drifts
    names = ["a", "b", "c", "d"]
    exact = drift_between(ref, cur, names, psi_threshold=0.0)
    for j in range(3):
        expected = ks_2samp(ref[:, j], cur[:, j], method="asymp")
        assert exact[j].ks == pytest.approx(expected.statistic, abs=1e-12)
        assert exact[j].p_value == pytest.approx(expected.pvalue, rel=1e-9)  # the same asymptotics
    assert [d.drifted for d in exact] == [False, True, False, False]
    profiled = drift_from_profile(reference_profile(ref, names), names, cur, psi_threshold=0.0)
    clear = [j for j in range(4) if not 0.005 < exact[j].p_adjusted < 0.5]  # not borderline by chance
    assert 1 in clear and [profiled[j].drifted for j in clear] == [exact[j].drifted for j in clear]
    assert all(abs(p.ks - e.ks) <= 0.006 for p, e in zip(profiled, exact, strict=True))
    assert profiled[3].ks == 0 and profiled[3].psi == 0


def test_corrections() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.5])
    assert adjust(p, "bonferroni").tolist() == pytest.approx([0.04, 0.16, 0.12, 1.0])
    assert adjust(p, "holm").tolist() == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert adjust(p, "bh").tolist() == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.5])


def _window(
    platform: Platform, shift_sensor: str | None, rows: int, seed: int = 3
) -> tuple[np.ndarray, list[str]]:
    """``rows`` feature rows drawn from last season (the champion's training data), with a +3σ
    shift on one sensor's raw readings first."""
    bundle = platform.scorer.model.bundle
    spec = bundle.spec
    telemetry = platform.lake.read("telemetry", columns=["machine_id", "ts", "seq", *spec.inputs]).filter(
        pl.col("machine_id").str.starts_with("hist")
    )
    if shift_sensor is not None:
        sigma = telemetry[shift_sensor].std()
        telemetry = telemetry.with_columns(pl.col(shift_sensor) + 3 * sigma)
    features = build_features(telemetry, spec, platform.lake.read("events")).sort("machine_id", "seq")
    pick = np.random.default_rng(seed).choice(features.height, rows, replace=False)
    return features.select(spec.names).to_numpy()[pick], spec.names


def test_a_3_sigma_shift_on_one_sensor_alerts_within_one_window_and_nothing_else(trained: Platform) -> None:
    bundle = trained.scorer.model.bundle
    assert "quantiles" in bundle.reference["s3__last"] and PREDICTION in bundle.reference
    reports: list[tuple[DriftReport, dict[str, list[str]]]] = []
    monitor = DriftMonitor(window=500, on_report=lambda r, raised, cleared: reports.append((r, raised)))

    def check(rows: np.ndarray, names: list[str]) -> DriftReport:
        predictions, _, _ = bundle.predict(rows)
        (report,) = monitor.observe(bundle.reference, names, rows, predictions, ["turbofan"] * len(rows))[:1]
        return report

    calm, names = _window(trained, None, 500)
    report = check(calm, names)
    assert report.scope == "fleet" and report.drifted_sensors == {}
    assert report.prediction is not None and not report.prediction.drifted
    assert monitor.latest["type:turbofan"].drifted_sensors == {}  # and per machine type

    shifted, _ = _window(trained, "s3", 500)
    report = check(shifted, names)
    assert set(report.drifted_sensors) == {"s3"}  # one window, one sensor, nothing else
    assert all(f.startswith("s3__") for f in report.drifted_sensors["s3"])
    assert "s3" in reports[-1][1] or "s3" in reports[-2][1]  # raised (once per scope)


def test_a_failure_scores_the_live_predictions_made_before_it(trained: Platform) -> None:
    from fastapi.testclient import TestClient

    from pitstop.processor import Processor
    from pitstop.web import create_app
    from tests.test_processor import publish

    proc = Processor(trained)
    proc.bootstrap()
    # FD001 test unit 31 (196 cycles): its last cycle is 8 before its failure; one prediction per
    # micro-batch, so the last fifty cycles go in batches of five
    for start, n in [(0, 50), (50, 50), (100, 46), *((s, 5) for s in range(146, 200, 5))]:
        publish(trained, "eng-031", 31, start, n)
        proc.run_once()
    last = proc.state.last["eng-031"]
    admin = {"authorization": f"Bearer {trained.admin_token()}"}
    with TestClient(create_app(trained, proc)) as client:
        bad = client.post(
            "/api/v1/admin/events", json={"machine_id": "eng-999", "kind": "failure"}, headers=admin
        )
        assert bad.status_code == 404 and bad.json()["error"]["code"] == "machine_not_found"
        assert (
            client.post("/api/v1/admin/events", json={"machine_id": "eng-031", "kind": "failure"}).status_code
            == 401
        )
        unknown = client.post(
            "/api/v1/admin/events",
            json={"machine_id": "eng-031", "kind": "failure", "component": "propeller"},
            headers=admin,
        )
        assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "unknown_component"
        made = client.post(
            "/api/v1/admin/events",
            json={"machine_id": "eng-031", "kind": "failure", "seq": last + 8, "component": "fan"},
            headers=admin,
        )
        assert made.status_code == 201, made.text
        proc.run_once()  # the processor sees the failure between batches
        body = client.get("/api/v1/monitoring/performance", headers=admin).json()
        metrics = client.get("/metrics").text
    (report,) = body["failures"]
    assert trained.lake.read("events", machine_ids=["eng-031"])["component"].to_list() == ["fan"]
    assert report["machine_id"] == "eng-031" and report["failure_seq"] == last + 8
    assert report["predictions"] > 0 and {h["horizon"] for h in report["by_horizon"]} >= {"0-10", "10-30"}
    near = next(h for h in report["by_horizon"] if h["horizon"] == "10-30")
    assert near["mae"] < 15  # near failure the model is close
    assert report["work_order"]["lead"] >= trained.settings.lead_time and report["caught_in_time"]
    assert 'pitstop_failures_scored_total{outcome="caught"} 1.0' in metrics
    assert 'pitstop_work_orders{state="open"}' in metrics


def test_the_grafana_dashboard_queries_only_metrics_we_export() -> None:
    import json
    import re
    from pathlib import Path

    from pitstop.monitoring import Metrics

    dashboard = json.loads(
        (Path(__file__).parents[1] / "deploy" / "grafana" / "pitstop-dashboard.json").read_text()
    )
    exported = {family.name for family in Metrics().registry.collect()}
    used = {
        re.sub(r"_(total|bucket|count|sum)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"pitstop_[a-z_]+", target["expr"])
    }
    assert used and used <= exported, sorted(used - exported)
    assert {
        "pitstop_drift_psi",
        "pitstop_work_orders",
        "pitstop_serving_model_info",
        "pitstop_bus_lag_messages",
    } <= used
