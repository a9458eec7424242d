from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

_WORD = re.compile(r"[a-z0-9]+(?:-[0-9]+)?")
_STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "how",
        "i",
        "in",
        "is",
        "it",
        "its",
        "me",
        "my",
        "of",
        "on",
        "or",
        "should",
        "the",
        "this",
        "to",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
    ]
)


def tokens(text: str) -> list[str]:
    return [_stem(t) for t in _WORD.findall(text.lower()) if t not in _STOP]


def _stem(word: str) -> str:
    """A light suffix stripper so that rise/rises/rising and fall/falls/falling meet."""
    if word[:1].isdigit() or len(word) < 4:
        return word
    for suffix in ("ing", "ed", "es", "s", "e"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


@dataclass(frozen=True)
class Section:
    source: str  # file name
    title: str
    text: str

    machine_type: str | None = None
    page: int | None = None

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")

    def cite(self) -> dict[str, object]:
        return {
            "kind": "manual",
            "id": f"{self.source}#{self.anchor}",
            "title": self.title,
            "document": self.source,
            "section": self.title,
            "machine_type": self.machine_type,
            "page": self.page,
        }


class KnowledgeBase:
    """Markdown manuals split at ``##`` headings, searched with BM25 (k1=1.5, b=0.75)."""

    def __init__(self, sections: list[Section]) -> None:
        self.sections = sections
        self._docs = [Counter(tokens(f"{s.title} {s.title} {s.text}")) for s in sections]
        self._lengths = [sum(d.values()) for d in self._docs]
        self._avg = sum(self._lengths) / max(1, len(self._lengths))
        df: Counter[str] = Counter()
        for d in self._docs:
            df.update(d.keys())
        n = len(sections)
        self._idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}

    @classmethod
    def from_markdown(cls, files: dict[str, str]) -> KnowledgeBase:
        sections = []
        for name, text in files.items():
            for block in re.split(r"^## ", text, flags=re.M)[1:]:
                title, _, body = block.partition("\n")
                sections.append(Section(name, title.strip(), " ".join(body.split())))
        return cls(sections)

    @classmethod
    def shipped(cls, extra_dir: Path | None = None) -> KnowledgeBase:
        """The manuals shipped in ``pitstop/knowledge`` plus any ``*.md`` in ``extra_dir``."""
        files = {
            ref.name: ref.read_text(encoding="utf-8")
            for ref in resources.files("pitstop.knowledge").iterdir()
            if ref.name.endswith(".md")
        }
        if extra_dir is not None and extra_dir.is_dir():
            files.update({p.name: p.read_text(encoding="utf-8") for p in sorted(extra_dir.glob("*.md"))})
        return cls.from_markdown(files)

    @classmethod
    def load(cls, manuals_dir: Path | None, fleet: object = None) -> KnowledgeBase:
        return cls.shipped(manuals_dir)

    def get(self, source: str, anchor: str) -> Section | None:
        return next((s for s in self.sections if s.source == source and s.anchor == anchor), None)

    def search(self, query: str, k: int = 2, machine_type: str | None = None) -> list[tuple[float, Section]]:
        q = tokens(query)
        scored = []
        for doc, length, section in zip(self._docs, self._lengths, self.sections, strict=True):
            score = 0.0
            for term in q:
                f = doc.get(term, 0)
                if f:
                    score += self._idf[term] * f * 2.5 / (f + 1.5 * (0.25 + 0.75 * length / self._avg))
            if score > 0:
                scored.append((score, section))
        scored.sort(key=lambda pair: -pair[0])
        return scored[:k]
