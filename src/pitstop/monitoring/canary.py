"""The progressive canary: a challenger's share of machines grows step by step (``canary_schedule``,
e.g. 5 → 25 → 50 → 100) while the numbers say it is not worse, and it is withdrawn on its own
when they say it is.

Between two micro-batches the processor calls ``sync`` (the challenger serving now gets the share
of its step) and ``check`` (at most every ``canary_check_s``). The evidence is the failures scored
during the current step (``arms.failure_evidence``): each failure is one unit for the arm whose
predictions preceded it. Only the current step counts: the share is constant within it, so both
arms sample the same period, while pooling steps would weigh early and late periods differently
per arm (a harder stretch of weeks would then look like a worse model).

A step is decided once, when its evidence is in: after ``canary_step_min_s`` at the step and at
least ``canary_step_failures`` failures scored on the challenger's arm during it. Looking at the
p-value at every check instead would roll back a challenger as good as the champion far more
often than alpha says; so each step's test runs at ``deployments_alpha`` divided by the number of
deciding steps (Bonferroni), which bounds the chance of ever rolling back such a challenger by
``deployments_alpha``.

- **Worse** (Welch's t-test on the MAE at failures, or Fisher's exact test on the failures caught
  in time): the challenger is withdrawn (share 0; not served again until its alias moves, as the
  guard does), audited ``canary_rolled_back``.
- **Advance**: no test says worse: the next step, audited ``canary_advanced``. Passing the step
  before 100 completes the canary: the challenger is promoted through ``serving.deploy.promote``
  (journalled and audited like a manual promotion), served to every machine until the processor
  follows the champion alias, audited ``canary_completed``.

Every step's audit row carries the numbers that decided it. The audit rows are also the canary's
memory: after a restart the latest one for the serving challenger's version gives the step and
when it began (a version rolled back stays withdrawn; a version seen for the first time starts at
the first step, audited ``canary_started``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pitstop.config import canary_steps
from pitstop.errors import PitstopError
from pitstop.monitoring.arms import CANARY_ACTIONS, Arms, failure_evidence
from pitstop.monitoring.stats import WORSE, Comparison, compare_errors, compare_rates
from pitstop.serving.deployment import Deployment
from pitstop.store import Database, utcnow

log = logging.getLogger(__name__)
ACTOR = "canary"


@dataclass(frozen=True)
class CanaryOptions:
    steps: tuple[int, ...] = ()
    step_min_s: float = 3600.0
    step_failures: int = 3
    check_s: float = 30.0
    alpha: float = 0.05

    @classmethod
    def from_settings(cls, settings: Any) -> CanaryOptions:
        return cls(
            canary_steps(settings.canary_schedule),
            settings.canary_step_min_s,
            settings.canary_step_failures,
            settings.canary_check_s,
            settings.deployments_alpha,
        )

    @property
    def enabled(self) -> bool:
        return bool(self.steps)


@dataclass
class _State:
    version: str
    step: int | None  # index into the schedule; None: done with this version
    started: datetime  # when the canary of this version began
    step_since: datetime


class Canary:
    """One machine type's progressive canary, driven by the processor between batches."""

    def __init__(self, deployment: Deployment, db: Database, options: CanaryOptions) -> None:
        self.deployment = deployment
        self.db = db
        self.options = options
        self.state: _State | None = None
        self._checked = -float("inf")

    @property
    def machine_type(self) -> str:
        return self.deployment.machine_type

    # -- following the challenger ---------------------------------------------------------------
    def sync(self) -> None:
        """Give the challenger serving now the share of its step (resumed from the audit log)."""
        challenger = self.deployment.challenger
        version = challenger.model.version if challenger is not None and challenger.loaded else None
        if version is None:
            self.state = None
            return
        if self.state is not None and self.state.version == version:
            return
        last = self._latest(version)
        now = utcnow()
        if last is None:
            self.state = _State(version, 0, now, now)
            self.deployment.set_share(self.options.steps[0])
            self._audit("canary_started", to_percent=self.options.steps[0])
            return
        started = _when(last.get("canary_since")) or now
        if last["action"] == "canary_rolled_back":
            self.state = _State(version, None, started, now)
            self.deployment.set_share(0)
            if challenger is not None:
                challenger.withdraw()  # already decided (and audited) before a restart
            log.warning(
                "%s challenger version %s stays withdrawn (canary rolled back)", self.machine_type, version
            )
            return
        if last["action"] == "canary_completed":
            self.state = _State(version, None, started, now)
            self.deployment.set_share(100)
            return
        percent = int(last.get("to_percent", self.options.steps[0]))
        step = self.options.steps.index(percent) if percent in self.options.steps else 0
        self.state = _State(version, step, started, _when(last.get("ts")) or now)
        self.deployment.set_share(self.options.steps[step])
        log.info(
            "%s canary of version %s resumed at %d%%", self.machine_type, version, self.options.steps[step]
        )

    def _latest(self, version: str) -> dict[str, Any] | None:
        latest: dict[str, Any] | None = None
        for action in CANARY_ACTIONS:
            for e in self.db.audit_entries(limit=500, action=action):
                d = e["detail"]
                if d.get("machine_type") == self.machine_type and d.get("version") == version:
                    if latest is None or e["id"] > latest["id"]:
                        latest = {**d, "action": action, "id": e["id"], "ts": e["ts"]}
                    break
        return latest

    # -- weighing the evidence ------------------------------------------------------------------
    def check(self, force: bool = False) -> str | None:
        """Weigh the evidence (at most every ``check_s``): returns the action taken, if any."""
        state = self.state
        if state is None or state.step is None:
            return None
        now = time.monotonic()
        if not force and now - self._checked < self.options.check_s:
            return None
        self._checked = now
        d = self.deployment
        if not d.champion.loaded:
            return None
        arms = Arms(
            self.machine_type,
            d.registry.model_name,
            d.options.mode,
            d.options.challenger_percent,
            d.champion.model.version,
            state.version,
        )
        evidence = failure_evidence(self.db, arms, since=state.step_since)
        this_step = len(evidence.mae("challenger"))
        waited = (utcnow() - state.step_since).total_seconds()
        if this_step < self.options.step_failures or waited < self.options.step_min_s:
            return None  # the step's evidence is not in yet: no look at the numbers before it is
        # one test per step, alpha split over the steps that decide (Bonferroni): a challenger as
        # good as the champion is rolled back somewhere on the schedule with probability <= alpha
        alpha = self.options.alpha / (len(self.options.steps) - 1)
        errors = compare_errors("mae_at_failure", evidence.mae("champion"), evidence.mae("challenger"), alpha)
        caught = compare_rates(
            "caught_in_time", evidence.caught_counts("champion"), evidence.caught_counts("challenger"), alpha
        )
        numbers: dict[str, Any] = {
            "mae_at_failure": errors.to_dict(),
            "caught_in_time": caught.to_dict(),
            "alpha": round(alpha, 6),
            "step_failures": this_step,
            "step_seconds": round(waited, 1),
            "failures_mixed": evidence.mixed,
        }
        if WORSE in (errors.verdict, caught.verdict):
            return self._roll_back(state, _why(errors, caught), numbers)
        if state.step + 2 >= len(self.options.steps):  # passed the step before 100: promote
            return self._complete(state, numbers)
        return self._advance(state, numbers)

    def _advance(self, state: _State, numbers: dict[str, Any]) -> str:
        steps = self.options.steps
        before, after = steps[state.step or 0], steps[(state.step or 0) + 1]
        state.step = (state.step or 0) + 1
        state.step_since = utcnow()
        self.deployment.set_share(after)
        log.info(
            "%s canary of version %s advanced: %d%% -> %d%%", self.machine_type, state.version, before, after
        )
        self._audit("canary_advanced", from_percent=before, to_percent=after, evidence=numbers)
        return "canary_advanced"

    def _roll_back(self, state: _State, reason: str, numbers: dict[str, Any]) -> str:
        before = self.options.steps[state.step or 0]
        state.step = None
        self.deployment.set_share(0)
        self.deployment.withdraw_challenger(f"canary: {reason}", actor=ACTOR)
        log.error(
            "%s canary of version %s rolled back at %d%%: %s",
            self.machine_type,
            state.version,
            before,
            reason,
        )
        self._audit("canary_rolled_back", from_percent=before, to_percent=0, reason=reason, evidence=numbers)
        return "canary_rolled_back"

    def _complete(self, state: _State, numbers: dict[str, Any]) -> str:
        from pitstop.serving.deploy import CANDIDATE_TAG, CHALLENGER, PASSED, promote

        d = self.deployment
        before = self.options.steps[state.step or 0]
        try:
            if d.registry.version_tag(state.version, CANDIDATE_TAG) not in (None, PASSED):
                d.registry.set_version_tag(state.version, CANDIDATE_TAG, PASSED)  # the canary was its test
            promote(d.registry, d.audit, state.version, actor=ACTOR, audited=self.db.audited_move)
        except PitstopError as exc:  # the version cannot be promoted (altered, gone): not served either
            if getattr(exc, "code", None) != "already_champion":  # promoted already (by hand, or before)
                return self._roll_back(state, f"promotion failed: {exc.message}", numbers)
        try:
            if d.registry.alias_version(CHALLENGER) == state.version:
                d.registry.delete_alias(CHALLENGER)  # it is the champion now: no challenger left
        except PitstopError as exc:
            log.warning(
                "%s: the challenger alias stays on the new champion: %s", self.machine_type, exc.message
            )
        state.step = None
        d.set_share(100)  # every machine on it until the processor follows the champion alias
        log.info("%s canary of version %s completed: promoted", self.machine_type, state.version)
        self._audit("canary_completed", from_percent=before, to_percent=100, evidence=numbers)
        return "canary_completed"

    def _audit(self, action: str, **detail: Any) -> None:
        state = self.state
        assert state is not None
        d = self.deployment
        self.deployment.audit(
            ACTOR,
            action,
            machine_type=self.machine_type,
            version=state.version,
            champion=d.champion.model.version if d.champion.loaded else None,
            canary_since=state.started.isoformat(),
            **detail,
        )


def _why(errors: Comparison, caught: Comparison) -> str:
    if errors.verdict == WORSE:
        return (
            f"MAE at failures {errors.challenger} against the champion's {errors.champion} "
            f"(Welch t, p={errors.p_value}, n={errors.n[1]} vs {errors.n[0]} failures)"
        )
    return (
        f"caught in time {caught.challenger} against the champion's {caught.champion} "
        f"(Fisher exact, p={caught.p_value}, n={caught.n[1]} vs {caught.n[0]} failures)"
    )


def _when(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None
