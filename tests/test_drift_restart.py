"""A drift alert still firing when the processor restarts clears, like one raised since, once its
sensor is back in line: no alert is left firing for ever by a restart."""

from __future__ import annotations

from sqlalchemy import select

from pitstop.platform import Platform
from pitstop.processor import Processor
from pitstop.store import Alert
from tests.test_deploy import reopen
from tests.test_retrain_triggers import FLEET, publish


def firing(platform: Platform) -> list[str]:
    with platform.db.session() as s:
        return [
            a.key for a in s.scalars(select(Alert).where(Alert.status == "firing", Alert.kind == "drift"))
        ]


def test_a_drift_alert_firing_across_a_restart_clears_when_the_sensor_is_back_in_line(
    trained: Platform,
) -> None:
    platform = reopen(trained, drift_window=50)
    try:
        first = Processor(platform)
        first.bootstrap()
        for b in range(6):  # two of ten machines with an offset s3: a consistency alert
            for u, machine in enumerate(FLEET, 1):
                publish(platform, machine, u, 10 * b, 10, {"s3": 25.0} if u in (7, 10) else {})
            first.run_once()
        assert firing(platform) == ["drift:type:turbofan:s3"]

        restarted = Processor(platform)  # a new process: its monitor starts empty but for the alerts
        restarted.bootstrap()
        for b in range(6, 18):  # the sensors fixed (FD001 units 7 and 10 run on the longest)
            for u, machine in enumerate(FLEET, 1):
                publish(platform, machine, u, 10 * b, 10, {})
            restarted.run_once()
        cleared = platform.db.audit_entries(limit=10, action="drift_cleared")
        assert [e["detail"]["sensor"] for e in cleared] == ["s3"]
        assert firing(platform) == []
    finally:
        platform.close()
