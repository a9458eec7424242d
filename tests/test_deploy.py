"""Promote and roll back in a running processor; a tampered version never serves."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import polars as pl
import pytest
from sqlalchemy import select

from pitstop.errors import ArtifactIntegrityError, ModelError
from pitstop.platform import Platform
from pitstop.processor import Processor
from pitstop.serving.deploy import promote, rollback
from pitstop.store import AuditEntry, Prediction
from tests.conftest import admin_headers, make_settings
from tests.test_processor import publish

MACHINES = {"eng-003": 3, "eng-004": 4}  # FD001 test units with over 100 cycles


@pytest.fixture
def live(trained: Platform) -> Iterator[Platform]:
    """The trained platform, reopened so the processor checks the alias before every batch."""
    data_dir = trained.settings.data_dir
    trained.close()
    platform = Platform.open(make_settings(data_dir, serving_poll_s=0))
    yield platform
    platform.close()


def second_version(platform: Platform) -> str:
    """The champion's bundle registered again: a new version to promote."""
    champion = platform.registry.load("champion")
    version = platform.registry.log_and_register(champion.bundle, lineage={"lake_version": "test"})
    platform.registry.set_alias("challenger", version)
    return version


def predictions(platform: Platform) -> pl.DataFrame:
    with platform.db.session() as s:
        rows = s.execute(
            select(Prediction.machine_id, Prediction.seq, Prediction.model_version, Prediction.created_at)
            .where(Prediction.machine_id.in_(list(MACHINES)))
            .order_by(Prediction.id)
        ).all()
    return pl.DataFrame(rows, schema=["machine_id", "seq", "version", "batch"], orient="row")


class Feed:
    """Readings of MACHINES, one per machine per step, from a sender thread and from waiters."""

    def __init__(self, platform: Platform, limit: int = 100) -> None:
        self.platform, self.limit = platform, limit
        self.sent = 0
        self._lock = threading.Lock()

    def step(self) -> None:
        with self._lock:
            cycle = self.sent // len(MACHINES)
            if cycle >= self.limit:
                return
            for machine, unit in MACHINES.items():
                publish(self.platform, machine, unit, cycle, 1)
            self.sent += len(MACHINES)


def wait_for_version(platform: Platform, feed: Feed, version: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if version in predictions(platform)["version"].to_list()[-2:]:
            return
        feed.step()  # keep readings coming even if the sender is done
        time.sleep(0.1)
    raise AssertionError(f"version {version} never served")


def test_promote_and_rollback_under_load_score_every_reading_exactly_once(live: Platform) -> None:
    v1 = live.registry.alias_version("champion")
    v2 = second_version(live)
    proc = Processor(live)
    proc.start()
    feed = Feed(live)
    stop = threading.Event()

    def load() -> None:  # readings keep arriving while the champion moves
        while not stop.is_set():
            feed.step()
            time.sleep(0.1)

    sender = threading.Thread(target=load)
    sender.start()
    try:
        wait_for_version(live, feed, v1)
        assert promote(live.registry, live.db.audit) == {"champion": v2, "previous": v1}
        wait_for_version(live, feed, v2)
        assert rollback(live.registry, live.db.audit) == {"champion": v1, "previous": v2}
        wait_for_version(live, feed, v1)
    finally:
        stop.set()
        sender.join()
        proc.stop(drain=True)

    lake = live.lake.read("telemetry", columns=["machine_id", "seq"], machine_ids=list(MACHINES))
    assert lake.height == feed.sent > 0  # every reading landed once
    got = predictions(live)
    assert got.height == got.select("machine_id", "seq").n_unique()  # no reading scored twice
    # one model per micro-batch, and the versions in the order the alias moved: v1, v2, v1
    per_batch = got.group_by("batch", maintain_order=True).agg(pl.col("version").unique())
    assert (per_batch["version"].list.len() == 1).all()
    order = per_batch["version"].list.first().to_list()
    runs = [v for i, v in enumerate(order) if i == 0 or v != order[i - 1]]
    assert runs == [v1, v2, v1]
    # each machine's latest reading was scored in the last batch that carried it
    last = got.group_by("machine_id").agg(pl.col("seq").max())
    assert dict(last.iter_rows()) == dict(lake.group_by("machine_id").agg(pl.col("seq").max()).iter_rows())
    with live.db.session() as s:
        actions = [a.action for a in s.scalars(select(AuditEntry).order_by(AuditEntry.id))]
    assert actions.count("model_switched") == 2
    assert {"model_promoted", "model_rolled_back"} <= set(actions)


def test_a_tampered_version_is_refused_and_the_champion_keeps_serving(live: Platform) -> None:
    v1 = live.registry.alias_version("champion")
    v2 = second_version(live)
    source = live.registry.client.get_model_version(live.registry.model_name, v2).source
    model = Path(unquote(urlparse(source).path)) / "model.txt"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    model.write_bytes(bytes(data))

    with pytest.raises(ArtifactIntegrityError, match="altered"):
        promote(live.registry, live.db.audit)
    assert live.registry.alias_version("champion") == v1

    # moved behind our back (say, in the MLflow UI): the processor refuses it as well
    proc = Processor(live)
    proc.bootstrap()
    live.registry.set_alias("champion", v2)
    publish(live, "eng-003", 3, 0, 5)
    report = proc.run_once()
    assert report.scored == 1
    assert predictions(live)["version"].to_list() == [v1]
    with live.db.session() as s:
        refused = [
            a.detail for a in s.scalars(select(AuditEntry).where(AuditEntry.action == "model_refused"))
        ]
    assert len(refused) == 1 and f"version {v2} refused" in refused[0]


def test_promote_and_rollback_need_something_to_move_to(live: Platform) -> None:
    with pytest.raises(ModelError, match="challenger"):
        promote(live.registry, live.db.audit)
    with pytest.raises(ModelError, match="roll back"):
        rollback(live.registry, live.db.audit)
    with pytest.raises(ModelError, match="no version"):
        promote(live.registry, live.db.audit, "999")


def test_batch_scoring_writes_each_reading_once_per_model_and_matches_the_api(trained: Platform) -> None:
    from fastapi.testclient import TestClient

    from pitstop.serving.batch import score_lake
    from pitstop.web import create_app

    publish(trained, "eng-003", 3, 0, 40)
    proc = Processor(trained)
    proc.bootstrap()
    proc.run_once()
    version = trained.lake.version("telemetry")
    readings = trained.lake.count("telemetry", version)

    first = score_lake(trained)
    assert first["rows"] == readings and first["lake_version"] == version
    again = score_lake(trained)
    assert again["rows"] == 0 and again["skipped"] == "already scored"
    latest = score_lake(trained, latest=True)
    assert (
        latest["rows"]
        == latest["machines"]
        == trained.lake.read("telemetry", columns=["machine_id"])["machine_id"].n_unique()
    )

    table = trained.lake.read("predictions")
    assert table.height == readings + latest["rows"]
    assert table.select("machine_id", "seq").n_unique() == readings  # every reading, none twice
    assert set(table["model_version"]) == {trained.scorer.model.version}
    assert set(table["lake_version"]) == {version}
    # the batch score of a machine's latest reading is what the API says for it now
    row = table.filter((pl.col("machine_id") == "eng-003") & (pl.col("arm") == "batch:champion")).sort("seq")[
        -1
    ]
    with TestClient(create_app(trained), headers=admin_headers(trained)) as client:
        api = client.post("/api/v1/predict", json={"machine_ids": ["eng-003"]}).json()["predictions"][0]
    assert api["seq"] == row["seq"][0] == 40
    assert api["rul"] == pytest.approx(row["rul"][0], abs=1e-3)


def reopen(trained: Platform, **overrides: object) -> Platform:
    data_dir = trained.settings.data_dir
    trained.close()
    return Platform.open(make_settings(data_dir, serving_poll_s=0, **overrides))


FLEET = [f"eng-{u:03d}" for u in range(1, 11)]


def stream(platform: Platform, proc: Processor, batches: int, first: int = 0) -> None:
    for b in range(first, first + batches):
        for u, machine in enumerate(FLEET, 1):
            publish(platform, machine, u, 3 * b, 3)
        proc.run_once()


def run_with_challenger(platform: Platform, batches: int) -> tuple[str, str]:
    """Register a challenger, then stream ``batches`` micro-batches of FLEET through a processor."""
    v1 = platform.registry.alias_version("champion")
    assert v1 is not None
    v2 = second_version(platform)
    proc = Processor(platform)
    proc.bootstrap()
    stream(platform, proc, batches)
    return v1, v2


def test_shadow_scores_the_challenger_beside_the_champion_and_never_acts_on_it(trained: Platform) -> None:
    from pitstop.store import MachineState, WorkOrder

    platform = reopen(trained, deployment="shadow", work_order_rul_threshold=1000)  # every score acts
    try:
        v1, v2 = run_with_challenger(platform, batches=2)
        with platform.db.session() as s:
            rows = s.execute(
                select(Prediction.machine_id, Prediction.seq, Prediction.model_version, Prediction.arm)
            ).all()
            orders = s.scalars(select(WorkOrder.model_version)).all()
            states = s.scalars(
                select(MachineState.model_version).where(MachineState.machine_id.in_(FLEET))
            ).all()
        got = pl.DataFrame(rows, schema=["machine_id", "seq", "version", "arm"], orient="row")
        per_arm = dict(got.group_by("arm").agg(pl.len()).iter_rows())
        assert per_arm == {"champion": 2 * len(FLEET), "shadow": 2 * len(FLEET)}
        assert set(got.filter(pl.col("arm") == "shadow")["version"]) == {v2}
        assert set(got.filter(pl.col("arm") == "champion")["version"]) == {v1}
        assert set(orders) == {v1} and len(orders) == len(FLEET)  # work orders come from the champion only
        assert set(states) == {v1}
    finally:
        platform.close()


@pytest.mark.parametrize(("mode", "arms"), [("canary", ("canary", "champion")), ("ab", ("b", "a"))])
def test_canary_and_ab_send_a_stable_share_of_machines_to_the_challenger(
    trained: Platform, mode: str, arms: tuple[str, str]
) -> None:
    from pitstop.serving.scorer import bucket

    platform = reopen(trained, deployment=mode, challenger_percent=50)
    try:
        v1, v2 = run_with_challenger(platform, batches=3)
        got = predictions_of(platform, FLEET)
        assert got.height == 3 * len(FLEET)  # one acting prediction per machine per batch
        expected = {m: (arms[0], v2) if bucket(m) < 50 else (arms[1], v1) for m in FLEET}
        for machine, arm, version in got.select("machine_id", "arm", "version").iter_rows():
            assert (arm, version) == expected[machine]  # the same arm in every batch
        assert 0 < sum(a == arms[0] for a, _ in expected.values()) < len(FLEET)
    finally:
        platform.close()


def predictions_of(platform: Platform, machines: list[str]) -> pl.DataFrame:
    with platform.db.session() as s:
        rows = s.execute(
            select(Prediction.machine_id, Prediction.arm, Prediction.model_version).where(
                Prediction.machine_id.in_(machines)
            )
        ).all()
    return pl.DataFrame(rows, schema=["machine_id", "arm", "version"], orient="row")


def broken_version(platform: Platform) -> str:
    """The champion with a broken interval (NaN upper bounds): registered and intact, but invalid."""
    from dataclasses import replace

    champion = platform.registry.load("champion").bundle
    bad = replace(
        champion, interval={**champion.interval, "upper": [float("nan")] * len(champion.interval["upper"])}
    )
    version = platform.registry.log_and_register(bad, lineage={"lake_version": "test"})
    platform.registry.set_alias("challenger", version)
    return version


def audit_actions(platform: Platform) -> list[str]:
    with platform.db.session() as s:
        return [a.action for a in s.scalars(select(AuditEntry).order_by(AuditEntry.id))]


def test_the_guard_withdraws_a_canary_that_gives_invalid_outputs(trained: Platform) -> None:
    platform = reopen(trained, deployment="canary", challenger_percent=50)
    try:
        v1 = platform.registry.alias_version("champion")
        broken_version(platform)
        proc = Processor(platform)
        proc.bootstrap()
        stream(platform, proc, 3)
        got = predictions_of(platform, FLEET)
        assert got.height == 3 * len(FLEET)
        assert set(got["arm"]) == {"champion"} and set(got["version"]) == {v1}  # all rescored by the champion
        assert (
            audit_actions(platform).count("challenger_withdrawn") == 1
        )  # and not reloaded until the alias moves
    finally:
        platform.close()


def test_the_guard_rolls_back_a_promoted_champion_that_gives_invalid_outputs(live: Platform) -> None:
    v1 = live.registry.alias_version("champion")
    bad = broken_version(live)
    proc = Processor(live)
    proc.bootstrap()
    stream(live, proc, 1)
    promote(live.registry, live.db.audit)  # its files are intact: only serving shows it is broken
    stream(live, proc, 2, first=1)
    assert live.registry.alias_version("champion") == v1
    got = predictions_of(live, FLEET)
    assert got.height == 3 * len(FLEET) and set(got["version"]) == {v1}  # no invalid output was kept
    actions = audit_actions(live)
    assert "champion_rolled_back" in actions and bad != v1


def test_with_the_registry_unreachable_the_cached_champion_serves_and_says_so(
    trained: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow.store.db.utils

    from pitstop.store import Prediction as P

    data_dir = trained.settings.data_dir
    v1 = trained.scorer.model.version
    trained.close()
    store = data_dir / "mlflow.db"
    store.rename(data_dir / "mlflow.db.away")
    store.mkdir()  # the registry's database cannot be opened
    monkeypatch.setattr(mlflow.store.db.utils, "MAX_RETRY_COUNT", 1)  # MLflow's own retries, shortened
    # as in a new process: MLflow keeps its engines per URI, and theirs still hold the old file open
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore
    from mlflow.tracking._model_registry.registry import ModelRegistryStoreRegistry
    from mlflow.tracking._tracking_service.registry import TrackingStoreRegistry

    for store_class in (RegistryStore, TrackingStore):
        monkeypatch.setattr(store_class, "_engine_map", {})
    for stores in (ModelRegistryStoreRegistry, TrackingStoreRegistry):
        stores._get_store_with_resolved_uri.cache_clear()  # its stores, cached per URI
    platform = Platform.open(make_settings(data_dir, serving_poll_s=0))
    try:
        proc = Processor(platform)
        proc.bootstrap()  # the champion from the local cache, verified
        assert platform.scorer.from_cache and platform.scorer.model.version == v1
        publish(platform, "eng-003", 3, 0, 5)
        proc.run_once()
        store.rmdir()
        (data_dir / "mlflow.db.away").rename(store)  # the registry is back
        publish(platform, "eng-003", 3, 5, 5)
        proc.run_once()
        with platform.db.session() as s:
            rows = s.execute(
                select(P.seq, P.model_version, P.from_cache).where(P.machine_id == "eng-003")
            ).all()
        assert [tuple(r) for r in rows] == [(5, v1, True), (10, v1, False)]
    finally:
        platform.close()


def test_an_api_without_a_processor_follows_a_promotion(live: Platform) -> None:
    from fastapi.testclient import TestClient

    from pitstop.web import create_app

    v1 = live.registry.alias_version("champion")
    v2 = second_version(live)
    live.scorer.reload()
    row = dict.fromkeys(live.scorer.feature_names, 1.0)

    def serving(client: TestClient) -> str:
        reply = client.post("/api/v1/predict", json={"rows": [row]})
        assert reply.status_code == 200, reply.text
        return str(reply.json()["predictions"][0]["model"]["version"])

    with TestClient(create_app(live), headers=admin_headers(live)) as client:
        assert serving(client) == v1
        promote(live.registry, live.db.audit)
        deadline = time.monotonic() + 20
        while serving(client) != v2:
            assert time.monotonic() < deadline, "the API never followed the promotion"
            time.sleep(0.1)


def test_a_hanging_registry_never_stalls_the_processor(
    live: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The aliases are polled on a thread of their own: while the registry does not answer (a
    remote MLflow that hangs, simulated at MLflow's client), readings are still scored."""
    from mlflow import MlflowClient

    v1 = live.registry.alias_version("champion")
    v2 = second_version(live)
    answer, asked = threading.Event(), threading.Event()
    original = MlflowClient.get_model_version_by_alias

    def hanging(self: MlflowClient, name: str, alias: str) -> object:
        if threading.current_thread() is not threading.main_thread():  # not promote, below
            asked.set()
            answer.wait(120)
        return original(self, name, alias)

    proc = Processor(live)
    proc.start()
    try:
        monkeypatch.setattr(MlflowClient, "get_model_version_by_alias", hanging)
        promote(
            live.registry, live.db.audit, version=v2
        )  # moves the alias; only the (hanging) poll would see it
        assert asked.wait(10), "the processor never polled the registry"
        publish(live, "eng-003", 3, 0, 5)
        deadline = time.monotonic() + 30
        while predictions(live).height == 0:
            assert time.monotonic() < deadline, "the processor stalled behind the registry"
            time.sleep(0.05)
        assert predictions(live)["version"].to_list() == [v1]  # the poll has not answered yet
        answer.set()  # the registry answers: the promotion is picked up between batches
        feed = Feed(live)
        feed.sent = 5 * len(MACHINES)  # from cycle 5, past the readings published above
        wait_for_version(live, feed, v2)
    finally:
        answer.set()
        proc.stop()
