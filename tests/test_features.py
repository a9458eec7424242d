from __future__ import annotations

import numpy as np
import polars as pl

from pitstop.features import FeatureSpec, OnlineFeatures, build_features
from pitstop.sim import shipped


def _assert_parity(frame: pl.DataFrame, spec: FeatureSpec, chunks: list[int]) -> None:
    """Feed the stream online in micro-batches of the given sizes; compare at every batch end."""
    offline = build_features(frame, spec)
    online = OnlineFeatures(spec)
    for (machine,), group in frame.sort("seq").group_by("machine_id", maintain_order=True):
        seqs = group["seq"].to_numpy()
        values = group.select(spec.sensors).to_numpy()
        expected = offline.filter(pl.col("machine_id") == machine).select(spec.names).to_numpy()
        i, c = 0, 0
        while i < len(seqs):
            n = chunks[c % len(chunks)]
            c += 1
            online.update(str(machine), seqs[i : i + n], values[i : i + n])
            i = min(len(seqs), i + n)
            got = online.get([str(machine)])[0]
            np.testing.assert_allclose(got, expected[i - 1], rtol=1e-9, atol=1e-9)


def test_online_equals_offline_on_fd001() -> None:
    frame = (
        shipped("fd001_train")
        .filter(pl.col("unit") <= 4)
        .with_columns(
            pl.format("m{}", "unit").alias("machine_id"), pl.col("cycle").alias("seq"), pl.lit(0).alias("ts")
        )
    )
    spec = FeatureSpec(("s2", "s3", "s4", "s7", "s11", "s21"))
    _assert_parity(frame, spec, [1])
    _assert_parity(frame, spec, [7, 1, 30, 3])


def test_online_equals_offline_on_random_streams() -> None:
    rng = np.random.default_rng(0)
    rows = []
    for m in range(5):
        n = int(rng.integers(1, 80))
        seqs = np.sort(rng.choice(np.arange(1000), size=n, replace=False))  # gaps in seq
        level = rng.normal(0, 1000)
        for s in seqs:
            rows.append(
                {
                    "machine_id": f"r{m}",
                    "seq": int(s),
                    "ts": 0,
                    "x": level + rng.normal(0, 5),
                    "y": rng.normal(),
                }
            )
    frame = pl.DataFrame(rows)
    spec = FeatureSpec(
        ("x", "y"), mean_windows=(3, 11), std_windows=(4,), drift_window=6, baseline_readings=5
    )
    _assert_parity(frame, spec, [1, 5, 2])


def test_duplicates_and_stale_readings_are_skipped() -> None:
    spec = FeatureSpec(("x",), mean_windows=(2,), std_windows=(2,), drift_window=2, baseline_readings=2)
    online = OnlineFeatures(spec)
    online.update("m", np.array([1, 2]), np.array([[1.0], [2.0]]))
    kept = online.update("m", np.array([2, 3, 3]), np.array([[9.0], [3.0], [9.0]]))
    assert kept.tolist() == [False, True, False]
    assert online.count("m") == 3 and online.last_seq("m") == 3


def test_spec_hash_is_stable() -> None:
    a = FeatureSpec(("s2", "s3"))
    assert a.hash == FeatureSpec.from_dict(a.to_dict()).hash
    assert a.hash != FeatureSpec(("s2", "s3"), mean_windows=(5, 30)).hash
    # pinned: a change here means every registered model's recorded spec hash goes stale
    assert a.hash == "ba44dbf340650e84"
