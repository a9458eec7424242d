"""Training at scale: the weighted, seeded row sample and the rows binned once across folds."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pitstop.schema import TURBOFAN
from pitstop.sim import shipped
from pitstop.training import train_rul_model
from pitstop.training.cmapss import failures, telemetry
from pitstop.training.rows import TAIL_SHARE, draws, machine_chunks, sample_rates, sampled_rows
from pitstop.training.train import fit_spec, labelled_rows

FAST = {"num_boost_round": 10}


def fd001(units: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    train = telemetry(shipped("fd001_train").filter(pl.col("unit") <= units), "u")
    return train, failures(train)


def test_rates_keep_about_the_budget_with_the_tail_denser_than_the_plateau() -> None:
    rul = np.r_[np.full(80_000, 125.0), np.linspace(0, 124, 20_000)]  # a long healthy plateau
    rates = sample_rates(rul, 125, 10_000)
    assert rates is not None
    kept = rates.of(rul, 125)
    assert kept.sum() == pytest.approx(10_000, rel=0.01)
    assert rates.tail == pytest.approx(TAIL_SHARE * 10_000 / 20_000)
    assert rates.plateau < rates.tail
    assert sample_rates(rul, 125, 100_000) is None  # everything fits: no sample
    short_tail = sample_rates(np.r_[np.full(90_000, 125.0), np.zeros(1_000)], 125, 10_000)
    assert short_tail is not None and short_tail.tail == 1.0  # all of a short tail is kept
    assert short_tail.plateau == pytest.approx(9_000 / 90_000)


def test_a_machines_draws_do_not_depend_on_the_other_machines() -> None:
    both = draws(np.array(["a"] * 5 + ["b"] * 3), seed=1)
    alone = draws(np.array(["b"] * 3), seed=1)
    np.testing.assert_array_equal(both[5:], alone)
    assert not np.array_equal(draws(np.array(["b"] * 3), seed=2), alone)


def test_the_sample_holds_the_full_computations_rows_and_its_weights_sum_to_the_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    train, events = fd001(8)
    spec = fit_spec(train, TURBOFAN.feature_spec, 0, frozenset())
    monkeypatch.setattr("pitstop.training.rows.CHUNK_READINGS", 400)  # several machine groups
    assert len(machine_chunks(train, 400)) > 3
    full = labelled_rows(train, events, spec, 125, 30, None)
    sample = sampled_rows(train, events, spec, 125, 30, None, 500, seed=3)
    assert sample is not None and sample.total == full.height
    assert 350 < sample.rows.height < 650
    same = full.join(sample.rows.select("machine_id", "seq"), on=["machine_id", "seq"])
    assert same.equals(sample.rows.select(full.columns))  # the kept rows' features, exactly
    assert sample.weight.sum() == pytest.approx(full.height, rel=0.1)  # the loss, in expectation
    assert sampled_rows(train, events, spec, 125, 30, None, 10**6, seed=3) is None


def test_a_sampled_training_is_reproducible_and_records_its_budget() -> None:
    train, events = fd001(10)
    a = train_rul_model(
        train, events, TURBOFAN.feature_spec, folds=2, seed=5, params=FAST, max_train_rows=800
    )
    b = train_rul_model(
        train.sample(fraction=1.0, shuffle=True, seed=1),
        events,
        TURBOFAN.feature_spec,
        folds=2,
        seed=5,
        params=FAST,
        max_train_rows=800,
    )
    for x, y in zip(a.bundle.boosters, b.bundle.boosters, strict=True):
        assert x.model_to_string() == y.model_to_string()
    assert a.bundle.params["max_train_rows"] == 800
    assert a.rows == a.bundle.metrics["train_rows"] > 800 * 1.5  # every labelled row counted
    assert len(a.bundle.boosters) == 3
    whole = train_rul_model(train, events, TURBOFAN.feature_spec, folds=2, seed=5, params=FAST)
    assert "max_train_rows" not in whole.bundle.params  # below the budget: the model as before
    assert whole.rows == a.rows
