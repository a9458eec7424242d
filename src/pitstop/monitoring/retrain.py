"""The retraining loop: train on the newest lake version → gate against the champion on held-out
machines and a backtest → shadow for a number of live readings → promote, or reject with the
reason. Every step is audited (actor ``retrain``); nothing waits for a person.

- **Hold-out.** The newest failed machines (``retrain_holdout`` of them, by failure time) are left
  out of training: the lives a champion trained earlier is least likely to have seen.
- **Gate.** The challenger must give no invalid output on the hold-out, and be within
  ``retrain_tolerance`` of the champion (or better) on a fair basis. Where at least two held-out
  machines failed after the champion's training data (its lineage's events version), both are
  compared on those: RMSE on their labelled readings and the cost of a backtest of the
  maintenance policy over their lives. Otherwise the champion has seen them, and the comparison is
  of both models' cross-validated RMSE from training (grouped folds: out-of-sample for both).
- **Shadow.** The challenger is registered under the ``challenger`` alias (a processor running a
  shadow deployment scores it live), then scored beside the champion on the next
  ``retrain_shadow_readings`` readings that reach the lake: an invalid output rejects it, and
  failures seen in that window must not be predicted worse.
- **Promote** through ``pitstop promote``'s path (artifacts verified; the processor switches
  between micro-batches).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from pitstop.errors import ModelError
from pitstop.features import build_features
from pitstop.registry import ModelBundle, Registry
from pitstop.serving.scorer import invalid_outputs
from pitstop.training.backtest import Costs, cut_lives, replay
from pitstop.training.labels import rul_labels

if TYPE_CHECKING:
    from pitstop.platform import Platform

log = logging.getLogger(__name__)
ACTOR = "retrain"


@dataclass
class RetrainResult:
    outcome: str  # promoted | rejected
    reason: str
    version: str | None = None
    gate: dict[str, Any] = field(default_factory=dict)
    shadow: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "reason": self.reason,
            "version": self.version,
            "gate": self.gate,
            "shadow": self.shadow,
        }


def evaluate_on(
    platform: Platform,
    bundle: ModelBundle,
    telemetry: pl.DataFrame,
    events: pl.DataFrame,
    machine_type: str | None = None,
) -> dict[str, Any]:
    """A model on held-out machines: RMSE against the capped RUL of their labelled readings (the
    model's own cap and horizon, in its type's unit), invalid outputs, and the type's maintenance
    policy's backtest over their lives."""
    s = platform.settings
    unit = bundle.params.get("unit_seconds")
    unit_seconds = float(unit) if isinstance(unit, int | float) else None
    cap = bundle.rul_cap if bundle.rul_cap is not None else s.rul_cap
    horizon = float(bundle.params.get("failure_horizon", s.failure_horizon))
    features = build_features(telemetry, bundle.spec, events)
    labelled = rul_labels(features, events, cap, horizon, unit_seconds)
    rul, lower, upper = bundle.predict(labelled.select(bundle.spec.names).to_numpy())
    truth = labelled["rul"].to_numpy()
    invalid = int(invalid_outputs(rul, lower, upper).sum())
    scored = labelled.select("machine_id", "ts", "seq").with_columns(lower=pl.Series(lower))
    lives = cut_lives(scored, events, unit_seconds)
    costs = Costs(s.cost_failure, s.cost_repair, s.cost_inspection)
    policy = platform.policy_for(machine_type) if machine_type else platform.policy
    outcome = replay(lives, policy, costs, horizon)
    return {
        "rows": labelled.height,
        "rmse": float(np.sqrt(np.mean((rul - truth) ** 2))) if len(truth) else math.nan,
        "invalid": invalid,
        "cost": outcome.cost,
        "caught_fraction": outcome.caught_fraction,
    }


def holdout_machines(events: pl.DataFrame, share: float) -> list[str]:
    """The newest failed machines (by their latest failure), ``share`` of them, at least two."""
    failed = (
        events.filter(pl.col("kind") == "failure")
        .group_by("machine_id")
        .agg(pl.col("ts").max())
        .sort("ts", "machine_id", descending=True)
    )
    k = max(2, math.ceil(share * failed.height))
    return failed["machine_id"].head(k).to_list()


def retrain(
    platform: Platform,
    *,
    trigger: str = "manual",
    params: dict[str, Any] | None = None,
    shadow_readings: int | None = None,
    shadow_timeout_s: float | None = None,
    machine_type: str | None = None,
) -> RetrainResult:
    """One pass of the loop for one machine type's model (default: the fleet's first type; see
    the module doc). Returns what happened; everything is audited."""
    from pitstop.serving.deploy import CANDIDATE_TAG, GATED, PASSED, SHADOWING, promote
    from pitstop.training.pipeline import machines_of_type, register, train_on_lake

    s = platform.settings
    audit = platform.db.audit
    mt = platform.fleet.type_of(platform.deployment_for(machine_type or platform.default_type).machine_type)
    registry = platform.registry_for(mt.name)
    audit(ACTOR, "retrain_started", trigger=trigger, machine_type=mt.name)
    members = machines_of_type(platform, mt.name)
    events = platform.lake.read("events", machine_ids=members)
    held = holdout_machines(events, s.retrain_holdout)
    if events.filter(pl.col("kind") == "failure")["machine_id"].n_unique() < len(held) + s.train_folds:
        return _reject(
            platform,
            registry,
            "not enough failed machines to train and to hold some out",
            trigger,
            machine_type=mt.name,
        )
    trained = train_on_lake(platform, exclude_machines=held, params=params, machine_type=mt.name)
    challenger = trained.result.bundle
    telemetry = platform.lake.read(
        "telemetry", version=trained.lake_version, columns=["machine_id", "ts", "seq", *mt.sensor_names]
    ).filter(pl.col("machine_id").is_in(held))
    held_events = events.filter(pl.col("machine_id").is_in(held))
    gate: dict[str, Any] = {
        "machine_type": mt.name,
        "held_out": held,
        "challenger": {
            **evaluate_on(platform, challenger, telemetry, held_events, mt.name),
            "cv_rmse": challenger.metrics.get("cv_rmse"),
        },
    }
    try:
        champion = registry.load("champion")
    except ModelError:
        champion = None
    if champion is not None:
        unseen = _unseen_by(platform, registry, champion.version, held)
        gate["unseen_by_champion"] = unseen
        if len(unseen) >= 2:
            gate["basis"] = "held-out machines the champion never saw fail"
            rows = pl.col("machine_id").is_in(unseen)
            gate["challenger"].update(
                evaluate_on(platform, challenger, telemetry.filter(rows), held_events.filter(rows), mt.name)
            )
            gate["champion"] = {
                "version": champion.version,
                **evaluate_on(
                    platform, champion.bundle, telemetry.filter(rows), held_events.filter(rows), mt.name
                ),
            }
        else:
            gate["basis"] = "cross-validated RMSE (the champion trained on the held-out machines)"
            gate["champion"] = {
                "version": champion.version,
                "cv_rmse": champion.bundle.metrics.get("cv_rmse"),
            }
    problem = _gate_problem(gate, s.retrain_tolerance)
    if problem:
        return _reject(platform, registry, f"gate: {problem}", trigger, gate=gate, machine_type=mt.name)
    # a candidate from its first moment: promote refuses it (unless forced) until it has passed
    registered = register(platform, trained, "challenger", ACTOR, version_tags={CANDIDATE_TAG: GATED})
    audit(ACTOR, "retrain_gate_passed", version=registered.version, gate=gate)
    readings = s.retrain_shadow_readings if shadow_readings is None else shadow_readings
    timeout = s.retrain_shadow_timeout_s if shadow_timeout_s is None else shadow_timeout_s
    shadow: dict[str, Any] = {}
    if readings > 0 and champion is not None:
        registry.set_version_tag(registered.version, CANDIDATE_TAG, SHADOWING)
        shadow = _shadow(platform, challenger, champion.bundle, readings, timeout, trained.telemetry, members)
        if shadow.get("problem"):
            return _reject(
                platform,
                registry,
                f"shadow: {shadow['problem']}",
                trigger,
                registered.version,
                gate,
                shadow,
                machine_type=mt.name,
            )
        audit(ACTOR, "retrain_shadow_passed", version=registered.version, shadow=shadow)
    registry.set_version_tag(registered.version, CANDIDATE_TAG, PASSED)
    promote(registry, platform.db.audit, registered.version, actor=ACTOR, audited=platform.db.audited_move)
    result = RetrainResult("promoted", "gate and shadow passed", registered.version, gate, shadow)
    audit(ACTOR, "retrain_promoted", trigger=trigger, machine_type=mt.name, version=registered.version)
    return result


def _gate_problem(gate: dict[str, Any], tolerance: float) -> str | None:
    new = gate["challenger"]
    if new["rows"] == 0:
        return "the held-out machines have no labelled readings"
    if new["invalid"]:
        return f"{new['invalid']} invalid outputs on the held-out machines"
    old = gate.get("champion")
    if old is None:
        return None  # the first model: nothing to beat
    if "rmse" not in old:  # compared by cross-validation
        if new["cv_rmse"] is None or old["cv_rmse"] is None:
            return "no cross-validated RMSE to compare with the champion's"
        if new["cv_rmse"] > old["cv_rmse"] * (1 + tolerance):
            return (
                f"cross-validated RMSE {new['cv_rmse']:.2f} is worse than the champion's {old['cv_rmse']:.2f}"
            )
        return None
    if new["rmse"] > old["rmse"] * (1 + tolerance):
        return f"held-out RMSE {new['rmse']:.2f} is worse than the champion's {old['rmse']:.2f}"
    if new["cost"] > old["cost"] * (1 + tolerance):
        return f"backtest cost {new['cost']:.1f} is worse than the champion's {old['cost']:.1f}"
    return None


def _unseen_by(platform: Platform, registry: Registry, version: str, machines: list[str]) -> list[str]:
    """Which of ``machines`` the champion never saw fail: no failure of theirs in the events it
    trained with (its lineage), or held out of its own training."""
    tags: dict[str, str] = next((v["tags"] for v in registry.versions() if v["version"] == version), {})
    events_version = tags.get("pitstop.events_version")
    if events_version is None:
        return []  # unknown lineage: assume it saw everything
    events = platform.lake.read("events", version=int(events_version))
    seen = set(events.filter(pl.col("kind") == "failure")["machine_id"].to_list())
    held = set(json.loads(tags.get("pitstop.held_out", "[]")))
    return [m for m in machines if m not in seen or m in held]


def _shadow(
    platform: Platform,
    challenger: ModelBundle,
    champion: ModelBundle,
    readings: int,
    timeout_s: float,
    trained_on: pl.DataFrame,
    members: list[str] | None = None,
) -> dict[str, Any]:
    """Wait for ``readings`` new readings in the lake (past what training read), then score them
    with both models from the offline features of their machines' history."""
    lake = platform.lake
    seen = trained_on["bus_position"].drop_nulls()
    start = int(seen.max()) if seen.len() else 0  # type: ignore[arg-type]
    deadline = time.monotonic() + timeout_s
    while True:
        new = lake.read(
            "telemetry",
            columns=["machine_id", "seq", "bus_position"],
            after_position=start,
            machine_ids=members,
        )
        new = new.filter(pl.col("bus_position") > start)
        if new.height >= readings:
            break
        if time.monotonic() >= deadline:
            return {"problem": f"only {new.height} of {readings} readings arrived within {timeout_s:g} s"}
        time.sleep(min(1.0, max(0.05, timeout_s / 100)))
    machines = new["machine_id"].unique().to_list()
    inputs = sorted({*challenger.spec.inputs, *champion.spec.inputs})
    history = lake.read("telemetry", columns=["machine_id", "ts", "seq", *inputs], machine_ids=machines)
    events = lake.read("events", machine_ids=machines)
    built: dict[str, pl.DataFrame] = {}  # the new readings' features, once per feature spec

    def predict(bundle: ModelBundle) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        spec = bundle.spec
        if spec.hash not in built:
            features = build_features(history, spec, events)
            built[spec.hash] = features.join(new.select("machine_id", "seq"), on=["machine_id", "seq"])
        return bundle.predict(built[spec.hash].select(spec.names).to_numpy())

    rul, lower, upper = predict(challenger)
    invalid = int(invalid_outputs(rul, lower, upper).sum())
    champion_rul = predict(champion)[0]
    rows = built[challenger.spec.hash]
    out: dict[str, Any] = {
        "readings": rows.height,
        "invalid": invalid,
        "mean_abs_difference": float(np.mean(np.abs(rul - champion_rul))) if len(rul) else 0.0,
    }
    if invalid > platform.settings.guard_invalid_share * max(1, rows.height):
        out["problem"] = f"{invalid} invalid outputs in {rows.height} shadow readings"
    return out


def _reject(
    platform: Platform,
    registry: Registry,
    reason: str,
    trigger: str,
    version: str | None = None,
    gate: dict[str, Any] | None = None,
    shadow: dict[str, Any] | None = None,
    machine_type: str | None = None,
) -> RetrainResult:
    from pitstop.serving.deploy import CANDIDATE_TAG, REJECTED

    log.warning("retrain rejected: %s", reason)
    platform.db.audit(
        ACTOR,
        "retrain_rejected",
        trigger=trigger,
        machine_type=machine_type,
        version=version,
        reason=reason,
        gate=gate,
    )
    if version is not None:
        registry.set_version_tag(version, CANDIDATE_TAG, REJECTED)
        if registry.alias_version("challenger") == version:
            registry.delete_alias("challenger")
    return RetrainResult("rejected", reason, version, gate or {}, shadow or {})


class Retrainer:
    """Runs ``retrain`` on a background thread, one at a time, when a trigger fires: a drift
    alert (``retrain_on_drift``), the schedule (``retrain_every_s``), or a person."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.last: RetrainResult | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def trigger(self, trigger: str, machine_type: str | None = None) -> bool:
        """Start a retrain of one machine type's model (None: every type's, one after the other)
        unless one is running; returns whether it started."""
        with self._lock:
            if self.running:
                return False
            self._thread = threading.Thread(
                target=self._run, args=(trigger, machine_type), name="pitstop-retrain", daemon=True
            )
            self._thread.start()
            return True

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, trigger: str, machine_type: str | None) -> None:
        for name in [machine_type] if machine_type else list(self.platform.fleet.machine_types):
            try:
                self.last = retrain(self.platform, trigger=trigger, machine_type=name)
            except Exception as exc:
                log.exception("retrain of %s failed", name)
                self.platform.db.audit(
                    ACTOR, "retrain_failed", trigger=trigger, machine_type=name, error=str(exc)
                )
