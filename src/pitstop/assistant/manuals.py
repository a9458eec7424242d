"""Manuals on disk: which files a deployment's assistant searches, for which machine type, and
adding or removing one.

- Shipped manuals (``pitstop/knowledge/*.md``) and fleet-applied ones (``pitstop fleet apply``
  copies them to ``<data-dir>/manuals/``) belong to the machine types whose fleet entry lists
  them in ``manuals = [...]``. With a fleet, a shipped manual no type lists is left out (it is
  another fleet's); a fleet-applied one no type lists is general (searched for every type).
- Added manuals (``pitstop manuals add``) live in ``<data-dir>/manuals/<machine type>/`` and belong
  to that type; one of the same name replaces a shipped or fleet manual for that type.

Parsed PDF sections are cached beside them (``manuals/.sections/``, keyed by size and mtime) so
that an app start reads JSON, not PDFs.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Literal

from pitstop.assistant.markdown import markdown_sections
from pitstop.assistant.pdf import pdf_sections
from pitstop.assistant.section import Section
from pitstop.errors import ManualError, NotFoundError

if TYPE_CHECKING:
    from pitstop.schema import FleetSchema

log = logging.getLogger(__name__)

FORMATS = {".md": "markdown", ".markdown": "markdown", ".pdf": "pdf"}
_CACHE = ".sections"

Origin = Literal["shipped", "fleet", "added"]


@dataclass(frozen=True)
class Manual:
    """One manual the assistant searches: its file name, machine type (None: general) and origin."""

    name: str
    machine_type: str | None
    origin: Origin
    path: Path | None = None  # None: shipped inside the package

    def read_sections(self, manuals_dir: Path | None) -> list[Section]:
        if self.path is None:
            text = resources.files("pitstop.knowledge").joinpath(self.name).read_text(encoding="utf-8")
            found = markdown_sections(text, self.name)
        elif manuals_dir is not None and FORMATS.get(self.path.suffix.lower()) == "pdf":
            found = _cached(self.path, manuals_dir / _CACHE / (self.machine_type or "_general"))
        else:
            found = read_sections(self.name, self.path.read_bytes())
        return [replace(s, machine_type=self.machine_type) for s in found]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "machine_type": self.machine_type,
            "origin": self.origin,
            "format": FORMATS.get(PurePath(self.name).suffix.lower(), "markdown"),
            "path": str(self.path) if self.path is not None else None,
        }


def format_of(name: str) -> str:
    fmt = FORMATS.get(PurePath(name).suffix.lower())
    if fmt is None:
        raise ManualError(
            f"{name}: only Markdown (.md, .markdown) and PDF (.pdf) manuals can be searched; "
            "convert it to one of those",
            code="manual_unsupported_format",
        )
    return fmt


def read_sections(name: str, data: bytes) -> list[Section]:
    """A manual's sections from its bytes (its format from its name); a ``ManualError`` when it
    is not Markdown or PDF, empty, or cannot be read."""
    fmt = format_of(name)
    if not data.strip():
        raise ManualError(f"{name} is empty", code="manual_empty")
    if fmt == "pdf":
        sections = pdf_sections(data, name)
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ManualError(
                f"{name} is not UTF-8 text (byte {exc.start}); save it as UTF-8 Markdown",
                code="manual_unreadable",
            ) from exc
        sections = markdown_sections(text, name)
    if not sections:
        raise ManualError(
            f"{name} has no text to search"
            + (" (a scanned PDF without a text layer? run OCR on it first)" if fmt == "pdf" else ""),
            code="manual_empty",
        )
    return sections


def parse_manual(path: Path, max_bytes: int) -> list[Section]:
    """``read_sections`` of a file, refused first when it is bigger than ``max_bytes``."""
    format_of(path.name)
    size = path.stat().st_size
    if size > max_bytes:
        raise ManualError(
            f"{path.name} is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB cap "
            "(split it, or raise manual_max_mb)",
            code="manual_too_large",
        )
    return read_sections(path.name, path.read_bytes())


def manuals_in_use(manuals_dir: Path | None, fleet: FleetSchema | None) -> list[Manual]:
    """Every manual the assistant searches, by (machine type, file name); see the module's doc."""
    listed: dict[str, list[str | None]] = {}
    if fleet is not None:
        for type_name, mt in fleet.machine_types.items():
            for manual in mt.manuals:
                listed.setdefault(PurePath(manual).name, []).append(type_name)
    found: dict[tuple[str | None, str], Manual] = {}
    shipped = sorted(r.name for r in resources.files("pitstop.knowledge").iterdir() if r.name.endswith(".md"))
    for name in shipped:
        types: list[str | None] = listed.get(name, []) if fleet is not None else [None]
        for t in types:
            found[(t, name)] = Manual(name, t, "shipped")
    if manuals_dir is not None and manuals_dir.is_dir():
        for path in sorted(manuals_dir.iterdir()):
            if path.is_file() and path.suffix.lower() in FORMATS:
                for t in listed.get(path.name) or [None]:
                    found[(t, path.name)] = Manual(path.name, t, "fleet", path)
        for folder in sorted(manuals_dir.iterdir()):
            if not folder.is_dir() or folder.name.startswith("."):
                continue
            if fleet is not None and folder.name not in fleet.machine_types:
                continue  # a type the fleet no longer has: no machine asks about it
            for path in sorted(folder.iterdir()):
                if path.is_file() and path.suffix.lower() in FORMATS:
                    found[(folder.name, path.name)] = Manual(path.name, folder.name, "added", path)
    return list(found.values())


def add_manual(
    manuals_dir: Path, fleet: FleetSchema, file: Path, machine_type: str, max_bytes: int
) -> tuple[Manual, list[Section], bool]:
    """Check ``file`` and copy it to ``manuals/<machine_type>/``: the manual, its sections and
    whether it replaced one of the same name."""
    check_machine_type(fleet, machine_type)
    sections = parse_manual(file, max_bytes)
    folder = manuals_dir / machine_type
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / file.name
    replaced = target.exists()
    partial = folder / f".{file.name}.partial"
    partial.write_bytes(file.read_bytes())
    os.replace(partial, target)
    manual = Manual(file.name, machine_type, "added", target)
    if FORMATS[target.suffix.lower()] == "pdf":
        _cached(target, manuals_dir / _CACHE / machine_type, sections)
    return manual, [replace(s, machine_type=machine_type) for s in sections], replaced


def check_machine_type(fleet: FleetSchema, machine_type: str) -> None:
    if machine_type not in fleet.machine_types:
        raise ManualError(
            f"unknown machine type {machine_type!r}; the deployment's fleet has "
            f"{', '.join(fleet.machine_types)} (add a type with pitstop fleet apply)",
            code="manual_unknown_machine_type",
        )


def remove_manual(manuals_dir: Path, machine_type: str, name: str) -> Manual:
    """Delete an added manual; a ``NotFoundError`` names the type's added manuals otherwise."""
    folder = manuals_dir / machine_type
    path = folder / name
    if PurePath(name).name != name or name.startswith(".") or not path.is_file():
        held = [p.name for p in sorted(folder.glob("*")) if p.is_file() and not p.name.startswith(".")]
        held_text = ", ".join(held) or "none"
        raise NotFoundError(
            f"no added manual {name!r} for machine type {machine_type!r} (it has: {held_text}); "
            "see pitstop manuals list",
            code="manual_not_found",
        )
    path.unlink()
    (manuals_dir / _CACHE / machine_type / f"{name}.json").unlink(missing_ok=True)
    return Manual(name, machine_type, "added", path)


def _cached(path: Path, cache_dir: Path, sections: list[Section] | None = None) -> list[Section]:
    """A PDF's sections from the cache when it matches the file (size, mtime), else parsed and
    cached (a cache that cannot be written is skipped)."""
    stat = path.stat()
    key = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    cache = cache_dir / f"{path.name}.json"
    if sections is None:
        try:
            held = json.loads(cache.read_text(encoding="utf-8"))
            if held.get("key") == key:
                return [Section(**s) for s in held["sections"]]
        except (OSError, ValueError, TypeError, KeyError):
            pass
        sections = read_sections(path.name, path.read_bytes())
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"key": key, "sections": [asdict(s) for s in sections]}))
    except OSError as exc:
        log.warning("cannot cache the sections of %s: %s", path, exc)
    return sections
