"""``pitstop demo``: the whole loop in one process on the shipped C-MAPSS FD001 data.

Last season (the FD001 training engines, run to failure) seeds the lake; the FD001 test engines
are the live fleet, replayed through the real ingest endpoint with one device token each.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pyarrow as pa
from sqlalchemy import func, select

from pitstop.demo_agents import AGENTS_DIR, AgentFleet, GapPlan
from pitstop.errors import ConfigError
from pitstop.ingest import DeviceRegistry
from pitstop.platform import Platform
from pitstop.processor import Processor
from pitstop.schema import TURBOFAN
from pitstop.sim import MachineFeed, Replay, shipped
from pitstop.store import Machine, MachineState, WorkOrder, utcnow
from pitstop.training import train_and_register

log = logging.getLogger(__name__)

SEASON_START = datetime(2026, 1, 1, tzinfo=UTC)
SEED_APP = "seed-last-season"
TOKENS_FILE = "demo-devices.json"

Echo = Callable[[str], None]

# the harvester demo's coverage gaps: 15-45 s every ~3 min per machine, the first after 30 s at the earliest
GAPS = GapPlan(every_s=180.0, min_s=15.0, max_s=45.0, first_s=30.0, seed=20)


def history_id(unit: int) -> str:
    return f"hist-{unit:03d}"


def live_id(unit: int) -> str:
    return f"eng-{unit:03d}"


def seed_last_season(platform: Platform, echo: Echo) -> bool:
    """Write last season's run-to-failure engines to the lake (once). Returns whether it wrote."""
    lake = platform.lake
    if lake.committed_position(SEED_APP, "telemetry") >= 1:
        return False
    train = shipped("fd001_train")
    echo(
        f"seeding the lake with last season: {train['unit'].n_unique()} engines run to failure, "
        f"{train.height:,} readings"
    )
    frame = train.with_columns(
        pl.col("unit").map_elements(history_id, return_dtype=pl.String).alias("machine_id"),
        pl.col("cycle").alias("seq"),
        (pl.lit(SEASON_START) + pl.duration(hours=pl.col("cycle"))).dt.cast_time_unit("us").alias("ts"),
    ).with_columns(pl.col("ts").dt.date().alias("day"), pl.lit(None, pl.Int64).alias("bus_position"))
    lake.append("telemetry", frame.to_arrow(), app_id=SEED_APP, position=1)
    failures = frame.group_by("machine_id").agg(pl.col("seq").max(), pl.col("ts").max())
    events = pa.table(
        {
            "machine_id": failures["machine_id"].to_arrow(),
            "ts": failures["ts"].to_arrow(),
            "seq": failures["seq"].to_arrow(),
            "kind": pa.array(["failure"] * failures.height),
            "detail": pa.array(["run to failure (C-MAPSS FD001 training trajectory)"] * failures.height),
        }
    )
    lake.append("events", events, app_id=SEED_APP, position=1)
    with platform.db.session() as s:
        for machine_id in failures["machine_id"].sort():
            if s.get(Machine, machine_id) is None:
                s.add(
                    Machine(
                        machine_id=machine_id,
                        machine_type=TURBOFAN.name,
                        status="retired",
                        installed_at=SEASON_START,
                        created_at=utcnow(),
                    )
                )
    platform.db.audit("demo", "seed_lake", rows=frame.height, machines=failures.height)
    return True


def ensure_live_fleet(platform: Platform) -> dict[str, str]:
    """Register the live engines and one device each (see ``register_live_fleet``)."""
    units = shipped("fd001_test")["unit"].unique().sort().to_list()
    return register_live_fleet(platform, [live_id(unit) for unit in units], TURBOFAN.name)


def register_live_fleet(platform: Platform, machines: list[str], machine_type: str) -> dict[str, str]:
    """Register the live machines and one device each; tokens kept in the data dir (mode 600)."""
    path = platform.settings.data_dir / TOKENS_FILE
    tokens: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    devices = DeviceRegistry(platform.db)
    changed = False
    for machine_id in machines:
        with platform.db.session() as s:
            if s.get(Machine, machine_id) is None:
                s.add(
                    Machine(
                        machine_id=machine_id,
                        machine_type=machine_type,
                        status="active",
                        installed_at=utcnow(),
                        created_at=utcnow(),
                    )
                )
        if machine_id not in tokens:
            _, tokens[machine_id] = devices.add(machine_id)
            changed = True
    if changed:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(tokens, fh, indent=1)
    return tokens


def live_feeds(tokens: dict[str, str]) -> list[MachineFeed]:
    test = shipped("fd001_test").sort("unit", "cycle")
    sensors = TURBOFAN.sensor_names
    feeds = []
    for (unit,), group in test.group_by("unit", maintain_order=True):
        machine_id = live_id(int(str(unit)))
        feeds.append(
            MachineFeed(
                machine_id,
                tokens[machine_id],
                group["cycle"].to_list(),
                group.select(sensors).to_dicts(),
            )
        )
    stagger_head_starts(feeds)
    return feeds


def stagger_head_starts(feeds: list[MachineFeed], first_rul: float = 45.0, step: float = 2.5) -> None:
    """Join the live fleet part-way through each engine's history, staggered by remaining life.

    The engine with the least life left joins ``first_rul`` cycles before its end of life (so its
    first work order opens within the first minute at the default speed), the next ``step`` cycles
    further back, and so on: a fleet in mid-life rather than a fleet of new engines. The cycles
    before the join point are sent at once when the replay starts. Uses the published true RUL at
    the end of each FD001 test engine."""
    truth = dict(shipped("fd001_rul").select("unit", "rul").iter_rows())
    ends = {live_id(int(unit)): float(rul) for unit, rul in truth.items()}
    ranked = sorted(feeds, key=lambda f: (ends.get(f.machine_id, float("inf")), f.machine_id))
    for rank, feed in enumerate(ranked):
        end = ends.get(feed.machine_id)
        if end is None or feed.next_index > 0:
            continue  # unknown truth, or resuming a replay: nothing to stage
        start_rul = max(end, first_rul + step * rank)
        left = int(start_rul - end)  # readings from the join point to the last one
        feed.head_start = max(0, len(feed.seqs) - 1 - left)


def ensure_champion(platform: Platform, echo: Echo, progress: Any = None) -> str:
    version = platform.registry.alias_version("champion")
    if version is not None:
        echo(f"champion model: {platform.registry.model_name} version {version}")
        return version
    echo("no champion model yet: training one on last season's lake data")
    result = train_and_register(platform, alias="champion", progress=progress)
    m = result.bundle.metrics
    echo(
        f"trained version {result.version} in {result.seconds:.1f}s on {result.rows:,} readings of "
        f"{result.machines} machines: CV RMSE {m['cv_rmse']:.2f}, 80% interval coverage "
        f"{m['cv_interval_coverage']:.0%}"
    )
    return result.version


def demo_admin(platform: Platform, echo: Echo) -> str:
    """An ``admin`` user on the demo's first run (its password printed once), and a one-time
    login link token on every run."""
    from pitstop.web.users import Users

    users = Users(platform.db)
    if users.count() == 0:
        password = users.add("admin", "admin")
        platform.db.audit("demo", "user_added", user="admin", new_role="admin")
        echo(f"created user admin (role admin), password shown once: {password}")
    admins = [u["name"] for u in users.list() if u["role"] == "admin" and not u["disabled"]]
    if not admins:
        raise ConfigError("no enabled admin: `pitstop users add NAME --role admin`", code="no_admin")
    return users.login_link_token(admins[0])


def check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port} ({exc.strerror}): stop what uses it or pass --port",
                code="port_unavailable",
            ) from None


@dataclass
class Summary:
    readings_accepted: int
    readings_in_lake: int
    live_readings_in_lake: int
    live_readings_quarantined: int
    machines_scored: int
    work_orders_open: int
    model_version: str
    replay: dict[str, Any]

    def lines(self) -> list[str]:
        return [
            f"readings accepted:     {self.readings_accepted:,}",
            f"readings in the lake:  {self.readings_in_lake:,} "
            f"({self.live_readings_in_lake:,} from the live fleet)",
            f"quarantined:           {self.live_readings_quarantined:,} of the live fleet's "
            "(values outside their sensor's range: `pitstop quarantine list`)",
            f"machines scored:       {self.machines_scored}",
            f"work orders open:      {self.work_orders_open}",
            f"model version:         {self.model_version}",
            *self._agent_lines(),
        ]

    def _agent_lines(self) -> list[str]:
        if "agents" not in self.replay:
            return []
        r = self.replay
        return [
            f"edge agents:           {r['agents']} ({r['gaps']} coverage gaps, "
            f"{r['retries']:,} requests failed in them; {r['edge_scoring']} scoring at the edge)",
            f"buffered in agents:    {r['buffered']:,} readings (sent on the next run)",
        ]


def summarize(platform: Platform, replay: Replay | AgentFleet | None) -> Summary:
    with platform.db.session() as s:
        active = list(s.scalars(select(Machine.machine_id).where(Machine.status == "active")))
        scored = s.scalar(
            select(func.count())
            .select_from(MachineState)
            .where(MachineState.machine_id.in_(active), MachineState.predicted_rul.is_not(None))
        )
        open_orders = s.scalar(
            select(func.count())
            .select_from(WorkOrder)
            .where(WorkOrder.status.in_(("open", "acknowledged", "in_progress")))
        )
    live = platform.lake.read("telemetry", columns=["seq"], machine_ids=active).height if active else 0
    held = platform.lake.read("quarantine", columns=["seq"], machine_ids=active).height if active else 0
    return Summary(
        readings_accepted=int(
            platform.metrics.registry.get_sample_value("pitstop_readings_accepted_total") or 0
        ),
        readings_in_lake=platform.lake.count("telemetry"),
        live_readings_in_lake=live,
        live_readings_quarantined=held,
        machines_scored=int(scored or 0),
        work_orders_open=int(open_orders or 0),
        model_version=", ".join(
            f"{name} {d.champion.model.version}"
            for name, d in platform.deployments.items()
            if d.champion.loaded
        ),
        replay=replay.stats.to_dict() if replay else {},
    )


def prepare(platform: Platform, fleet: str, echo: Echo, progress: Any = None) -> list[MachineFeed]:
    """Seed the lake, train the champion and register the live fleet; its feeds."""
    if fleet == "harvesters":
        from pitstop import demo_harvesters as harvesters

        harvesters.seed_history(platform, echo)
        harvesters.ensure_champion(platform, echo, progress)
        readings, machines = harvesters.live_history()
        tokens = register_live_fleet(platform, machines, harvesters.TYPE)
        return harvesters.live_feeds(readings, tokens)
    seed_last_season(platform, echo)
    tokens = ensure_live_fleet(platform)
    ensure_champion(platform, echo, progress)
    return live_feeds(tokens)


def run_demo(
    platform: Platform,
    *,
    speed: float,
    duration: float | None,
    echo: Echo,
    progress: Any = None,
    fleet: str = "turbofan",
) -> Summary:
    """Prepare everything, then serve until Ctrl-C (or ``duration`` seconds), then stop cleanly."""
    import uvicorn

    from pitstop.web import create_app
    from pitstop.web.app import server_config

    s = platform.settings
    check_port(s.host, s.port)
    feeds = prepare(platform, fleet, echo, progress)
    processor = Processor(platform)
    processor.start()
    app = create_app(platform, processor=processor)
    server = uvicorn.Server(server_config(app, s))
    url = f"http://{s.host}:{s.port}"
    with platform.db.session() as session:
        seen = dict(session.execute(select(MachineState.machine_id, MachineState.last_seq)).all())
    held = {k: v for k, v in seen.items() if v is not None}
    live: Replay | AgentFleet
    if fleet == "harvesters":  # each harvester through its own edge agent, with coverage gaps
        live = AgentFleet(
            url, feeds, s.data_dir / AGENTS_DIR, speed=speed, gaps=GAPS, resume_from=held, edge_scoring=True
        )
        remaining = live.remaining()
    else:
        live = Replay(url, feeds, speed=speed)
        live.skip_to(held)
        remaining = sum(len(f.seqs) - f.next_index for f in live.feeds)
    app.state.replay = live
    login_token = demo_admin(platform, echo)

    def after_start() -> None:
        while not server.started and not server.should_exit:
            threading.Event().wait(0.05)
        if server.should_exit:
            return
        echo(f"serving {url}  (dashboard at {url}/ ; Ctrl-C to stop)")
        echo(f"log in (one-time link, valid 24 h): {url}/login?token={login_token}")
        echo(f"admin API token: {s.data_dir / 'admin-token'}  (or `pitstop devices --help`)")
        if isinstance(live, AgentFleet):  # started even with nothing left: a buffer may hold some
            echo(
                f"live fleet: {len(live.feeds)} machines, each through its own edge agent "
                f"({s.data_dir / AGENTS_DIR}/<machine>), {remaining:,} readings to go at {speed:g}/s each"
            )
            echo(
                f"coverage gaps: {GAPS.min_s:g}-{GAPS.max_s:g} s every ~{GAPS.every_s / 60:g} min a machine "
                "(the agents buffer and forward when the link is back)"
            )
            live.start()
        elif remaining:
            echo(
                f"live fleet: {len(live.feeds)} machines replaying {remaining:,} readings at {speed:g}/s each"
            )
            live.start()
        else:
            echo(
                "live fleet: the replay already finished in this data dir "
                "(use a new --data-dir to replay again)"
            )
        if duration is not None:
            threading.Timer(duration, lambda: setattr(server, "should_exit", True)).start()

    threading.Thread(target=after_start, name="pitstop-demo-start", daemon=True).start()
    try:
        server.run()
    except KeyboardInterrupt:
        pass  # uvicorn shut down gracefully, then re-raised the captured Ctrl-C
    finally:
        live.stop()
        processor.stop(drain=True)
    return summarize(platform, live)
