"""Dashboard benchmark: server time of the fleet page and a machine page on a large ops DB.

Builds a data dir with last season seeded and a champion trained (as the demo does), then a fleet
of ``--machines`` machines (default 1,000) with state, ``--predictions`` scored readings each (the
sparklines read the last 20), and ``--orders`` work orders (default 10,000; a few per cent open).
Then times, in the server process (the app called in process through an ASGI client, so the
figure is the server's time without a network), what the browser asks for:

- the fleet page: ``GET /`` and its data, ``GET /api/v1/machines`` (every machine with its trend)
  and ``GET /api/v1/status``;
- a machine page: ``GET /machines/{id}`` and its data: the machine with its work orders, its
  prediction history, its telemetry and the explanation of its current score; polled (the same
  machine again: its history is read once per lake version) and at first view (a different
  machine each time, so its history is read from the lake).

Beside them, the floor: the same rows read with one plain SQL query each through ``sqlite3``
(no API, no JSON). Targets (the issue): fleet page p95 < 100 ms, machine page p95 < 150 ms.

    python bench/dashboard.py [--machines 1000] [--orders 10000] [--repeats 30]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from fastapi.testclient import TestClient

from pitstop.config import load_settings
from pitstop.demo import ensure_champion, seed_last_season
from pitstop.platform import Platform
from pitstop.store import Machine, MachineState, Prediction, WorkOrder
from pitstop.web import create_app


def build(platform: Platform, machines: int, predictions: int, orders: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    ids = [f"m-{i:05d}" for i in range(machines)]
    version = platform.registry.alias_version("champion") or "1"
    with platform.db.session() as s:
        for machine_id in ids:
            rul = rng.uniform(5, 250)
            s.add(
                Machine(
                    machine_id=machine_id,
                    machine_type="turbofan",
                    status="active",
                    installed_at=now,
                    created_at=now,
                )
            )
            s.add(
                MachineState(
                    machine_id=machine_id,
                    last_ts=now,
                    last_seq=predictions,
                    readings=predictions,
                    predicted_rul=rul,
                    rul_lower=rul * 0.8,
                    rul_upper=rul * 1.2,
                    model_version=version,
                    scored_at=now,
                )
            )
        s.flush()
        rows = []
        for machine_id in ids:
            rul = rng.uniform(50, 300)
            for seq in range(predictions):
                rul -= rng.uniform(0.5, 1.5)
                rows.append(
                    Prediction(
                        machine_id=machine_id,
                        ts=now - timedelta(seconds=predictions - seq),
                        seq=seq,
                        rul=rul,
                        rul_lower=rul * 0.8,
                        rul_upper=rul * 1.2,
                        model_name=platform.registry.model_name,
                        model_version=version,
                        arm="champion",
                        created_at=now,
                    )
                )
        s.add_all(rows)
        open_machines = set(rng.sample(ids, k=max(1, orders // 30)))
        for i in range(orders):
            machine_id = rng.choice(ids)
            is_open = machine_id in open_machines and i % 3 == 0
            opened = now - timedelta(hours=rng.uniform(1, 5000))
            s.add(
                WorkOrder(
                    machine_id=machine_id,
                    status="open" if is_open else rng.choice(["done", "done", "cancelled"]),
                    priority=rng.choice(["urgent", "high", "normal"]),
                    reason="predicted RUL lower bound below the threshold",
                    predicted_rul=rng.uniform(5, 40),
                    rul_lower=rng.uniform(0, 30),
                    rul_upper=rng.uniform(30, 60),
                    model_version=version,
                    seq=rng.randint(1, predictions),
                    lead_time=20.0,
                    due_at=opened + timedelta(hours=20),
                    explanation="{}",
                    opened_at=opened,
                    closed_at=None if is_open else opened + timedelta(hours=5),
                    finding=None if is_open else "fault_confirmed",
                )
            )
    return ids


def timed(client: TestClient, paths: list[str], repeats: int, headers: dict[str, str]) -> list[float]:
    """Milliseconds for the whole set of requests (one page view), ``repeats`` times."""
    for path in paths:  # warm up: caches, first-call imports
        assert client.get(path, headers=headers).status_code == 200, path
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        for path in paths:
            response = client.get(path, headers=headers)
            assert response.status_code == 200, (path, response.text[:200])
        out.append((time.perf_counter() - start) * 1000)
    return out


def floor(db_path: Path, machine_id: str, repeats: int) -> tuple[list[float], list[float]]:
    """The same rows by plain SQL: the fleet (with trends) and one machine's history."""
    conn = sqlite3.connect(db_path)
    fleet_sql = [
        "SELECT * FROM machines LEFT JOIN machine_state USING (machine_id) WHERE status = 'active'",
        "SELECT machine_id, id, priority FROM work_orders "
        "WHERE status IN ('open', 'acknowledged', 'in_progress')",
        "SELECT p.machine_id, p.rul FROM machines m JOIN predictions p ON p.id IN "
        "(SELECT id FROM predictions q WHERE q.machine_id = m.machine_id ORDER BY id DESC LIMIT 20)",
    ]
    machine_sql = [
        ("SELECT * FROM machines WHERE machine_id = ?", (machine_id,)),
        ("SELECT * FROM work_orders WHERE machine_id = ? ORDER BY id DESC", (machine_id,)),
        ("SELECT * FROM predictions WHERE machine_id = ? ORDER BY id DESC LIMIT 500", (machine_id,)),
    ]

    def run(queries: list[tuple[str, tuple[Any, ...]]]) -> list[float]:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for sql, args in queries:
                conn.execute(sql, args).fetchall()
            times.append((time.perf_counter() - start) * 1000)
        return times

    fleet_times = run([(q, ()) for q in fleet_sql])
    machine_times = run(machine_sql)
    conn.close()
    return fleet_times, machine_times


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--machines", type=int, default=1000)
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--predictions", type=int, default=50, help="scored readings per machine")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        platform = Platform.open(load_settings(None, data_dir=data_dir))
        print("seeding last season and training the champion …", flush=True)
        seed_last_season(platform, echo=lambda _: None)
        ensure_champion(platform, echo=lambda _: None)
        platform.scorer.reload()
        started = time.perf_counter()
        build(platform, args.machines, args.predictions, args.orders)
        print(
            f"ops DB: {args.machines:,} machines, {args.machines * args.predictions:,} predictions, "
            f"{args.orders:,} work orders (built in {time.perf_counter() - started:.1f} s)",
            flush=True,
        )
        # machines with telemetry in the lake (last season), registered: one for the warm page
        # (polled again: its history is read once per lake version), the others seen once each
        machine = "hist-050"
        cold = [f"hist-{i:03d}" for i in range(1, args.repeats + 1) if i != 50]
        with platform.db.session() as s:
            now = datetime.now(UTC)
            for machine_id in [machine, *cold]:
                if s.get(Machine, machine_id) is None:
                    s.add(
                        Machine(
                            machine_id=machine_id,
                            machine_type="turbofan",
                            status="active",
                            installed_at=now,
                            created_at=now,
                        )
                    )
        headers = {"Authorization": f"Bearer {platform.admin_token()}"}
        with TestClient(create_app(platform)) as client:
            fleet_paths = ["/", "/api/v1/machines", "/api/v1/status"]
            machine_paths = [
                f"/machines/{machine}",
                f"/api/v1/machines/{machine}",
                f"/api/v1/machines/{machine}/predictions?limit=500",
                f"/api/v1/machines/{machine}/telemetry?limit=300",
                f"/api/v1/machines/{machine}/explanation",
            ]
            fleet_ms = timed(client, fleet_paths, args.repeats, headers)
            machine_ms = timed(client, machine_paths, args.repeats, headers)
            first_view_ms = []  # each machine's page once: its history read from the lake
            for machine_id in cold:
                paths = [p.replace(machine, machine_id) for p in machine_paths]
                start = time.perf_counter()
                for path in paths:
                    assert client.get(path, headers=headers).status_code == 200, path
                first_view_ms.append((time.perf_counter() - start) * 1000)
            lake_ms = []
            for machine_id in cold:
                start = time.perf_counter()
                platform.lake.read("telemetry", machine_ids=[machine_id])
                lake_ms.append((time.perf_counter() - start) * 1000)
            for path in fleet_paths + machine_paths:
                each = timed(client, [path], max(5, args.repeats // 3), headers)
                print(f"  {path:55} p50 {statistics.median(each):6.1f} ms")
            body = client.get("/api/v1/machines", headers=headers).json()
            assert body["count"] >= args.machines
        floor_fleet, floor_machine = floor(data_dir / "ops.db", machine, args.repeats)
        platform.close()

    result = {
        "machines": args.machines,
        "work_orders": args.orders,
        "fleet_page_p50_ms": round(statistics.median(fleet_ms), 1),
        "fleet_page_p95_ms": round(p95(fleet_ms), 1),
        "machine_page_p50_ms": round(statistics.median(machine_ms), 1),
        "machine_page_p95_ms": round(p95(machine_ms), 1),
        "machine_first_view_p50_ms": round(statistics.median(first_view_ms), 1),
        "machine_first_view_p95_ms": round(p95(first_view_ms), 1),
        "floor_machine_lake_read_p50_ms": round(statistics.median(lake_ms), 1),
        "floor_fleet_sql_p50_ms": round(statistics.median(floor_fleet), 1),
        "floor_machine_sql_p50_ms": round(statistics.median(floor_machine), 1),
        "target_fleet_p95_ms": 100,
        "target_machine_p95_ms": 150,
    }
    print(
        f"fleet page ({args.machines:,} machines): p50 {result['fleet_page_p50_ms']} ms, "
        f"p95 {result['fleet_page_p95_ms']} ms (target < 100; plain SQL floor "
        f"{result['floor_fleet_sql_p50_ms']} ms)"
    )
    r = result
    print(
        f"machine page, polled: p50 {r['machine_page_p50_ms']} ms, p95 {r['machine_page_p95_ms']} ms; "
        f"first view: p50 {r['machine_first_view_p50_ms']} ms, p95 {r['machine_first_view_p95_ms']} ms "
        f"(target < 150; floor: plain SQL {r['floor_machine_sql_p50_ms']} ms + one lake read "
        f"{r['floor_machine_lake_read_p50_ms']} ms)"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
