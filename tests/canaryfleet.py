"""A small turbofan fleet that lives, fails and is repaired, for the progressive canary's tests and
``bench/canary.py``: every round, each machine replays one FD001 test engine's last cycles (the
same engine for the whole fleet that round, with a little noise of its own) through the bus, in
micro-batches, and then fails when that engine's true RUL says it does. Each failure is scored by
the processor and counts for the arm whose predictions came before it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from pitstop.platform import Platform
from pitstop.processor import Processor
from pitstop.schema import TURBOFAN, Reading, encode_readings
from pitstop.sim import shipped

MACHINES = [f"eng-{u:03d}" for u in range(1, 13)]  # 25%: 2 machines on the challenger, 50%: 7
UNITS = (31, 34, 81, 76, 35, 20)  # long FD001 test engines that were close to failure
WEAK = {"num_boost_round": 3, "learning_rate": 0.05}  # three trees: barely off the mean
T0 = datetime(2026, 1, 1, tzinfo=UTC)
LIFE = 1000  # seqs per life: life r of a machine uses seqs r*LIFE + cycle


def same_model(platform: Platform) -> str:
    """The champion's bundle registered again as the challenger: as good as the champion."""
    champion = platform.registry.load("champion")
    version = platform.registry.log_and_register(champion.bundle, lineage={"lake_version": "test"})
    platform.registry.set_alias("challenger", version)
    return version


def worse_model(platform: Platform) -> str:
    """A three-tree model (barely off the mean RUL) as the challenger: clearly worse."""
    from pitstop.training.pipeline import register, train_on_lake

    return register(platform, train_on_lake(platform, params=WEAK), alias="challenger").version


def canary_steps(platform: Platform) -> list[dict[str, Any]]:
    """The canary's audit rows, oldest first."""
    rows = [
        e
        for e in platform.db.audit_entries(limit=1000)
        if e["action"].startswith("canary_") and e["actor"] == "canary"
    ]
    return [{"action": e["action"], **e["detail"]} for e in reversed(rows)]


class Fleet:
    """Drives MACHINES through lives in a processor, with failures recorded through the API."""

    def __init__(self, platform: Platform, proc: Processor, seed: int = 7) -> None:
        self.platform, self.proc = platform, proc
        self.rng = np.random.default_rng(seed)
        self.test = shipped("fd001_test")
        self.truth = dict(shipped("fd001_rul").iter_rows())

    def life(
        self,
        r: int,
        batches: int = 4,
        tail: int = 40,
        on_batch: Callable[[], None] | None = None,
        fail: bool = True,
    ) -> None:
        """Round ``r``: every machine runs engine UNITS[r]'s last cycles (the history before them in
        one batch, then ``tail`` cycles in ``batches`` batches, one prediction per machine each),
        then fails; the processor scores the failures (and weighs the canary) in its next batch."""
        unit = UNITS[r % len(UNITS)]
        rows = self.test.filter(unit=unit).sort("cycle")
        cycles = rows["cycle"].to_numpy()
        values = rows.select(TURBOFAN.sensor_names).to_numpy()
        spread = values.std(axis=0)
        noisy = {m: values + self.rng.normal(0, 0.1, values.shape) * spread for m in MACHINES}
        cuts = [
            0,
            len(cycles) - tail,
            *(len(cycles) - tail + (i + 1) * tail // batches for i in range(batches)),
        ]
        for lo, hi in pairwise(cuts):
            for machine in MACHINES:
                batch = [
                    Reading(
                        machine_id=machine,
                        ts=T0 + timedelta(minutes=r * LIFE + int(cycles[i])),
                        seq=r * LIFE + int(cycles[i]),
                        values=dict(zip(TURBOFAN.sensor_names, map(float, noisy[machine][i]), strict=True)),
                    )
                    for i in range(lo, hi)
                ]
                self.platform.bus.publish(encode_readings(batch, self.platform.lake.sensors))
            self.proc.run_once()
            if on_batch is not None:
                on_batch()
        if not fail:
            return
        failure = r * LIFE + int(cycles[-1]) + int(self.truth[unit])
        headers = {"Authorization": f"Bearer {self.platform.admin_token()}"}
        with TestClient(_app(self.platform, self.proc), headers=headers) as client:
            for machine in MACHINES:
                made = client.post(
                    "/api/v1/admin/events",
                    json={
                        "machine_id": machine,
                        "kind": "failure",
                        "seq": failure,
                        "ts": (T0 + timedelta(minutes=failure)).isoformat(),
                    },
                )
                assert made.status_code == 201, made.text
        self.proc.run_once()  # the failures are scored, the canary weighed


def _app(platform: Platform, proc: Processor) -> Any:
    from pitstop.web import create_app

    return create_app(platform, proc)
