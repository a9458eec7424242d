"""The compiled forest gives LightGBM's own sums (tolerance 0) on awkward values, and declines the
models it does not reproduce."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from pitstop.registry.interval import apply_interval
from pitstop.serving.forest import K_ZERO, Forest
from pitstop.serving.scorer import round3

PARAMS = {"objective": "regression", "num_leaves": 7, "verbose": -1, "num_threads": 1, "seed": 3}


def _data(rng: np.random.Generator, n: int = 600, k: int = 6) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(n, k)).round(2)
    y = x[:, 0] * 3 - x[:, 1] ** 2 + np.where(np.isnan(x[:, 2]), 5.0, x[:, 2])
    return x, y


def _members(x: np.ndarray, y: np.ndarray, rounds: int = 40, **params: object) -> list[lgb.Booster]:
    """Three members (like a bundle's ensemble), each trained on a different half of the rows."""
    out = []
    for k in range(3):
        part = slice(k * 100, k * 100 + len(x) // 2)
        data = lgb.Dataset(x[part], y[part], params={"verbose": -1})
        out.append(lgb.train({**PARAMS, **params, "seed": k}, data, num_boost_round=rounds))
    return out


def _awkward(boosters: list[lgb.Booster], x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rows with NaN, zeros of both signs, values inside LightGBM's zero threshold, every split
    threshold itself and its neighbours one ulp away."""
    k = x.shape[1]
    thresholds = [
        float(t)
        for b in boosters
        for line in b.model_to_string().splitlines()
        if line.startswith("threshold=")
        for t in line.split("=")[1].split()
    ]
    special = [np.nan, 0.0, -0.0, K_ZERO, -K_ZERO, K_ZERO / 2, -K_ZERO * 0.9, 1e-300, 2 * K_ZERO]
    pool = np.array(thresholds + [np.nextafter(t, np.inf) for t in thresholds] + special * 20)
    rows = rng.choice(pool, size=(400, k))
    mixed = x[:200].copy()
    mixed[rng.random(mixed.shape) < 0.3] = np.nan
    mixed[rng.random(mixed.shape) < 0.2] = 0.0
    return np.vstack([x[:200], rows, mixed])


def _lightgbm(boosters: list[lgb.Booster], x: np.ndarray) -> np.ndarray:
    raw = np.asarray(boosters[0].predict(x, num_threads=1), np.float64)
    for booster in boosters[1:]:
        raw = raw + np.asarray(booster.predict(x, num_threads=1), np.float64)
    return raw


@pytest.mark.parametrize(
    ("nan_share", "params"),
    [
        (0.0, {}),  # no missing values in training: every split's missing type is None
        (0.2, {}),  # NaN in training: missing type NaN, default left or right
        (0.0, {"zero_as_missing": True}),  # missing type Zero
        (0.2, {"use_missing": False}),
        (0.0, {"objective": "huber"}),
    ],
)
def test_the_forest_sums_what_lightgbm_sums(nan_share: float, params: dict[str, object]) -> None:
    rng = np.random.default_rng(7)
    x, y = _data(rng)
    x[rng.random(x.shape) < nan_share] = np.nan
    x[rng.random(x.shape) < 0.1] = 0.0
    boosters = _members(x, y, **params)
    forest = Forest.from_model_texts([b.model_to_string() for b in boosters], x.shape[1])
    assert forest is not None
    test = _awkward(boosters, x, rng)
    assert np.array_equal(forest.raw(test), _lightgbm(boosters, test))
    assert np.array_equal(forest.raw(test[:1]), _lightgbm(boosters, test[:1]))  # one row
    with pytest.raises(ValueError, match="rows of 6 values"):
        forest.raw(test[:, :5])


def test_models_it_does_not_reproduce_get_no_forest() -> None:
    rng = np.random.default_rng(1)
    x, y = _data(rng)
    plain = _members(x, y, rounds=5)
    texts = [b.model_to_string() for b in plain]
    assert Forest.from_model_texts(texts, 6) is not None
    assert Forest.from_model_texts(texts, 7) is None  # another feature count
    x[:, 3] = rng.integers(0, 4, len(x))
    y = y + x[:, 3] * 4
    data = lgb.Dataset(x, y, categorical_feature=[3], params={"verbose": -1})
    categorical = lgb.train(PARAMS, data, num_boost_round=5)
    assert Forest.from_model_texts([categorical.model_to_string()], 6) is None
    positive = np.abs(y) + 1
    poisson = lgb.train({**PARAMS, "objective": "poisson"}, lgb.Dataset(x, positive), num_boost_round=5)
    assert Forest.from_model_texts([poisson.model_to_string()], 6) is None  # exp() of the sum
    linear = lgb.train({**PARAMS, "linear_tree": True}, lgb.Dataset(x, y), num_boost_round=5)
    assert Forest.from_model_texts([linear.model_to_string()], 6) is None


def test_bulk_rounding_is_pythons_round() -> None:
    rng = np.random.default_rng(5)
    halves = (np.arange(-2000, 200000) + 0.5) / 1000  # every x.xxx5 the API could meet
    values = np.concatenate(
        [
            rng.uniform(-50, 400, 20000),
            halves,
            np.nextafter(halves, 0),
            np.nextafter(halves, 1e9),
            [0.0, -0.0],
        ]
    )
    assert round3(values) == [round(float(v), 3) for v in values]
    for few in (values[:1], values[20000:20005], halves[:16]):  # the small path: Python's own round
        assert round3(few) == [round(float(v), 3) for v in few]


def test_rows_walked_side_by_side_sum_what_lightgbm_sums_for_any_count_and_single_leaf_trees() -> None:
    """The branch-free kernel (eight rows at a time, from ``WALK_FROM`` rows) on row counts that
    are not multiples of eight, and on a member whose trees are single leaves (a constant target)."""
    from pitstop.serving.forest import WALK_FROM

    rng = np.random.default_rng(11)
    x, y = _data(rng)
    boosters = _members(x, y)
    flat = lgb.train({**PARAMS, "seed": 9}, lgb.Dataset(x, np.full(len(x), 2.5)), num_boost_round=5)
    boosters.append(flat)
    assert "num_leaves=1" in flat.model_to_string()
    forest = Forest.from_model_texts([b.model_to_string() for b in boosters], x.shape[1])
    assert forest is not None and forest.walk is not None
    test = _awkward(boosters, x, rng)
    for n in (WALK_FROM - 1, WALK_FROM, 13, 100, 799):
        assert np.array_equal(forest.raw(test[:n]), _lightgbm(boosters, test[:n])), n


def test_one_row_from_raw_is_numpys_arithmetic_bit_for_bit() -> None:
    """A bundle turns one row's summed raw prediction into RUL and interval with floats, not numpy:
    the same bits as the arrays' path, at band edges, NaN, zeros of both signs and negatives."""
    from pitstop.features import FeatureSpec
    from pitstop.registry.bundle import ModelBundle

    rng = np.random.default_rng(5)
    x, y = _data(rng)
    members = _members(x, y * 40 + 60, rounds=5)
    intervals = [
        {"lower": -12.5, "upper": 30.25},  # one band, scalar offsets (models from before bands)
        {"edges": [20.0, 55.5, 120.0], "lower": [-3.0, -7.5, -20.0, -90.0], "upper": [4.0, 9.0, 25.0, 400.0]},
        {"edges": [20, 55], "lower": [-3, -7, -20], "upper": [4, 9, 25]},  # integers
        # not a plain ascending list: left to numpy, whatever it makes of it
        {"edges": [np.nan, 50.0], "lower": [-1.0, -2.0, -3.0], "upper": [3.0, 4.0, 5.0]},
        {"edges": [80.0, 30.0], "lower": [-1.0, -2.0, -3.0], "upper": [3.0, 4.0, 5.0]},
    ]
    for interval in intervals:
        bundle = ModelBundle(members, FeatureSpec(sensors=("a",)), interval)
        edges = interval.get("edges", [20.0])
        n = len(members)
        values = [np.nan, 0.0, -0.0, -1e-300, -5.0, 1e-300, np.inf]
        values += [e * n for e in edges] + [np.nextafter(float(e), -np.inf) * n for e in edges]
        values += (rng.normal(60, 70, 200) * n).tolist()
        for raw in values:
            one = bundle.from_raw(np.array([raw]))
            rul = np.clip(np.array([raw, raw]) / n, 0.0, None)  # two rows: numpy's path
            lower, upper = apply_interval(interval, rul)
            for got, want in zip(one, (rul[:1], lower[:1], upper[:1]), strict=True):
                assert got.shape == (1,) and got.dtype == np.float64
                assert got.tobytes() == want.tobytes(), (raw, interval, got, want)
        # another dtype keeps numpy's arithmetic in that dtype
        single = bundle.from_raw(np.array([123.4], np.float32))[0]
        assert (
            single.dtype == np.float32 and single.tobytes() == (np.array([123.4], np.float32) / n).tobytes()
        )
