"""The retraining loop: a degraded challenger is never promoted; a good one is, without a human,
after its gate and its shadow readings; every step is in the audit log."""

from __future__ import annotations

import json
import threading
import time

from click.testing import CliRunner

from pitstop.cli import cli
from pitstop.monitoring.retrain import RetrainResult, retrain
from pitstop.platform import Platform
from pitstop.processor import Processor
from pitstop.training.pipeline import register, train_on_lake
from tests.test_deploy import reopen
from tests.test_processor import publish

WEAK = {"num_boost_round": 3, "learning_rate": 0.05}  # three trees: barely off the mean


def actions(platform: Platform) -> list[str]:
    return [e["action"] for e in reversed(platform.db.audit_entries(limit=1000))]


def test_a_degraded_challenger_is_never_promoted(trained: Platform) -> None:
    champion = trained.registry.alias_version("champion")
    result = retrain(trained, trigger="test", params=WEAK, shadow_readings=0)
    assert result.outcome == "rejected" and result.reason.startswith("gate: ")
    assert result.gate["challenger"]["cv_rmse"] > 2 * result.gate["champion"]["cv_rmse"]
    assert trained.registry.alias_version("champion") == champion  # untouched
    assert trained.registry.alias_version("challenger") is None
    log = actions(trained)
    assert log[-2:] == ["retrain_started", "retrain_rejected"] and "model_promoted" not in log
    # the CLI shows it
    out = CliRunner().invoke(cli, ["audit", "--data-dir", str(trained.settings.data_dir), "--json"])
    assert out.exit_code == 0
    rejected = json.loads(out.output.splitlines()[0])
    assert rejected["action"] == "retrain_rejected" and rejected["detail"]["reason"] == result.reason
    # and raised a retrain alert for the machine type, from that audit row
    from pitstop.monitoring.alerts import list_alerts

    (alert,) = list_alerts(trained.db, kind="retrain")
    assert alert["machine_type"] == "turbofan" and alert["severity"] == "warning"
    assert alert["summary"].startswith("retrain (test) rejected")


def test_a_good_challenger_is_gated_shadowed_and_promoted_on_its_own(trained: Platform) -> None:
    platform = reopen(trained)  # the processor checks the aliases before every batch
    try:
        # a stale champion: trained on five of last season's machines only
        hist = sorted(m for m in platform.lake.read("events")["machine_id"].unique() if m.startswith("hist"))
        weak = register(platform, train_on_lake(platform, exclude_machines=hist[5:]), alias="champion")
        platform.scorer.reload()
        proc = Processor(platform)
        proc.bootstrap()
        outcome: list[RetrainResult] = []
        worker = threading.Thread(
            target=lambda: outcome.append(
                retrain(platform, trigger="test", shadow_readings=40, shadow_timeout_s=300)
            )
        )
        worker.start()
        cycle, deadline = 0, time.monotonic() + 300
        while worker.is_alive():  # the live fleet keeps sending; the shadow waits for 40 readings
            assert time.monotonic() < deadline, "the retrain never finished"
            if "retrain_gate_passed" in actions(platform) and cycle < 150:
                for unit in (3, 4):
                    publish(platform, f"eng-{unit:03d}", unit, cycle, 5)
                cycle += 5
                proc.run_once()
            time.sleep(0.2)
        (result,) = outcome
        assert result.outcome == "promoted", result.reason
        assert result.gate["basis"] == "held-out machines the champion never saw fail"
        tolerance = 1 + platform.settings.retrain_tolerance
        assert result.gate["challenger"]["rmse"] <= result.gate["champion"]["rmse"] * tolerance
        assert result.shadow["readings"] >= 40 and result.shadow["invalid"] == 0
        assert platform.registry.alias_version("champion") == result.version != weak.version
        log = actions(platform)
        steps = ["retrain_started", "model_registered", "retrain_gate_passed", "retrain_shadow_passed"]
        assert [a for a in log if a in steps][-4:] == steps
        # (the processor, polled by run_once above, may already have switched: its own entry)
        assert [a for a in log if a != "model_switched"][-2:] == ["model_promoted", "retrain_promoted"]
        # the running processor serves it from the next batch
        publish(platform, "eng-003", 3, cycle, 5)
        proc.run_once()
        assert platform.scorer.model.version == result.version
    finally:
        platform.close()
