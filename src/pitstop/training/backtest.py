"""Backtest: what the maintenance policy would have done on past data, in the units maintenance
counts: failures caught in time, lead, false alarms, cost; beside run-to-failure and the best
fixed-interval preventive schedule from the same data.

How it replays:

- **Predictions a model never saw.** Machines are split into grouped folds; for each fold a model
  is trained (``train_rul_model``, the production training) on the other machines, and scores
  every reading of the held-out ones from the offline features (the same definitions the
  processor computes online; ``tests/test_features.py`` holds the two equal).
- **Time-ordered, labels only when failures happen.** Each machine's readings are replayed in
  order through ``RiskPolicy.step``, the function the processor calls; the policy never sees a
  label. A failure is known only when its reading comes.
- **What a work order leads to.** The workshop works an order ``lead_time`` readings after it
  opened. If the machine failed before then, the failure is unplanned (the order was late). If
  it then fails within ``horizon`` readings, the fault is confirmed and repaired (planned): the
  failure is *caught*, with lead = failure - opening >= lead time. Otherwise the inspection finds
  no fault (a *false alarm*), the order closes "no fault found" and the policy goes on.
- **Cost.** Strategies end machine lives at different points (a repair renews the machine), so
  they are compared by cost per reading of operation; ``cost`` is that rate times the readings
  the fleet ran to failure, so that run-to-failure's cost is exactly its failures times their
  cost. The fixed-interval baseline renews every machine at T readings (a failure before T is
  unplanned); the best T is chosen on the same data, which flatters the baseline.
- **Time units.** For a machine type counted in a duration (``unit_seconds``), positions are the
  readings' timestamps in that unit instead of their seqs: lead time, horizon, lives, intervals
  and "per 1,000" are in hours (say) of operation, as the live policy counts them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import polars as pl

from pitstop.features import FeatureSpec, build_features
from pitstop.maintenance import PolicyState, RiskPolicy
from pitstop.training.labels import _event_seqs
from pitstop.training.train import Progress, train_rul_model


@dataclass(frozen=True)
class Costs:
    failure: float = 10.0
    repair: float = 2.0
    inspection: float = 0.5


@dataclass(frozen=True)
class Life:
    """One machine episode, scored: its readings' seqs and the RUL interval's lower bounds, and
    how it ended (``failed`` at ``end``, or censored: still running at ``end``)."""

    machine_id: str
    seq: np.ndarray  # positions: seqs, or timestamps in the type's time unit
    lower: np.ndarray
    end: float
    failed: bool
    timed: bool = False  # positions are times: a life's length is end - start (no +1 reading)

    @property
    def length(self) -> float:
        return float(self.end - self.seq[0] + (0 if self.timed else 1))


@dataclass(frozen=True)
class Outcome:
    """One strategy on the backtest."""

    strategy: str
    failures: int
    caught: int
    missed: int
    late_orders: int
    false_alarms: int
    median_lead: float | None
    readings: float  # readings (or time units) the fleet operated under this strategy
    raw_cost: float
    cost: float  # per the readings the fleet ran to failure (see the module doc)
    threshold: float | None = None
    interval: float | None = None

    @property
    def caught_fraction(self) -> float:
        return self.caught / self.failures if self.failures else 1.0

    @property
    def false_alarms_per_1000(self) -> float:
        return 1000 * self.false_alarms / self.readings if self.readings else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "caught_fraction": round(self.caught_fraction, 4),
            "false_alarms_per_1000": round(self.false_alarms_per_1000, 3),
        }


def predict_lives(
    telemetry: pl.DataFrame,
    events: pl.DataFrame,
    spec: FeatureSpec,
    *,
    folds: int = 5,
    seed: int = 42,
    train_options: dict[str, Any] | None = None,
    progress: Progress | None = None,
    unit_seconds: float | None = None,
) -> list[Life]:
    """Every reading scored by a model trained without its machine (grouped ``folds``), cut into
    lives at failure and maintenance events (positions in units of ``unit_seconds``, if given)."""
    machines = np.array(sorted(telemetry["machine_id"].unique().to_list()))
    if len(machines) < folds:
        raise ValueError(f"need at least {folds} machines for {folds} grouped folds, have {len(machines)}")
    rng = np.random.default_rng(seed)
    fold_of = dict(zip(rng.permutation(machines), np.arange(len(machines)) % folds, strict=True))
    lives: list[Life] = []
    for k in range(folds):
        held = [m for m in machines if fold_of[m] == k]
        if progress:
            progress(f"fold {k + 1}/{folds}: training", k, folds)
        train_rows = telemetry.filter(~pl.col("machine_id").is_in(held))
        result = train_rul_model(
            train_rows,
            events.filter(~pl.col("machine_id").is_in(held)),
            spec,
            seed=seed,
            unit_seconds=unit_seconds,
            **(train_options or {}),
        )
        bundle = result.bundle
        test_rows = telemetry.filter(pl.col("machine_id").is_in(held))
        test_events = events.filter(pl.col("machine_id").is_in(held))
        features = build_features(test_rows, bundle.spec, test_events).sort("machine_id", "seq")
        _, lower, _ = bundle.predict(features.select(bundle.spec.names).to_numpy())
        scored = features.select("machine_id", "ts", "seq").with_columns(lower=pl.Series(lower))
        lives += cut_lives(scored, test_events, unit_seconds)
    if progress:
        progress("done", folds, folds)
    return lives


def cut_lives(scored: pl.DataFrame, events: pl.DataFrame, unit_seconds: float | None = None) -> list[Life]:
    """Cut each machine's scored readings at its failure and maintenance events; positions are
    seqs, or timestamps in units of ``unit_seconds``."""
    ends = _event_seqs(scored.sort("machine_id", "ts", "seq"), events)
    if unit_seconds is not None:
        per_unit = unit_seconds * 1e6
        scored = scored.with_columns((pl.col("ts").dt.epoch("us") / per_unit).alias("_pos"))
        ends = ends.with_columns((pl.col("_event_ts").dt.epoch("us") / per_unit).alias("_event_seq"))
    else:
        scored = scored.with_columns(pl.col("seq").cast(pl.Float64).alias("_pos"))
    joined = scored.sort("machine_id", "ts", "seq").join_asof(
        ends, left_on="ts", right_on="_event_ts", by="machine_id", strategy="forward", check_sortedness=False
    )
    lives = []
    for (machine_id, end_seq, kind), part in joined.group_by(
        "machine_id", "_event_seq", "_event_kind", maintain_order=True
    ):
        seq = part["_pos"].to_numpy()
        failed = kind == "failure"
        end = float(end_seq) if end_seq is not None else float(seq[-1])
        lives.append(
            Life(str(machine_id), seq, part["lower"].to_numpy(), end, failed, unit_seconds is not None)
        )
    return lives


def replay(lives: list[Life], policy: RiskPolicy, costs: Costs, horizon: float) -> Outcome:
    """The policy over every life, reading by reading (see the module doc)."""
    caught = late = false_alarms = 0
    operated = raw = 0.0
    leads: list[float] = []
    for life in lives:
        state = PolicyState()
        opened: float | None = None
        repaired_at: float | None = None
        for s, lower in zip(life.seq.tolist(), life.lower.tolist(), strict=True):
            if life.failed and s >= life.end:
                break  # the failing reading: nothing can be done at it any more
            if opened is not None and s >= opened + policy.lead_time:  # the workshop gets to it
                if life.failed and life.end - s <= horizon:
                    repaired_at = s
                    caught += 1
                    leads.append(life.end - opened)
                    raw += costs.repair
                    break
                false_alarms += 1
                raw += costs.inspection
                policy.closed(state, "no_fault_found", s)
                opened = None
            if opened is None and policy.step(state, lower, s):
                opened = s
        if repaired_at is not None:
            operated += float(repaired_at - life.seq[0] + (0 if life.timed else 1))
            continue
        operated += life.length
        if life.failed:
            raw += costs.failure
            late += opened is not None
        elif opened is not None:
            false_alarms += 1  # open on a machine that has not failed: no fault found
            raw += costs.inspection
    failures = sum(life.failed for life in lives)
    return Outcome(
        strategy="policy",
        failures=failures,
        caught=caught,
        missed=failures - caught,
        late_orders=late,
        false_alarms=false_alarms,
        median_lead=float(np.median(leads)) if leads else None,
        readings=operated,
        raw_cost=raw,
        cost=_normalised(raw, operated, lives),
        threshold=policy.threshold,
    )


def run_to_failure(lives: list[Life], costs: Costs) -> Outcome:
    failures = sum(life.failed for life in lives)
    raw = failures * costs.failure
    readings = sum(life.length for life in lives)
    return Outcome("run_to_failure", failures, 0, failures, 0, 0, None, readings, raw, raw)


def fixed_interval(lives: list[Life], costs: Costs, interval: float) -> Outcome:
    """Renew every machine ``interval`` readings into its life; a failure before is unplanned."""
    raw = operated = 0.0
    caught = 0
    for life in lives:
        if life.length > interval:
            raw += costs.repair
            operated += interval
            caught += life.failed
        else:
            raw += costs.failure if life.failed else 0.0
            operated += life.length
    failures = sum(life.failed for life in lives)
    cost = _normalised(raw, operated, lives)
    return Outcome(
        "fixed_interval",
        failures,
        caught,
        failures - caught,
        0,
        0,
        None,
        operated,
        raw,
        cost,
        interval=interval,
    )


def best_fixed_interval(lives: list[Life], costs: Costs) -> Outcome:
    """The fixed interval with the lowest cost on these lives."""
    longest = max(life.length for life in lives)
    if any(life.timed for life in lives):  # times: 400 candidates up to the longest life
        candidates = [float(t) for t in np.linspace(longest / 400, longest, 400)]
    else:
        candidates = [float(t) for t in range(1, int(longest) + 1)]
    return min((fixed_interval(lives, costs, t) for t in candidates), key=lambda o: o.cost)


def search_threshold(
    lives: list[Life], policy: RiskPolicy, costs: Costs, horizon: float, span: float = 80, step: float = 1
) -> Outcome:
    """The threshold (from the lead time up) with the lowest cost; ties go to more failures caught."""
    candidates = np.arange(policy.lead_time, policy.lead_time + span + step / 2, step)
    outcomes = [replay(lives, replace(policy, threshold=float(t)), costs, horizon) for t in candidates]
    return min(outcomes, key=lambda o: (o.cost, -o.caught))


def _normalised(raw: float, operated: float, lives: list[Life]) -> float:
    reference = sum(life.length for life in lives)
    return raw / operated * reference if operated else math.nan


def backtest(
    telemetry: pl.DataFrame,
    events: pl.DataFrame,
    spec: FeatureSpec,
    policy: RiskPolicy,
    costs: Costs,
    *,
    horizon: float = 30,
    folds: int = 5,
    seed: int = 42,
    search: bool = False,
    train_options: dict[str, Any] | None = None,
    progress: Progress | None = None,
    unit_seconds: float | None = None,
) -> dict[str, Any]:
    """The whole backtest: predictions by grouped folds, the policy replayed (or its threshold
    searched), and both baselines. Returns a JSON-ready report."""
    if events.filter(pl.col("kind") == "failure").height == 0:
        raise ValueError("no failure events: a backtest needs machines that failed")
    lives = predict_lives(
        telemetry,
        events,
        spec,
        folds=folds,
        seed=seed,
        train_options=train_options,
        progress=progress,
        unit_seconds=unit_seconds,
    )
    ours = (
        search_threshold(lives, policy, costs, horizon) if search else replay(lives, policy, costs, horizon)
    )
    rtf = run_to_failure(lives, costs)
    fixed = best_fixed_interval(lives, costs)
    return {
        "caught_fraction": round(ours.caught_fraction, 4),
        "median_lead": ours.median_lead,
        "false_alarms_per_1000": round(ours.false_alarms_per_1000, 3),
        "cost": round(ours.cost, 2),
        "run_to_failure_cost": round(rtf.cost, 2),
        "best_fixed_interval_cost": round(fixed.cost, 2),
        "best_fixed_interval": fixed.interval,
        "threshold": ours.threshold,
        "searched": search,
        "lead_time": policy.lead_time,
        "horizon": horizon,
        "unit": "readings" if unit_seconds is None else f"{unit_seconds:g} s",
        "costs": asdict(costs),
        "machines": len({life.machine_id for life in lives}),
        "failures": ours.failures,
        "strategies": [o.to_dict() for o in (ours, rtf, fixed)],
    }
