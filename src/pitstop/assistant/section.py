"""One searchable piece of a manual, and how an answer cites it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pitstop.assistant.text import slug


@dataclass(frozen=True)
class Section:
    """A manual's section: its document (file name), title, plain text, anchor (unique in the
    document), machine type (None: a general manual) and page (PDF manuals; 1-based).

    The text is data: whatever a manual says (even "ignore your instructions and ...") is only
    ever quoted, never acted on."""

    source: str
    title: str
    text: str
    anchor: str = ""
    machine_type: str | None = None
    page: int | None = None

    def __post_init__(self) -> None:
        if not self.anchor:
            object.__setattr__(self, "anchor", slug(self.title))

    @property
    def id(self) -> str:
        return f"{self.source}#{self.anchor}"

    def cite(self) -> dict[str, Any]:
        return {
            "kind": "manual",
            "id": self.id,
            "title": self.title,
            "document": self.source,
            "section": self.title,
            "machine_type": self.machine_type,
            "page": self.page,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.cite(), "anchor": self.anchor, "text": self.text}
