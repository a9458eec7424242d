"""The manuals the assistant searches: sections per machine type, ranked by BM25.

BM25 (Lucene's variant, k1=1.5, b=0.75) is computed by ``bm25s`` over our own tokens (a
section's title counts twice); scores are scaled by k1 + 1 so they read as the textbook
formula's. One index holds every section, so a score means the same whatever a search is scoped
to: a scoped search only leaves other types' sections out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pitstop.assistant.markdown import markdown_sections
from pitstop.assistant.section import Section
from pitstop.assistant.text import tokens
from pitstop.errors import PitstopError

if TYPE_CHECKING:
    from pitstop.schema import FleetSchema

__all__ = ["KnowledgeBase", "Section", "tokens"]

log = logging.getLogger(__name__)

K1, B = 1.5, 0.75


class KnowledgeBase:
    """Sections of manuals, searched with BM25, each scoped to its machine type (None: general)."""

    def __init__(self, sections: Iterable[Section], problems: Iterable[str] = ()) -> None:
        self.sections = list(sections)
        self.problems = list(problems)  # manuals that could not be read, one line each
        self._retriever: Any = None
        if self.sections:
            self._retriever = _bm25s().BM25(method="lucene", k1=K1, b=B)
            corpus = [tokens(f"{s.title} {s.title} {s.text}") for s in self.sections]
            self._retriever.index(corpus, show_progress=False)
        self._by_id: dict[tuple[str, str], list[Section]] = {}
        for s in self.sections:
            self._by_id.setdefault((s.source, s.anchor), []).append(s)

    @classmethod
    def from_markdown(cls, files: dict[str, str], machine_type: str | None = None) -> KnowledgeBase:
        """Markdown texts by file name, all of one machine type (None: general)."""
        return cls(
            replace(s, machine_type=machine_type)
            for name, text in files.items()
            for s in markdown_sections(text, name)
        )

    @classmethod
    def load(cls, manuals_dir: Path | None, fleet: FleetSchema | None) -> KnowledgeBase:
        """The shipped manuals and those under ``manuals_dir`` (``<data-dir>/manuals``), each with
        its machine type through ``fleet`` (see ``pitstop.assistant.manuals``). A manual that
        cannot be read is left out and named in ``problems``: it never stops a start."""
        from pitstop.assistant.manuals import manuals_in_use

        sections: list[Section] = []
        problems: list[str] = []
        for manual in manuals_in_use(manuals_dir, fleet):
            try:
                sections.extend(manual.read_sections(manuals_dir))
            except (PitstopError, OSError) as exc:
                problem = f"{manual.path or manual.name}: {getattr(exc, 'message', exc)}"
                log.warning("manual left out: %s", problem)
                problems.append(problem)
        return cls(sections, problems)

    @classmethod
    def shipped(cls, extra_dir: Path | None = None) -> KnowledgeBase:
        """The manuals shipped in ``pitstop/knowledge`` plus those in ``extra_dir``, without a
        fleet: every manual is general except those added for a type (``extra_dir/<type>/``)."""
        return cls.load(extra_dir, None)

    def machine_types(self) -> set[str]:
        """The machine types that have at least one manual of their own."""
        return {s.machine_type for s in self.sections if s.machine_type is not None}

    def get(self, source: str, anchor: str, machine_type: str | None = None) -> Section | None:
        """The section cited as ``source#anchor`` (the given type's copy when several types share
        the manual, else a general one)."""
        found = self._by_id.get((source, anchor), [])
        for s in found:
            if s.machine_type == machine_type:
                return s
        return found[0] if found else None

    def search(self, query: str, k: int = 2, machine_type: str | None = None) -> list[tuple[float, Section]]:
        """The ``k`` best sections for ``query`` with their BM25 scores (highest first, only those
        sharing a word with it); with ``machine_type``, that type's sections and general ones."""
        q = tokens(query)
        if self._retriever is None or not q or k <= 0:
            return []
        scores = self._retriever.get_scores(q) * (K1 + 1)
        order = sorted(range(len(self.sections)), key=lambda i: -scores[i])
        out: list[tuple[float, Section]] = []
        seen: set[tuple[str, str]] = set()
        for i in order:
            score, section = float(scores[i]), self.sections[i]
            if score <= 0 or len(out) == k:
                break
            if machine_type is not None and section.machine_type not in (machine_type, None):
                continue
            if (section.source, section.anchor) in seen:
                continue  # a manual several types share: once
            seen.add((section.source, section.anchor))
            out.append((score, section))
        return out


def _bm25s() -> Any:
    """``bm25s``, imported when the first index is built; it sets its own logger to DEBUG when
    imported (one line per index built), put back to WARNING here."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s
