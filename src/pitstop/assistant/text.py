"""The words of manuals and questions: one tokenizer (lower case, stop words out, a light stemmer)
for indexing and searching alike, and the slug that names a section in a citation."""

from __future__ import annotations

import functools
import re

import snowballstemmer

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


# maintenance words that mean the same to a technician (after stemming)
_SYNONYMS = {
    "creep": "rise",
    "climb": "rise",
    "increas": "rise",
    "grow": "rise",
    "drop": "fall",
    "decreas": "fall",
    "declin": "fall",
    "sink": "fall",
    "swap": "replac",
    "chang": "replac",
    "fix": "repair",
    "mend": "repair",
    "broke": "fail",
    "broken": "fail",
    "breakdown": "fail",
    "failur": "fail",
    "lubric": "greas",
    "regreas": "greas",
}
_STEMMER = snowballstemmer.stemmer("english")


def tokens(text: str) -> list[str]:
    """Lower-cased words without stop words, Snowball-stemmed (replacing/replacement → replac,
    setting/set → set), with a few synonyms a technician uses folded together (drop → fall)."""
    words = [t for t in _WORD.findall(text.lower()) if t not in _STOP]
    return [_stem(w) for w in words]


@functools.lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    if any(c.isdigit() for c in word):
        return word  # codes and figures as written: p-101, 250, h-204
    stem: str = _STEMMER.stemWord(word)
    return _SYNONYMS.get(stem, stem)


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
