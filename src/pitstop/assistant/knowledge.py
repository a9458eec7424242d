"""The manuals the assistant searches: sections per machine type, ranked by BM25.

BM25 (Lucene's variant, k1=1.5, b=0.75) is computed by ``bm25s`` over our own tokens (a
section's own heading counts twice, a parent's it carries once: ``Seals › Run-in`` does not
outrank ``Seals`` on a question about seals); scores are scaled by k1 + 1 so they read as the
textbook formula's. One index holds every section, so a score means the same whatever a search is scoped
to: a scoped search only leaves other types' sections out.

With ``retrieval="hybrid"`` (setting ``manuals_retrieval``), a section's score adds
``DENSE_WEIGHT * (cosine - DENSE_FLOOR)`` when positive: the cosine of the question's and the
section's embeddings from a small model shipped inside the ``wordllama`` wheel (see ``dense``),
so a question in other words than the manual's still finds its section. Still an absolute score
per section: comparable across calls.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from pitstop.assistant.markdown import markdown_sections
from pitstop.assistant.section import Section
from pitstop.assistant.text import tokens
from pitstop.errors import PitstopError

if TYPE_CHECKING:
    from pitstop.schema import FleetSchema

__all__ = ["KnowledgeBase", "Section", "tokens"]

log = logging.getLogger(__name__)

K1, B = 1.5, 0.75
DENSE_WEIGHT, DENSE_FLOOR = 5.0, 0.05  # a cosine of 0.25 scores as a BM25 of 1
Retrieval = Literal["bm25", "hybrid"]


class KnowledgeBase:
    """Sections of manuals, searched with BM25, each scoped to its machine type (None: general)."""

    def __init__(
        self, sections: Iterable[Section], problems: Iterable[str] = (), *, retrieval: Retrieval = "bm25"
    ) -> None:
        self.sections = list(sections)
        self.problems = list(problems)  # manuals that could not be read, one line each
        self.retrieval = retrieval
        self._retriever: Any = None
        self._vectors: Any = None
        if self.sections:
            self._retriever = _bm25s().BM25(method="lucene", k1=K1, b=B)
            corpus = [tokens(f"{s.title} {_own(s.title)} {s.text}") for s in self.sections]
            self._retriever.index(corpus, show_progress=False)
            if retrieval == "hybrid":
                from pitstop.assistant.dense import embed

                self._vectors = embed([f"{s.title}. {s.text}" for s in self.sections])
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
    def load(
        cls, manuals_dir: Path | None, fleet: FleetSchema | None, *, retrieval: Retrieval = "bm25"
    ) -> KnowledgeBase:
        """The shipped manuals and those under ``manuals_dir`` (``<data-dir>/manuals``), each with
        its machine type through ``fleet`` (see ``pitstop.assistant.manuals``). A manual that
        cannot be read is left out and named in ``problems``: it never stops a start.
        ``retrieval`` is the ``manuals_retrieval`` setting (``hybrid`` without ``pitstop[dense]``
        installed: a ``ConfigError`` saying so)."""
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
        return cls(sections, problems, retrieval=retrieval)

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
        """The ``k`` best sections for ``query`` with their scores (highest first, above zero: with
        BM25 alone, those sharing a word with it); with ``machine_type``, that type's sections and
        general ones."""
        q = tokens(query)
        if self._retriever is None or not q or k <= 0:
            return []
        scores = self._retriever.get_scores(q) * (K1 + 1)
        if self._vectors is not None:
            from pitstop.assistant.dense import embed

            cosine = self._vectors @ embed([query])[0]
            scores = scores + DENSE_WEIGHT * np.clip(cosine - DENSE_FLOOR, 0.0, None)
        order = np.argsort(-scores, kind="stable")
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


def _own(title: str) -> str:
    """A section's own heading, without the parent's its title carries."""
    return title.rsplit(" › ", 1)[-1]


def _bm25s() -> Any:
    """``bm25s``, imported when the first index is built; it sets its own logger to DEBUG when
    imported (one line per index built), put back to WARNING here."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s
