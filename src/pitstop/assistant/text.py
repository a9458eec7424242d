"""The words of manuals and questions: one tokenizer (lower case, stop words out, a light stemmer)
for indexing and searching alike, and the slug that names a section in a citation."""

from __future__ import annotations

import re

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


def slug(title: str) -> str:
    """A heading's anchor: lower case, runs of other characters become one ``-``."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"


class Anchors:
    """Unique anchors within one document: a repeated heading gets ``-1``, ``-2`` (as GitHub does)."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def __call__(self, title: str) -> str:
        base = slug(title)
        count = self._seen.get(base, 0)
        self._seen[base] = count + 1
        return base if count == 0 else f"{base}-{count}"


def squash(text: str) -> str:
    """Whitespace runs become one space (a section's text is searched and quoted as one paragraph)."""
    return " ".join(text.split())
