"""Promote and roll back: move the ``champion`` alias, keeping the one before it.

A move is two alias writes and an audit row. It is journalled first, as a tag on the registered
model (``pitstop.move``: from, to, an id), and the tag is removed last; a move a crash left half
done is completed by the next promote or rollback (``recover``), audited once (the audit row
carries the move's id).

``promote`` verifies the new version's artifacts before it moves anything, so a tampered version is
refused and the serving model stays. A version the retrain loop registered carries its state as a
candidate (``pitstop.candidate``: gated, shadowing, passed, rejected) from the moment it exists;
promote refuses one that has not passed unless forced, and a forced promotion is audited as such.

Running processors poll the registry every ``serving_poll_s`` on a thread of their own
(``Scorer.poll``) and switch between two micro-batches (``Scorer.adopt``): each reading is scored
once, by the model serving when its batch is processed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from pitstop.errors import ConflictError, ModelError
from pitstop.registry import Registry

Audit = Callable[..., None]  # (actor, action, **detail)

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous-champion"
MOVE_TAG = "pitstop.move"
CANDIDATE_TAG = "pitstop.candidate"
GATED, SHADOWING, PASSED, REJECTED = "gated", "shadowing", "passed", "rejected"


def recover(registry: Registry, audit: Audit, audited: Callable[[str], bool] | None = None) -> bool:
    """Complete a move a crash left half done (its journal tag is still there). ``audited(move_id)``
    says whether the move's audit row was written already. Returns whether there was one."""
    pending = registry.model_tag(MOVE_TAG)
    if pending is None:
        return False
    move = json.loads(pending)
    _apply(registry, audit, move, audited)
    return True


def _apply(
    registry: Registry, audit: Audit, move: dict[str, Any], audited: Callable[[str], bool] | None = None
) -> None:
    """The move's writes, in an order any prefix of which ``recover`` completes."""
    registry.set_model_tag(MOVE_TAG, json.dumps(move))
    if move["from"] is not None:
        registry.set_alias(PREVIOUS, move["from"])
    registry.set_alias(CHAMPION, move["to"])
    if audited is None or not audited(move["id"]):
        audit(
            move["actor"],
            move["action"],
            model=registry.model_name,
            from_version=move["from"],
            to_version=move["to"],
            move=move["id"],
            **({"forced": True, "candidate": move.get("candidate")} if move.get("forced") else {}),
        )
    registry.delete_model_tag(MOVE_TAG)


def _move(action: str, current: str | None, target: str, actor: str, **extra: Any) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex, "action": action, "from": current, "to": target, "actor": actor, **extra}


def promote(
    registry: Registry,
    audit: Audit,
    version: str | None = None,
    actor: str = "cli",
    audited: Callable[[str], bool] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Point ``champion`` at ``version`` (default: the ``challenger``), after verifying it. A
    retrain candidate that has not passed its gate and shadow is refused unless ``force``."""
    recover(registry, audit, audited)
    current = registry.alias_version(CHAMPION)
    target = version or registry.alias_version(CHALLENGER)
    if target is None:
        raise ModelError(
            "nothing to promote: no 'challenger' alias (train with --alias challenger) and no --version",
            code="no_challenger",
        )
    if target == current:
        raise ModelError(f"version {target} is already the champion", code="already_champion")
    state = registry.version_tag(target, CANDIDATE_TAG)
    unpassed = state is not None and state != PASSED
    if unpassed and not force:
        raise ConflictError(
            f"version {target} is a retrain candidate that has not passed (state: {state}); "
            "wait for its shadow, or promote it with --force (audited)",
            code="candidate_not_passed",
        )
    registry.load_version(target)  # refuses a missing or altered artifact before anything moves
    extra = {"forced": True, "candidate": state} if unpassed else {}
    _apply(registry, audit, _move("model_promoted", current, target, actor, **extra))
    return {"champion": target, "previous": current}


def rollback(
    registry: Registry, audit: Audit, actor: str = "cli", audited: Callable[[str], bool] | None = None
) -> dict[str, Any]:
    """Point ``champion`` back at the version it had before the last promotion."""
    recover(registry, audit, audited)
    current = registry.alias_version(CHAMPION)
    previous = registry.alias_version(PREVIOUS)
    if previous is None or previous == current:
        raise ModelError("nothing to roll back to: no earlier champion is recorded", code="no_previous")
    registry.load_version(previous)
    _apply(registry, audit, _move("model_rolled_back", current, previous, actor))
    return {"champion": previous, "previous": current}
