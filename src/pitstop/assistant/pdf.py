"""PDF manuals split into sections with ``pypdf``, by the best structure the file offers:

1. its outline (bookmarks): each entry starts a section at its page, at the line that carries its
   title when the page has it (else at the page's top), and runs to the next entry; a nested
   entry's title carries its parent's (``Hydraulics › Pump test``);
2. else heading-like lines, when the document has at least two: a numbered heading (``3``,
   ``3.2`` or ``3.2.1`` then a capitalised title, at most 80 characters, not ending in ``.`` or
   ``,``) or a short title line (at most 8 words and 60 characters, every word of four letters
   or more capitalised, or all capitals, no final ``.``), each followed by a line of body text;
3. else one section per page (``Page 3``).

Every section keeps the (1-based) page it starts on. Text before the first heading is a section
titled by the document's name. Scanned pages without a text layer give no text: such a file is
refused as empty (OCR it first).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from pitstop.assistant.section import Section
from pitstop.assistant.text import Anchors, squash
from pitstop.errors import ManualError

_NUMBERED = re.compile(r"^\d{1,2}(?:\.\d{1,2}){0,3}\.?\s+[A-Z]")
_WORDS = re.compile(r"[A-Za-z][A-Za-z'-]*")


@dataclass
class _Start:
    title: str
    anchor_title: str  # the entry's own title (its anchor), without its parent's
    at: int  # offset in the whole text
    page: int  # 0-based


def pdf_sections(data: bytes, source: str) -> list[Section]:
    """The sections of a PDF file's bytes; a ``ManualError`` when pypdf cannot read it."""
    try:
        from pypdf import PdfReader

        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ManualError(
                f"{source} is encrypted; save an unprotected copy and add that", code="manual_unreadable"
            )
        pages = [page.extract_text() or "" for page in reader.pages]
        outline = _outline(reader)
    except ManualError:
        raise
    except Exception as exc:  # pypdf raises many kinds on a damaged file
        raise ManualError(
            f"{source} is not a readable PDF ({type(exc).__name__}: {exc})", code="manual_unreadable"
        ) from exc
    starts_of_pages, offset = [], 0
    for text in pages:
        starts_of_pages.append(offset)
        offset += len(text) + 1
    whole = "\n".join(pages)
    starts = _from_outline(outline, pages, starts_of_pages) or _from_headings(pages, starts_of_pages)
    if not starts:
        anchors = Anchors()
        return [
            Section(source, f"Page {n}", squash(text), anchors(f"page {n}"), page=n)
            for n, text in enumerate(pages, 1)
            if text.strip()
        ]
    return _cut(whole, starts, source)


def _outline(reader: Any) -> list[tuple[int, str, int]]:
    """The outline flattened to (depth, title, 0-based page); an entry pypdf cannot resolve (a
    broken destination) is skipped, a broken outline is no outline."""
    flat: list[tuple[int, str, int]] = []

    def walk(items: list[Any], depth: int) -> None:
        for item in items:
            if isinstance(item, list):
                walk(item, depth + 1)
                continue
            try:
                page = reader.get_destination_page_number(item)
            except Exception:  # pypdf raises many kinds on a damaged destination
                continue
            title = squash(str(getattr(item, "title", "") or ""))
            if title and page is not None and 0 <= page < len(reader.pages):
                flat.append((depth, title, page))

    try:
        walk(list(reader.outline), 0)
    except Exception:  # an outline pypdf cannot read: fall back to headings or pages
        return []
    return flat


def _from_outline(
    outline: list[tuple[int, str, int]], pages: list[str], page_starts: list[int]
) -> list[_Start]:
    starts: list[_Start] = []
    parents: dict[int, str] = {}
    floor = 0
    for depth, title, page in outline:
        parents = {k: v for k, v in parents.items() if k < depth}
        parents[depth] = title
        parent = parents.get(depth - 1)
        found = _find_line(pages[page], title)
        at = page_starts[page] + (found if found >= 0 else 0)
        at = max(at, floor)  # entries out of page order still cut forwards
        floor = at
        starts.append(_Start(f"{parent} › {title}" if parent else title, title, at, page))
    return starts


def _find_line(text: str, title: str) -> int:
    """Where the line carrying ``title`` starts in a page's text, or -1."""
    want = squash(title).lower()
    offset = 0
    for line in text.splitlines(keepends=True):
        if squash(line).lower().startswith(want):
            return offset
        offset += len(line)
    return -1


def is_heading(line: str) -> bool:
    """Whether a line of a PDF's text looks like a heading (see the module's doc)."""
    line = line.strip()
    if not line or line[-1] in ".,;" or len(line) > 80:
        return False
    if _NUMBERED.match(line):
        return True
    words = _WORDS.findall(line)
    if not words or len(words) > 8 or len(line) > 60 or not line[0].isupper():
        return False
    if line.isupper() and len(line) > 3:
        return True
    long_words = [w for w in words if len(w) >= 4]
    return bool(long_words) and all(w[0].isupper() for w in long_words)


def _from_headings(pages: list[str], page_starts: list[int]) -> list[_Start]:
    starts: list[_Start] = []
    for page, text in enumerate(pages):
        lines = text.splitlines(keepends=True)
        offset = 0
        for i, line in enumerate(lines):
            following = next((n for n in lines[i + 1 :] if n.strip()), "")
            if is_heading(line) and following and not is_heading(following):
                title = squash(line)
                starts.append(_Start(title, title, page_starts[page] + offset, page))
            offset += len(line)
    return starts if len(starts) >= 2 else []


def _cut(whole: str, starts: list[_Start], source: str) -> list[Section]:
    anchors = Anchors()
    sections: list[Section] = []
    preamble = squash(whole[: starts[0].at])
    if preamble:
        name = PurePath(source).stem
        sections.append(Section(source, name, preamble, anchors(name), page=1))
    for start, end in zip(starts, [s.at for s in starts[1:]] + [len(whole)], strict=True):
        chunk = whole[start.at : end]
        first, _, rest = chunk.partition("\n")
        own = squash(start.anchor_title)
        if squash(first).lower().startswith(own.lower()):  # the heading line is the title, not text
            chunk = squash(first)[len(own) :].lstrip(" :") + "\n" + rest
        text = squash(chunk)
        anchor = anchors(start.anchor_title)
        if text:
            sections.append(Section(source, start.title, text, anchor, page=start.page + 1))
    return sections
