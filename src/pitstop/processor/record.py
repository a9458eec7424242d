"""A micro-batch's results into the ops DB: machine state, predictions and work orders, in one
transaction."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import numpy as np
import polars as pl
from sqlalchemy import select

from pitstop.errors import LeaseLostError
from pitstop.maintenance import ComponentMap, Explanation, Notifier, Reading, RiskPolicy, open_work_orders
from pitstop.serving import Score
from pitstop.serving.deployment import Deployment
from pitstop.store import Database, MachineState, Prediction, ProcessorPosition, utcnow

log = logging.getLogger(__name__)


def recorded_position(db: Database, consumer: str) -> int:
    """The last bus position whose results ``consumer`` recorded in the ops DB (0: none)."""
    with db.session() as s:
        found = s.get(ProcessorPosition, consumer)
        return found.position if found is not None else 0


def reset_recorded_position(db: Database, consumer: str, position: int) -> None:
    """Set where ``consumer``'s results end (a bus replaced: its positions start again)."""
    with db.session() as s:
        s.merge(ProcessorPosition(consumer=consumer, position=position))


class Recorder:
    def __init__(
        self,
        db: Database,
        policy_for: Callable[[str], RiskPolicy],
        components: ComponentMap,
        notifier: Notifier | None,
    ) -> None:
        self.db = db
        self.policy_for = policy_for
        self.components = components
        self.notifier = notifier

    def record(
        self,
        last: pl.DataFrame,
        scores: dict[str, Score],
        counts: dict[str, int],
        types: dict[str, str],
        shadow: dict[str, Score],
        features: dict[str, np.ndarray],
        deployment_of: Callable[[str], Deployment],
        consumer: str,
        position: int,
    ) -> int:
        """Machine state, predictions and work orders in one transaction, one flush, with the bus
        ``position`` they come from: a crash before the bus commit replays the batch, and the
        processor then skips what this transaction recorded. Shadow scores are logged as
        predictions only. Returns the work orders opened."""
        now = utcnow()
        predictions = []
        with self.db.session() as s:
            # the ops DB's own fence: the position only moves forward, so a processor that lost
            # its partition (and did not know yet) cannot record a batch the new owner recorded
            current = s.get(ProcessorPosition, consumer, with_for_update=True)
            if current is not None and current.position >= position:
                raise LeaseLostError(
                    f"{consumer}: the ops DB already holds results up to bus position {current.position}, "
                    f"past this batch's {position}: another processor owns this partition now"
                )
            if current is None:
                s.add(ProcessorPosition(consumer=consumer, position=position))
            else:
                current.position = position
            ids = last["machine_id"].to_list()
            states = {
                st.machine_id: st
                for st in s.scalars(  # locked: a work order's move may change a row's policy at once
                    select(MachineState).where(MachineState.machine_id.in_(ids)).with_for_update()
                )
            }
            for machine_id, seq, ts in last.iter_rows():
                state = states.get(machine_id)
                if state is None:
                    state = states[machine_id] = MachineState(machine_id=machine_id, readings=0)
                    s.add(state)
                state.last_ts = ts
                state.last_seq = seq
                state.readings = (state.readings or 0) + counts.get(machine_id, 0)
                if machine_id in shadow:
                    predictions.append(_prediction(machine_id, ts, seq, shadow[machine_id], now))
                score = scores.get(machine_id)
                if score is None:
                    continue
                state.predicted_rul = score.rul
                state.rul_lower = score.lower
                state.rul_upper = score.upper
                state.model_version = score.model_version
                state.scored_at = now
                predictions.append(_prediction(machine_id, ts, seq, score, now))
            s.add_all(predictions)
            readings = {m: Reading(int(seq), ts) for m, seq, ts in last.iter_rows()}

            def explain(
                machine_id: str, machine_type: str, score: Score, priority: str
            ) -> Explanation | None:
                return self._explain(machine_id, machine_type, score, priority, features, deployment_of)

            opened = open_work_orders(
                s,
                self.policy_for,
                scores,
                readings,
                states,
                {m: types.get(m, "") for m in sorted(scores)},
                explain,
                self.notifier,
            )
        return len(opened)

    def _explain(
        self,
        machine_id: str,
        machine_type: str,
        score: Score,
        priority: str,
        features: dict[str, np.ndarray],
        deployment_of: Callable[[str], Deployment],
    ) -> Explanation | None:
        """Why the model that gave ``score`` predicts what it does for the machine (only asked when
        a work order opens): the sensors that pushed the RUL down, the suspected component."""
        row = features.get(machine_id)
        if row is None:
            return None
        try:
            scorer = deployment_of(machine_type).scorer_of(score.model_version)
            return self.components.explain(scorer.model.bundle, row, machine_type, priority)
        except Exception:  # an explanation is a courtesy: the work order opens without one
            log.exception("could not explain the prediction for %s", machine_id)
            return None


def _prediction(machine_id: str, ts: datetime, seq: int, score: Score, now: datetime) -> Prediction:
    return Prediction(
        machine_id=machine_id,
        ts=ts,
        seq=seq,
        rul=score.rul,
        rul_lower=score.lower,
        rul_upper=score.upper,
        model_name=score.model_name,
        model_version=score.model_version,
        arm=score.arm,
        created_at=now,
        from_cache=score.from_cache,
    )
