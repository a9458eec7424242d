"""Where the agent's readings come from: ``open_source(spec, machine_id)``.

- ``tail:PATH`` (or a bare path): a CSV or NDJSON file being appended to (``tail:csv:PATH`` to say which)
- ``stdin`` (NDJSON) or ``stdin:csv``
- ``mqtt://host:port/topic``: a local broker, QoS 1
- ``sim:harvester?seed=0&rate=10``: the harvester simulator
- ``plugin:NAME?key=value``: a source from the ``pitstop.agent_sources`` entry-point group, or
  ``plugin:module:Class?key=value`` by import path (README "Edge agent")
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import parse_qsl

from pitstop.agent.sources.base import Chunk, Source, SourceError, SourceReading

ENTRY_POINTS = "pitstop.agent_sources"

__all__ = ["ENTRY_POINTS", "Chunk", "Source", "SourceError", "SourceReading", "open_source"]


def open_source(spec: str, machine_id: str) -> Source:
    """The source a ``--source`` string names (not opened yet)."""
    spec = spec.strip()
    if not spec:
        raise SourceError("no source: pass --source (e.g. tail:/var/log/harvester.csv, stdin, sim:harvester)")
    kind, _, rest = spec.partition(":")
    if kind in ("mqtt", "mqtts"):
        from pitstop.agent.sources.mqtt import MqttSource

        return MqttSource(spec, client_id=f"pitstop-agent-{machine_id}")
    if kind == "stdin":
        from pitstop.agent.sources.stdin import StdinSource

        if rest not in ("", "csv", "ndjson"):
            raise SourceError(f"stdin format {rest!r}: use stdin (NDJSON) or stdin:csv")
        return StdinSource(rest or "ndjson")
    if kind == "sim":
        from pitstop.agent.sources.sim import SimSource

        name, options = _options(rest)
        return _build(SimSource, {"kind": name or "harvester", **options}, spec, machine_id)
    if kind == "plugin":
        name, options = _options(rest)
        return _build(_plugin(name), options, spec, machine_id)
    from pitstop.agent.sources.tail import TailSource

    if kind == "tail":
        fmt, _, path = rest.partition(":")
        if fmt in ("csv", "ndjson") and path:
            return TailSource(path, fmt)
        return TailSource(rest)
    if len(kind) > 1 and rest:  # some other scheme (a bare path has no colon; C:\\ is a drive)
        raise SourceError(
            f"unknown source {spec!r}: use tail:PATH, stdin, mqtt://…, sim:harvester or plugin:NAME"
        )
    return TailSource(spec)  # a bare path


def _options(text: str) -> tuple[str, dict[str, Any]]:
    name, _, query = text.partition("?")
    options: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        options[key] = _number(value)
    return name, options


def _number(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            continue
    return value


def _plugin(name: str) -> Any:
    if not name:
        raise SourceError("plugin source needs a name: plugin:NAME or plugin:module:Class")
    if ":" in name:
        module, _, attr = name.rpartition(":")
        try:
            return getattr(import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise SourceError(f"plugin source {name!r} cannot be imported: {exc}") from exc
    found = [ep for ep in entry_points(group=ENTRY_POINTS) if ep.name == name]
    if not found:
        known = sorted(ep.name for ep in entry_points(group=ENTRY_POINTS))
        raise SourceError(
            f"no source plugin {name!r} is installed (entry points in {ENTRY_POINTS}: {known or 'none'})"
        )
    return found[0].load()


def _build(cls: Any, options: dict[str, Any], spec: str, machine_id: str) -> Source:
    try:
        source = cls(machine_id=machine_id, **options)
    except TypeError as exc:
        raise SourceError(f"source {spec!r}: {exc}") from exc
    missing = [m for m in ("open", "read", "ack", "close") if not callable(getattr(source, m, None))]
    if missing:
        raise SourceError(
            f"source {spec!r} lacks {', '.join(missing)} (see pitstop.agent.sources.base.Source)"
        )
    return source
