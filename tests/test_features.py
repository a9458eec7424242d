"""Features defined once: the online state equals the offline build, reading for reading."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pitstop.features import FeatureSpec, OnlineFeatures, build_features, fit_regimes
from pitstop.schema import TURBOFAN
from pitstop.sim import shipped

T0 = 1_767_225_600_000_000  # 2026-01-01, µs
HOUR = 3_600_000_000
SMALL = FeatureSpec(
    ("x", "y"),
    windows=(2, 3),
    ewma_alphas=(0.3, 1.0),
    drift_window=2,
    baseline_readings=3,
    hours_since_reset=True,
)


def to_frame(rows: list[dict[str, Any]], spec: FeatureSpec) -> pl.DataFrame:
    schema = {"machine_id": pl.String, "seq": pl.Int64, "ts": pl.Int64, "bus_position": pl.Int64}
    schema |= {c: pl.Float64 for c in spec.inputs}
    frame = pl.DataFrame(rows, schema=schema, orient="row")
    return frame.with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))


def check_parity(
    frame: pl.DataFrame,
    spec: FeatureSpec,
    cuts: list[int],
    events: pl.DataFrame | None = None,
    settled_too: bool = False,
    same: list[int] | None = None,
) -> int:
    """Feed ``frame`` (in arrival order) online in micro-batches split at ``cuts``, each batch grouped
    by machine in arrival order as the processor does; after each, compare every machine it touched
    with the offline build. Returns how many comparisons were made."""
    offline = build_features(frame, spec, events, exact=True)
    settled = build_features(frame, spec, events)
    same = same if same is not None else [0, 0]
    online = OnlineFeatures(spec, capacity=2)  # grows as machines appear
    if events is not None:
        for machine_id, ts in events.select("machine_id", pl.col("ts").dt.epoch("us")).iter_rows():
            online.reset(machine_id, ts)
    compared = 0
    bounds = sorted({0, frame.height, *(c for c in cuts if 0 < c < frame.height)})
    for a, b in itertools.pairwise(bounds):
        batch = frame[a:b].sort("machine_id", maintain_order=True)
        online.update(
            batch["machine_id"].to_numpy(),
            batch["seq"].to_numpy(),
            batch["ts"].dt.epoch("us").to_numpy(),
            batch.select(spec.inputs).to_numpy(),
        )
        ids = sorted(m for m in set(batch["machine_id"].to_list()) if online.readings(m) > 0)
        if not ids:
            continue
        got = online.get(ids, exact=True)
        latest = pl.DataFrame({"machine_id": ids, "seq": [online.last_seen(m) for m in ids]})
        want = latest.join(offline, on=["machine_id", "seq"], how="left").select(spec.names).to_numpy()
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9, err_msg=f"after rows {a}:{b}")
        if settled_too:  # what models see: float32 steps, the same but for a rare last step
            want = latest.join(settled, on=["machine_id", "seq"], how="left").select(spec.names).to_numpy()
            got = online.get(ids)
            np.testing.assert_allclose(got, want, rtol=2.4e-7, atol=0, err_msg=f"after rows {a}:{b}")
            same[0] += int((got == want).sum())
            same[1] += got.size
        compared += len(ids)
    return compared


@st.composite
def streams(draw: st.DrawFn) -> tuple[pl.DataFrame, list[int], pl.DataFrame]:
    """A few machines' readings with gaps in seq and in time, interleaved at random, some delivered
    late (after a higher seq of their machine), plus reset events delivered ahead of time."""
    machines = draw(st.integers(1, 4))
    value = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
    per_machine = []
    events = []
    for m in range(machines):
        n = draw(st.integers(1, 25))
        steps = draw(st.lists(st.integers(1, 5), min_size=n, max_size=n))  # gaps in seq
        seqs = np.cumsum(steps).tolist()
        gaps = draw(st.lists(st.integers(1, 3 * HOUR), min_size=n, max_size=n))
        stamps = (T0 + np.cumsum(gaps)).tolist()
        rows = [(f"m{m}", s, t, draw(value), draw(value)) for s, t in zip(seqs, stamps, strict=True)]
        for _ in range(draw(st.integers(0, 2))):  # a reset somewhere in the machine's life
            events.append((f"m{m}", T0 + draw(st.integers(0, int(stamps[-1] - T0))), "maintenance"))
        # late deliveries: a reading moved after a later one of its machine
        for _ in range(draw(st.integers(0, 2))):
            if len(rows) > 2:
                i = draw(st.integers(0, len(rows) - 2))
                j = draw(st.integers(i + 1, len(rows) - 1))
                rows.insert(j, rows.pop(i))
        per_machine.append(rows)
    order = draw(st.permutations([m for m, rows in enumerate(per_machine) for _ in rows]))
    cursors = [0] * machines
    arrival = []
    for m in order:
        arrival.append(per_machine[m][cursors[m]])
        cursors[m] += 1
    frame = to_frame([(mid, s, t, i + 1, x, y) for i, (mid, s, t, x, y) in enumerate(arrival)], SMALL)
    cuts = draw(st.lists(st.integers(1, max(1, len(arrival) - 1)), max_size=6))
    ev = pl.DataFrame(events, schema=["machine_id", "ts", "kind"], orient="row").with_columns(
        pl.col("ts").cast(pl.Datetime("us", "UTC"))
    )
    return frame, cuts, ev


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_online_equals_offline_on_random_streams(
    stream: tuple[pl.DataFrame, list[int], pl.DataFrame],
) -> None:
    frame, cuts, events = stream
    check_parity(frame, SMALL, cuts, events)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.data())
def test_missing_optional_values_are_carried_forward_online_as_offline(
    stream: tuple[pl.DataFrame, list[int], pl.DataFrame], data: st.DataObject
) -> None:
    """An optional sensor missing in some readings (and in a machine's first ones): the machine's
    last value, else the learned fill value, the same online and offline."""
    frame, cuts, events = stream
    gaps = data.draw(st.lists(st.booleans(), min_size=frame.height, max_size=frame.height))
    frame = frame.with_columns(
        pl.when(pl.Series(gaps)).then(None).otherwise(pl.col("y")).alias("y"),
        pl.when(pl.Series(gaps[::-1])).then(None).otherwise(pl.col("x")).alias("x"),
    )
    spec = replace(SMALL, fill=(0.5, -2.0))
    check_parity(frame, spec, cuts, events)
    built = build_features(frame, spec, events, exact=True)
    assert np.isfinite(built.select(spec.names).to_numpy()).all()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.sampled_from([1, 3, 64]))
def test_windows_by_duration_equal_offline_and_online(
    stream: tuple[pl.DataFrame, list[int], pl.DataFrame], most: int
) -> None:
    """Windows of 2 and 5 hours over readings 1 s to 3 h apart (with resets and late readings),
    at most ``most`` readings each: the same numbers online and offline."""
    frame, cuts, events = stream
    spec = replace(SMALL, durations=("2h", "5h"), duration_max_readings=most)
    assert "x__slope_5h" in spec.names and spec.max_window == max(3, most)
    check_parity(frame, spec, cuts, events)


def test_a_duration_window_holds_the_readings_of_the_last_stretch_of_time() -> None:
    hours = [0, 1, 2, 10, 10.5, 11]
    rows = [("m", i + 1, T0 + int(h * HOUR), i + 1, float(i), 0.0) for i, h in enumerate(hours)]
    frame = to_frame(rows, SMALL)
    spec = replace(SMALL, durations=("2h",), stats=("mean", "min", "max"))
    built = build_features(frame, spec, exact=True)
    # at 2 h: the readings at 1 h and 2 h (0 h is not after 2 h - 2 h); at 10 h: only itself
    assert built["x__min_2h"].to_list() == [0.0, 0.0, 1.0, 3.0, 3.0, 3.0]
    assert built["x__mean_2h"].to_list() == [0.0, 0.5, 1.5, 3.0, 3.5, 4.0]
    capped = build_features(frame, replace(spec, duration_max_readings=2), exact=True)
    assert capped["x__min_2h"].to_list() == [0.0, 0.0, 1.0, 3.0, 3.0, 4.0]
    with pytest.raises(ValueError, match="not a duration"):
        replace(SMALL, durations=("2 weeks",))
    # a clock that jumped back: the window is the run back from the reading, up to the first one
    # stamped before the stretch (seq 2, stamped 5.5 h before seq 3), online as offline
    jumped = to_frame(
        [("m", i + 1, T0 + int(h * HOUR), i + 1, float(i), 0.0) for i, h in enumerate([6, 1, 6.5, 7])], SMALL
    )
    assert build_features(jumped, spec, exact=True)["x__min_2h"].to_list() == [0.0, 0.0, 2.0, 2.0]
    check_parity(jumped, spec, [1, 2, 3])


def test_fill_values_are_learned_only_when_an_input_can_be_missing() -> None:
    from pitstop.features.offline import fit_fill

    frame = to_frame([("m", 1, T0, 1, 1.0, 2.0), ("m", 2, T0 + HOUR, 2, 3.0, None)], SMALL)
    assert fit_fill(frame, SMALL).fill == (2.0, 2.0)
    assert fit_fill(frame.filter(pl.col("seq") == 1), SMALL).fill is None
    assert fit_fill(frame.filter(pl.col("seq") == 1), SMALL, optional={"y"}).fill == (1.0, 2.0)
    assert SMALL.hash == replace(SMALL, fill=None).hash != replace(SMALL, fill=(0.0, 0.0)).hash


def fd001(units: int) -> pl.DataFrame:
    return (
        shipped("fd001_train")
        .filter(pl.col("unit") <= units)
        .sort("cycle", "unit")  # machines interleaved, as they arrive
        .with_columns(
            pl.format("m{}", "unit").alias("machine_id"),
            pl.col("cycle").alias("seq"),
            (pl.lit(T0) + pl.col("cycle") * HOUR).cast(pl.Datetime("us", "UTC")).alias("ts"),
            pl.int_range(pl.len()).alias("bus_position"),
        )
    )


@pytest.mark.parametrize("advance_rows", [None, 40])
@pytest.mark.parametrize("regimes", [0, 3])
def test_online_equals_offline_on_fd001_with_resets_and_regimes(
    regimes: int, advance_rows: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if advance_rows is not None:  # batches of 97 rows advanced a few machines at a time
        monkeypatch.setattr("pitstop.features.online.ADVANCE_ROWS", advance_rows)
    frame = fd001(6)
    spec = fit_regimes(frame, replace(TURBOFAN.feature_spec, hours_since_reset=True, regime_count=regimes))
    assert (spec.regimes is not None) == bool(regimes)
    events = pl.DataFrame(
        {"machine_id": ["m1", "m2"], "ts": [T0 + 80 * HOUR, T0], "kind": ["maintenance", "failure"]}
    ).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
    same = [0, 0]
    assert check_parity(frame, spec, list(range(0, frame.height, 97)), events, True, same) > 60
    assert same[0] / same[1] > 0.995  # bit for bit, but for a value here and there
    built = build_features(frame, spec, events)
    m1 = built.filter(machine_id="m1")
    assert m1["episode"].max() == 1  # the reading stamped at the reset ends the old episode
    assert m1.filter(pl.col("ts") == T0 + 81 * HOUR)["age"].to_list() == [1.0]


def test_late_readings_are_left_out_online_and_offline() -> None:
    rows = [
        ("m", 1, T0, 1, 1.0, 0.0),
        ("m", 3, T0 + HOUR, 2, 3.0, 0.0),
        ("m", 2, T0 + 2 * HOUR, 3, 99.0, 0.0),
    ]
    frame = to_frame(rows, SMALL)
    built = build_features(frame, SMALL)
    assert built["seq"].to_list() == [1, 3]  # seq 2 came after seq 3: late
    online = OnlineFeatures(SMALL)
    kept = online.update(
        ["m"] * 3, np.array([1, 3, 2]), np.array([T0, T0 + HOUR, T0 + 2 * HOUR]), np.ones((3, 2))
    )
    assert kept.tolist() == [True, True, False] and online.readings("m") == 2


def test_snapshot_restores_the_same_state() -> None:
    frame = fd001(5)
    spec = TURBOFAN.feature_spec
    a = OnlineFeatures(spec)
    half = frame.height // 2

    def feed(online: OnlineFeatures, part: pl.DataFrame) -> None:
        part = part.sort("machine_id", maintain_order=True)
        online.update(
            part["machine_id"].to_numpy(),
            part["seq"].to_numpy(),
            part["ts"].dt.epoch("us").to_numpy(),
            part.select(spec.inputs).to_numpy(),
        )

    feed(a, frame[:half])
    a.reset("m2", T0 + 10_000 * HOUR)  # pending: travels with the snapshot
    b, extra = OnlineFeatures.restore(spec, a.snapshot({"position": 7}))
    assert extra == {"position": 7} and b.pending == a.pending
    feed(a, frame[half:])
    feed(b, frame[half:])
    ids = [f"m{i}" for i in range(1, 6)]
    np.testing.assert_array_equal(a.get(ids), b.get(ids))
    with pytest.raises(ValueError, match="feature spec"):
        OnlineFeatures.restore(replace(spec, windows=(3,)), a.snapshot())


def test_spec_is_declared_per_machine_type_and_hashed_stably() -> None:
    spec = TURBOFAN.feature_spec
    assert spec.sensors == tuple(TURBOFAN.informative)
    assert spec.hash == FeatureSpec.from_dict(spec.to_dict()).hash
    assert spec.hash != replace(spec, windows=(5, 30)).hash
    assert len(spec.names) == 1 + len(spec.sensors) * len(spec.per_sensor)
    # pinned: a change here means every registered model's recorded spec hash goes stale
    assert FeatureSpec(("s2", "s3")).hash == "706a4896b1c143f9"
    with pytest.raises(ValueError, match="unknown window stats"):
        FeatureSpec(("x",), stats=("median",))
    with pytest.raises(ValueError, match="at least one reading"):
        FeatureSpec(("x",), windows=(0,))


def test_group_spans_cover_every_row_once_in_whole_groups() -> None:
    from pitstop.features.online import group_spans

    rng = np.random.default_rng(3)
    for _ in range(2000):
        n = int(rng.integers(1, 300))
        groups = np.sort(rng.integers(0, int(rng.integers(1, 40)), n))
        starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
        size = int(rng.integers(1, 100))
        spans = group_spans(starts, n, size)
        assert spans[0][0] == 0 and spans[-1][1] == n
        assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
        for lo, hi in spans:
            assert lo < hi and lo in starts and (hi == n or hi in starts)  # whole groups
            inside = starts[(starts >= lo) & (starts < hi)]
            assert hi - lo <= size or len(inside) == 1  # larger than size: one group alone
