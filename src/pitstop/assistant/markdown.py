"""Markdown manuals split into sections at ``#``, ``##`` and ``###`` headings.

A section's anchor is the slug of its own heading (``## Procedure P-101: borescope inspection``
is ``#procedure-p-101-borescope-inspection``), so links into a manual keep working. A ``###``
section's title carries its ``##`` parent's (``Hydraulics › Pump test``). Headings inside fenced
code blocks are text; a heading with no text under it (a title right above a subheading) is no
section; text before the first heading, or a file without headings, is a section titled by the
file's name.
"""

from __future__ import annotations

import re
from pathlib import PurePath

from pitstop.assistant.section import Section
from pitstop.assistant.text import Anchors, squash

_HEADING = re.compile(r"^(#{1,3})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def markdown_sections(text: str, source: str) -> list[Section]:
    anchors = Anchors()
    sections: list[Section] = []
    parents: dict[int, str] = {}
    body: list[str] = []
    title, anchor = PurePath(source).stem, ""  # the preamble, named by the file
    fenced = False

    def close() -> None:
        joined = squash("\n".join(body))
        if joined:
            sections.append(Section(source, title, joined, anchor or anchors(title)))

    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        match = None if fenced else _HEADING.match(line)
        if match is None:
            body.append(line)
            continue
        close()
        level, heading = len(match.group(1)), match.group(2).strip()
        parents = {k: v for k, v in parents.items() if k < level}
        parents[level] = heading
        parent = parents.get(2) if level == 3 else None
        title = f"{parent} › {heading}" if parent else heading
        anchor, body = anchors(heading), []
    close()
    return sections
