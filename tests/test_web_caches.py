"""The dashboard's read caches return what a fresh read would."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from sqlalchemy import delete, select

from pitstop.platform import Platform
from pitstop.processor import Processor
from pitstop.store import Machine, Prediction
from pitstop.web.history import MachineHistory
from pitstop.web.trends import Trends
from tests.test_processor import publish


def _predict(platform: Platform, machine_id: str, n: int, rng: random.Random) -> None:
    now = datetime.now(UTC)
    with platform.db.session() as s:
        for seq in range(n):
            rul = rng.uniform(0, 200)
            s.add(
                Prediction(
                    machine_id=machine_id,
                    ts=now,
                    seq=seq,
                    rul=rul,
                    rul_lower=rul,
                    rul_upper=rul,
                    model_name="m",
                    model_version="1",
                    arm="champion",
                    created_at=now,
                )
            )


def _fresh(platform: Platform, points: int) -> dict[str, list[float]]:
    with platform.db.session() as s:
        rows = s.execute(select(Prediction.machine_id, Prediction.rul).order_by(Prediction.id)).all()
    out: dict[str, list[float]] = {}
    for machine_id, rul in rows:
        out.setdefault(machine_id, []).append(round(rul, 2))
    return {m: v[-points:] for m, v in out.items()}


def test_sparkline_trends_follow_new_predictions_and_a_shrunk_table(platform: Platform) -> None:
    rng = random.Random(3)
    now = datetime.now(UTC)
    with platform.db.session() as s:
        for i in range(5):
            s.add(Machine(machine_id=f"m-{i}", machine_type="turbofan", installed_at=now, created_at=now))
    trends = Trends(platform.db, keep=10)
    assert trends.get(5) == {}
    for i in range(5):
        _predict(platform, f"m-{i}", rng.randint(1, 25), rng)
    assert trends.get(5) == _fresh(platform, 5)
    for _ in range(3):  # new rows arrive between polls: only they are read
        _predict(platform, f"m-{rng.randint(0, 4)}", rng.randint(1, 7), rng)
        assert trends.get(7) == _fresh(platform, 7)
    assert trends.get(0) == {}
    with platform.db.session() as s:  # restored from an older backup: read again from scratch
        s.execute(delete(Prediction))
    _predict(platform, "m-1", 3, rng)
    assert trends.get(10) == _fresh(platform, 10)


def test_a_machines_history_is_read_again_after_a_new_commit(trained: Platform) -> None:
    proc = Processor(trained)
    proc.bootstrap()
    history = MachineHistory(trained.lake, size=2)
    assert history.get("eng-003").height == 0
    publish(trained, "eng-003", 3, 0, 20)
    proc.run_once()
    first = history.get("eng-003")
    assert first.height == 20 and history.get("eng-003") is first  # the same version: kept
    publish(trained, "eng-003", 3, 20, 5)
    proc.run_once()
    again = history.get("eng-003")
    assert again.height == 25 and sorted(again["seq"].to_list()) == list(range(1, 26))
