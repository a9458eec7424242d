"""The lake versions registered models were trained on: lake upkeep must keep them readable."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from pitstop.errors import ModelError
from pitstop.registry.mlflow_registry import Registry

# the lineage tag naming each lake table's version (written by training on every model version)
LINEAGE_TAGS = {"telemetry": "pitstop.lake_version", "events": "pitstop.events_version"}


def lake_pins(registries: Iterable[Registry]) -> dict[str, set[int]]:
    """Every lake table version that a registered model version's lineage names, per table.

    Raises ``ModelError`` when a registry cannot be read or a lineage tag is not a version: an
    unknown pin must stop deletion, so this never answers "none" for "could not ask".
    """
    pins: dict[str, set[int]] = {table: set() for table in LINEAGE_TAGS}
    for registry in registries:
        for mv in _all_versions(registry):
            tags = mv.tags or {}
            for table, tag in LINEAGE_TAGS.items():
                if tag not in tags:
                    continue
                try:
                    pins[table].add(int(tags[tag]))
                except ValueError:
                    raise ModelError(
                        f"{registry.model_name} version {mv.version} has {tag}={tags[tag]!r}, not a "
                        "lake version: fix or delete the tag before lake upkeep may delete anything"
                    ) from None
    return pins


def _all_versions(registry: Registry) -> list[Any]:
    """Every version of the registry's model, page by page (not ``Registry.versions()``: that
    answers [] when the store is unreachable)."""
    found: list[Any] = []
    token = None
    try:
        while True:
            page = registry.client.search_model_versions(f"name='{registry.model_name}'", page_token=token)
            found.extend(page)
            token = page.token
            if not token:
                return found
    except Exception as exc:  # the boundary: any failure means the pins are unknown
        raise ModelError(
            f"cannot list the versions of {registry.model_name} at {registry.tracking_uri}: {exc}"
        ) from exc


def pins_of(registries: Iterable[Registry]) -> Callable[[], dict[str, set[int]]]:
    """A ``pins`` callable for ``LakeUpkeep``, reading the registries on every call."""
    chosen = list(registries)
    return lambda: lake_pins(chosen)
