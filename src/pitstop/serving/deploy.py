"""Promote and roll back: move the ``champion`` alias, keeping the one before it.

``promote`` verifies the new version's artifacts before it moves anything, so a tampered version is
refused and the serving model stays. Running processors poll the registry every
``serving_poll_s`` on a thread of their own (``Scorer.poll``) and switch between two micro-batches
(``Scorer.adopt``): each reading is scored once, by the model serving when its batch is processed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pitstop.errors import ModelError
from pitstop.registry import Registry

Audit = Callable[..., None]  # (actor, action, **detail)

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous-champion"


def promote(
    registry: Registry, audit: Audit, version: str | None = None, actor: str = "cli"
) -> dict[str, Any]:
    """Point ``champion`` at ``version`` (default: the ``challenger``), after verifying it."""
    current = registry.alias_version(CHAMPION)
    target = version or registry.alias_version(CHALLENGER)
    if target is None:
        raise ModelError(
            "nothing to promote: no 'challenger' alias (train with --alias challenger) and no --version",
            code="no_challenger",
        )
    if target == current:
        raise ModelError(f"version {target} is already the champion", code="already_champion")
    registry.load_version(target)  # refuses a missing or altered artifact before anything moves
    if current is not None:
        registry.set_alias(PREVIOUS, current)
    registry.set_alias(CHAMPION, target)
    audit(actor, "model_promoted", model=registry.model_name, from_version=current, to_version=target)
    return {"champion": target, "previous": current}


def rollback(registry: Registry, audit: Audit, actor: str = "cli") -> dict[str, Any]:
    """Point ``champion`` back at the version it had before the last promotion."""
    current = registry.alias_version(CHAMPION)
    previous = registry.alias_version(PREVIOUS)
    if previous is None or previous == current:
        raise ModelError("nothing to roll back to: no earlier champion is recorded", code="no_previous")
    registry.load_version(previous)
    registry.set_alias(CHAMPION, previous)
    if current is not None:
        registry.set_alias(PREVIOUS, current)
    audit(actor, "model_rolled_back", model=registry.model_name, from_version=current, to_version=previous)
    return {"champion": previous, "previous": current}
