"""One machine type's deployment: its champion, its challenger and how they share the machines.

- Modes (``deployment`` setting): ``champion`` only; ``shadow`` (the challenger scored beside,
  logged, never acted on); ``canary`` and ``ab`` (a stable hash of the machine id sends
  ``challenger_percent`` of the machines to the challenger).
- Following the aliases: ``poll`` asks the registry (slow, on a background thread), ``follow``
  applies what it found between two batches, so each reading is scored once, by one model.
- The guard: an arm whose outputs are invalid (not finite, negative, outside their own interval)
  beyond ``guard_invalid_share`` of a batch, or that fails, is withdrawn and the batch scored again;
  a challenger is dropped until its alias moves, a champion is rolled back to the previous one.

Everything is audited as the ``processor`` or the ``guard``. The processor keeps one per machine
type; the API server without a processor follows the champions with ``follow_in_background``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from pitstop.errors import ModelError
from pitstop.registry import LoadedModel, Registry
from pitstop.serving.scorer import Score, Scorer, bucket, invalid_outputs

log = logging.getLogger(__name__)

Audit = Callable[..., None]  # (actor, action, **detail)


@dataclass(frozen=True)
class DeploymentOptions:
    mode: str = "champion"  # champion | shadow | canary | ab
    challenger_percent: int = 10
    guard_invalid_share: float = 0.0

    @classmethod
    def from_settings(cls, settings: Any) -> DeploymentOptions:
        return cls(settings.deployment, settings.challenger_percent, settings.guard_invalid_share)


class Deployment:
    """The models serving one machine type."""

    def __init__(
        self,
        machine_type: str,
        registry: Registry,
        options: DeploymentOptions,
        audit: Audit,
        cache_dir: Path | None = None,
        on_model: Callable[[str, str | None, str | None], None] | None = None,
    ) -> None:
        self.machine_type = machine_type
        self.registry = registry
        self.options = options
        self.audit = audit
        self.champion = Scorer(registry, cache_dir=cache_dir)
        self.challenger = Scorer(registry, alias="challenger") if options.mode != "champion" else None
        self.problems: dict[str, str | None] = {}
        self._on_model = on_model  # (alias, old version, new version): metrics

    # -- loading and following -----------------------------------------------------------------
    def load(self) -> LoadedModel | None:
        """Load the champion (and the challenger, if the mode uses one). A type without a
        champion yet waits (None): ``poll``/``follow`` pick it up when one is registered."""
        try:
            model = self.champion.reload()
        except ModelError as exc:
            if self.problems.get("champion") != exc.message:
                log.warning("%s: not scoring yet: %s", self.machine_type, exc.message)
            self.problems["champion"] = exc.message
            return None
        self.problems["champion"] = None
        self._announce("champion", None, model.version)
        self._load_challenger()
        return model

    @property
    def ready(self) -> bool:
        return self.champion.loaded

    @property
    def spec_hash(self) -> str | None:
        return self.champion.model.bundle.spec.hash if self.champion.loaded else None

    def poll(self) -> None:
        """The registry side (slow; a background thread's): where do the aliases point now."""
        self.champion.poll()
        if self.challenger is not None:
            self.challenger.poll()

    def follow(self) -> bool:
        """Between batches: serve what ``poll`` found. Returns whether the champion's feature spec
        changed (the online state must then be rebuilt for it)."""
        before_spec = self.spec_hash
        champion = self.champion
        if champion.has_pending:
            before = champion.model.version if champion.loaded else None
            self._report(champion, before, champion.adopt())
            if before is None and champion.loaded:
                self._load_challenger()
        challenger = self.challenger
        if challenger is not None and challenger.has_pending:
            previous = challenger.model.version if challenger.loaded else None
            self._report(challenger, previous, challenger.adopt())
            self.check_challenger_spec()
        return self.spec_hash != before_spec

    def _load_challenger(self) -> None:
        challenger = self.challenger
        if challenger is None:
            return
        try:
            model = challenger.reload()
        except ModelError as exc:
            if self.problems.get("challenger") != exc.message:
                log.warning(
                    "%s: %s deployment without a challenger: %s",
                    self.machine_type,
                    self.options.mode,
                    exc.message,
                )
            self.problems["challenger"] = exc.message
            return
        self._announce("challenger", None, model.version)
        self.check_challenger_spec()

    def check_challenger_spec(self) -> None:
        """A challenger whose feature spec differs from the champion's (every training fits its own
        fill values and regimes) is scored from features of its own spec, which the processor
        keeps beside the champion's; recorded once so the difference is visible."""
        challenger = self.challenger
        if challenger is None or not challenger.loaded or not self.champion.loaded:
            return
        theirs, ours = challenger.model.bundle.spec.hash, self.champion.model.bundle.spec.hash
        if theirs != ours:
            log.info(
                "%s challenger version %s has feature spec %s (champion: %s): scored from its own features",
                self.machine_type,
                challenger.model.version,
                theirs,
                ours,
            )

    def _report(self, scorer: Scorer, before: str | None, problem: str | None) -> None:
        after = scorer.model.version if scorer.loaded else None
        if problem and problem != self.problems.get(scorer.alias):
            log.warning("%s %s unchanged (%s): %s", self.machine_type, scorer.alias, before, problem)
            self.audit(
                "processor",
                "model_refused",
                alias=scorer.alias,
                machine_type=self.machine_type,
                serving=before,
                reason=problem,
            )
        self.problems[scorer.alias] = problem
        if after != before and after is not None:
            log.info(
                "%s %s now %s version %s (was %s)",
                self.machine_type,
                scorer.alias,
                scorer.model.name,
                after,
                before,
            )
            self._announce(scorer.alias, before, after)
            self.audit(
                "processor",
                "model_switched",
                alias=scorer.alias,
                machine_type=self.machine_type,
                from_version=before,
                to_version=after,
            )

    def _announce(self, alias: str, before: str | None, after: str | None) -> None:
        if self._on_model is not None:
            self._on_model(alias, before, after)

    # -- scoring -------------------------------------------------------------------------------
    def score(
        self, ids: list[str], features: np.ndarray, challenger_features: np.ndarray | None = None
    ) -> tuple[dict[str, Score], dict[str, Score]]:
        """Scores acted on (machine state, work orders) and shadow scores (logged only), guarded.
        ``challenger_features``: the challenger's own, when its feature spec differs."""
        for _ in range(3):
            try:
                acting, shadow = self._route(ids, features, challenger_features)
            except Exception as exc:  # a failing challenger is withdrawn; a failing champion raises
                if not self.withdraw_challenger(f"scoring failed: {exc}"):
                    raise
                continue
            bad = invalid_arms([*acting.values(), *shadow.values()], self.options.guard_invalid_share)
            if not bad:
                return acting, shadow
            reason = f"invalid outputs from arm(s) {', '.join(sorted(bad))}"
            if bad & {"champion", "a"}:
                self.roll_back(reason)
            else:
                self.withdraw_challenger(reason)
        raise ModelError("no serving model gives valid outputs", code="serving_invalid")

    def _route(
        self, ids: list[str], features: np.ndarray, challenger_features: np.ndarray | None
    ) -> tuple[dict[str, Score], dict[str, Score]]:
        mode = self.options.mode
        champion, challenger = self.champion, self.challenger
        if mode == "champion" or challenger is None or not challenger.loaded:
            return dict(zip(ids, champion.score_matrix(features), strict=True)), {}
        theirs = features if challenger_features is None else challenger_features
        if (
            challenger.model.bundle.spec.hash != champion.model.bundle.spec.hash
            and challenger_features is None
        ):
            return dict(zip(ids, champion.score_matrix(features), strict=True)), {}  # no features for it
        if mode == "shadow":
            acting = dict(zip(ids, champion.score_matrix(features), strict=True))
            return acting, dict(zip(ids, challenger.score_matrix(theirs, arm="shadow"), strict=True))
        share = self.options.challenger_percent
        to_challenger = np.array([bucket(m) < share for m in ids], dtype=bool)
        arms = ("canary", "champion") if mode == "canary" else ("b", "a")
        acting = {}
        for scorer, matrix, rows, arm in (
            (challenger, theirs, to_challenger, arms[0]),
            (champion, features, ~to_challenger, arms[1]),
        ):
            if rows.any():
                chosen = [m for m, r in zip(ids, rows, strict=True) if r]
                acting.update(zip(chosen, scorer.score_matrix(matrix[rows], arm=arm), strict=True))
        return acting, {}

    def withdraw_challenger(self, reason: str, actor: str = "guard") -> bool:
        """Stop serving the challenger until its alias moves (the guard's call, or the canary's)."""
        challenger = self.challenger
        if challenger is None or not challenger.loaded:
            return False
        version = challenger.withdraw()
        self.problems["challenger"] = reason
        log.error("%s challenger version %s withdrawn: %s", self.machine_type, version, reason)
        self.audit(
            actor, "challenger_withdrawn", machine_type=self.machine_type, version=version, reason=reason
        )
        return True

    def set_share(self, percent: int) -> None:
        """The challenger's share of machines under canary or A/B, from the next batch (a
        progressive canary's step; call it between batches)."""
        self.options = replace(self.options, challenger_percent=max(0, min(100, int(percent))))

    def roll_back(self, reason: str) -> None:
        from pitstop.serving.deploy import rollback

        bad = self.champion.model.version
        log.error("%s champion version %s rolled back: %s", self.machine_type, bad, reason)
        rollback(self.registry, self.audit, actor="guard")  # raises when there is nothing to roll back to
        self.champion.reload()
        self.audit(
            "guard",
            "champion_rolled_back",
            machine_type=self.machine_type,
            from_version=bad,
            to_version=self.champion.model.version,
            reason=reason,
        )

    def scorer_of(self, version: str) -> Scorer:
        """The scorer serving ``version`` (the challenger's, when it is that one)."""
        challenger = self.challenger
        if challenger is not None and challenger.loaded and challenger.model.version == version:
            return challenger
        return self.champion


def invalid_arms(scores: list[Score], allowed_share: float) -> set[str]:
    """Arms with more than ``allowed_share`` of invalid scores (``invalid_outputs``)."""
    if not scores:
        return set()
    arms = np.array([sc.arm for sc in scores])
    bad = invalid_outputs(*np.array([(sc.rul, sc.lower, sc.upper) for sc in scores]).T)
    return {str(arm) for arm in np.unique(arms) if bad[arms == arm].mean() > allowed_share}


def follow_in_background(deployments: list[Deployment], interval: float) -> threading.Event:
    """In a server without a processor: follow every type's champion alias from a background
    thread (registry calls can be slow; requests never wait on them). Set the event to stop."""
    stop = threading.Event()
    said: dict[str, str | None] = {}  # the problem last logged per type: a lasting one is said once

    def run() -> None:
        while not stop.wait(max(0.1, interval)):
            for deployment in deployments:
                scorer = deployment.champion
                before = scorer.model.version if scorer.loaded else None
                problem = scorer.refresh()
                if problem != said.get(deployment.machine_type):
                    if problem:
                        log.warning("%s serving model unchanged: %s", deployment.machine_type, problem)
                    else:
                        log.info("%s: the serving model's problem has cleared", deployment.machine_type)
                    said[deployment.machine_type] = problem
                if not problem and scorer.loaded and scorer.model.version != before:
                    log.info(
                        "%s now serving version %s (was %s)",
                        deployment.machine_type,
                        scorer.model.version,
                        before,
                    )

    threading.Thread(target=run, name="pitstop-follow-alias", daemon=True).start()
    return stop
