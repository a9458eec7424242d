"""The two fleets the assistant's evaluation set is asked about, built by seed.

- ``turbofan``: the demo's trained data dir (last season seeded, the live fleet registered, a
  champion), the live fleet replayed through the bus and the processor for ``TURBOFAN_STEPS``
  one-second batches (engines wear, work orders open), then a few lifecycle moves by real users
  (an order acknowledged, one closed as fault confirmed, an inspection and a failure recorded) so
  history and audit questions have answers.
- ``harvesters``: the shipped fleet file applied, a small last season simulated by seed and
  imported, a champion trained, a small live fleet replayed through the processor, the same kind
  of lifecycle moves.

Each data dir also holds ``eval-users.json``: one user per role and an API key each. Timestamps
and exact figures depend on when the fleet is built; the evaluation reads them from the live API.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
from sqlalchemy import select

from pitstop.config import load_settings
from pitstop.platform import Platform
from pitstop.processor import Processor
from pitstop.schema import Reading, encode_readings
from pitstop.store import WorkOrder

USERS_FILE = "eval-users.json"
USERS = {"viewer": "vera", "technician": "tess", "engineer": "eli", "admin": "ada"}
TURBOFAN_STEPS = 120
HARVESTER_HISTORY = (6, 180)  # machines, days
HARVESTER_FOLDS = 2  # cross-validation folds when training (the default 5 triples the time)
HARVESTER_LIVE = (6, 60)  # machines, days up to LIVE_END
LIVE_END = datetime(2025, 12, 15, tzinfo=UTC)  # fixed (the simulation depends on the date), in the past
HARVESTER_SEED = 7

Echo = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def _open(root: Path) -> Platform:
    return Platform.open(load_settings(None, data_dir=root))


def seed_turbofan(root: Path) -> Path:
    """The demo's trained data dir (as ``tests/conftest.py``'s ``trained_dir``)."""
    from pitstop.demo import ensure_champion, ensure_live_fleet, seed_last_season

    p = _open(root)
    try:
        seed_last_season(p, echo=_quiet)
        ensure_live_fleet(p)
        ensure_champion(p, echo=_quiet)
    finally:
        p.close()
    return root


def live_turbofan(root: Path, steps: int = TURBOFAN_STEPS) -> Path:
    """Replay the demo's live fleet into a trained turbofan data dir, then the lifecycle moves."""
    from pitstop.demo import live_feeds, live_id
    from pitstop.schema import TURBOFAN

    p = _open(root)
    try:
        p.scorer.reload()
        proc = Processor(p)
        proc.bootstrap()
        feeds = live_feeds({live_id(unit): "" for unit in range(1, 101)})
        sensors = TURBOFAN.sensor_names
        start = datetime.now(UTC) - timedelta(seconds=steps + max(len(f.seqs) for f in feeds))
        for step in range(steps):
            batch = []
            for feed in feeds:
                first, last = (0, feed.head_start + 1) if step == 0 else (feed.head_start + step,) * 2
                for i in range(first, min(max(last, first + 1), len(feed.seqs))):
                    batch.append(
                        Reading(
                            machine_id=feed.machine_id,
                            ts=start + timedelta(seconds=step + i * 1e-3),
                            seq=feed.seqs[i],
                            values={s: float(feed.values[i][s]) for s in sensors},
                        )
                    )
            if not batch:
                break
            p.bus.publish(encode_readings(batch, p.lake.sensors))
            proc.run_once()
        _lifecycle(p, proc)
        _users(p)
    finally:
        p.close()
    return root


def build_turbofan(root: Path, echo: Echo = _quiet) -> Path:
    echo("turbofan: seeding last season and training the champion")
    seed_turbofan(root)
    echo(f"turbofan: replaying the live fleet for {TURBOFAN_STEPS} steps")
    return live_turbofan(root)


def build_harvesters(root: Path, echo: Echo = _quiet) -> Path:
    """The shipped harvester fleet, a small season by seed, a champion, a live fleet scored."""
    from pitstop.demo import register_live_fleet
    from pitstop.demo_harvesters import TYPE, open_platform
    from pitstop.ingest.history import import_readings
    from pitstop.ingest.history_events import import_events
    from pitstop.sim.harvester import simulate, write_history
    from pitstop.store import Machine
    from pitstop.training import train_and_register

    settings = load_settings(None, data_dir=root, train_folds=HARVESTER_FOLDS)
    p = open_platform(settings, echo)
    try:
        machines, days = HARVESTER_HISTORY
        echo(f"harvesters: simulating {machines} machines over {days} days")
        history = simulate(machines, days, seed=HARVESTER_SEED, prefix="H-")
        with tempfile.TemporaryDirectory() as folder:
            readings_csv, events_csv = write_history(history, Path(folder))
            import_readings(
                [readings_csv],
                lake=p.lake,
                db=p.db,
                fleet=p.fleet,
                max_future_skew_s=settings.max_future_skew_s,
                machine_type=TYPE,
            )
            import_events(
                events_csv, lake=p.lake, db=p.db, fleet=p.fleet, max_future_skew_s=settings.max_future_skew_s
            )
        with p.db.session() as s:  # last season's machines are out of service
            for m in s.query(Machine).filter(
                Machine.machine_id.in_(history.readings["machine_id"].unique().to_list())
            ):
                m.status = "retired"
        echo("harvesters: training the champion")
        train_and_register(p, alias="champion", machine_type=TYPE)
        p.scorer.reload()
        live, ids = _live_harvesters()
        register_live_fleet(p, ids, TYPE)
        echo(f"harvesters: replaying {live.height} readings of {len(ids)} live machines")
        proc = Processor(p)
        proc.bootstrap()
        sensors = [c for c in live.columns if c not in ("machine_id", "ts")]
        rows = live.sort("ts").iter_rows(named=True)
        seqs: dict[str, int] = {}
        batch: list[Reading] = []
        for row in rows:
            mid = str(row["machine_id"])
            seqs[mid] = seqs.get(mid, 0) + 1
            values = {k: float(row[k]) for k in sensors if row[k] is not None}
            batch.append(Reading(machine_id=mid, ts=row["ts"], seq=seqs[mid], values=values))
            if len(batch) >= 2000:
                p.bus.publish(encode_readings(batch, p.lake.sensors))
                proc.run_once()
                batch = []
        if batch:
            p.bus.publish(encode_readings(batch, p.lake.sensors))
        for _ in range(3):
            proc.run_once()
        _lifecycle(p, proc)
        _users(p)
    finally:
        p.close()
    return root


def _live_harvesters() -> tuple[pl.DataFrame, list[str]]:
    """The live harvesters: simulated by seed up to ``LIVE_END``, each cut before its first
    failure (the same fleet whatever the clock; the demo's runs up to now)."""
    from pitstop.demo_harvesters import before_first_failure
    from pitstop.sim.harvester import simulate

    machines, days = HARVESTER_LIVE
    now = LIVE_END
    start = now - timedelta(days=days)
    history = simulate(machines, days, seed=HARVESTER_SEED + 1, start=start, prefix="HV-")
    return before_first_failure(history, now)


def _lifecycle(p: Platform, proc: Processor) -> None:
    """Deterministic moves by real users: the lowest open order acknowledged, the next closed as
    fault confirmed, an inspection of the next machine with an order, a failure of another."""
    from pitstop.ingest.admin import NewEvent, record_event
    from pitstop.maintenance import transition

    with p.db.session() as s:
        orders = [(o.id, o.machine_id) for o in s.scalars(select(WorkOrder).order_by(WorkOrder.id))]
    tech, eng = USERS["technician"], USERS["engineer"]
    if len(orders) >= 1:
        transition(p, orders[0][0], "acknowledged", technician=tech, role="technician")
    if len(orders) >= 2:
        transition(p, orders[1][0], "in_progress", technician=tech, role="technician")
        transition(
            p,
            orders[1][0],
            "done",
            "fault_confirmed",
            "replaced the worn part",
            technician=tech,
            role="technician",
        )
    if len(orders) >= 3:
        body = NewEvent(machine_id=orders[2][1], kind="inspection", detail="visual check, no leaks")
        record_event(p, body, "eval-inspection", eng, "engineer")
    if len(orders) >= 4:
        body = NewEvent(machine_id=orders[3][1], kind="failure", detail="stopped in the field")
        record_event(p, body, "eval-failure", eng, "engineer")
    proc.run_once()


def _users(p: Platform) -> None:
    from pitstop.web.users import Users

    users = Users(p.db)
    keys = {}
    for role, name in USERS.items():
        users.add(name, role)
        keys[role] = {"name": name, "key": users.create_key(name)}
    (p.settings.data_dir / USERS_FILE).write_text(json.dumps(keys))


def user_keys(root: Path) -> dict[str, dict[str, str]]:
    """Role -> {"name", "key"} for the users the builders made."""
    loaded: dict[str, dict[str, str]] = json.loads((root / USERS_FILE).read_text())
    return loaded
