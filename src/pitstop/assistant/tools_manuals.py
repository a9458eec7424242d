"""The assistant's tools on the manuals: search, sections by a procedure's code, a section by
its citation (a part of ``Toolbox``)."""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING

from pitstop.assistant.records import CODE, ToolResult

if TYPE_CHECKING:
    from pitstop.assistant.knowledge import KnowledgeBase
    from pitstop.schema import FleetSchema


class ManualTools:
    """Read-only tools over the manuals (BM25, per machine type)."""

    knowledge: KnowledgeBase
    fleet: FleetSchema

    def search_manuals(self, query: str, machine_type: str | None = None, limit: int = 2) -> ToolResult:
        """Manual sections for a question, by BM25, restricted to a machine type's manuals."""
        args = {"query": query, "machine_type": machine_type, "limit": limit}
        hits = self.knowledge.search(query, k=limit, machine_type=machine_type)
        sections = [
            {
                "document": section.source,
                "section": section.title,
                "anchor": section.anchor,
                "score": round(score, 2),
                "text": section.text,
            }
            for score, section in hits
        ]
        sources = [section.cite() for _, section in hits]
        return ToolResult("search_manuals", args, {"sections": sections}, sources)

    def procedure_sections(
        self, procedure: str, machine_type: str | None = None, limit: int = 2
    ) -> ToolResult:
        """The manual sections a work order's procedure names by code ("P-101 borescope …")."""
        args = {"procedure": procedure, "machine_type": machine_type}
        codes = list(dict.fromkeys(c.upper() for c in CODE.findall(procedure)))
        found = []
        for code in codes:
            for section in self.knowledge.sections:
                if machine_type is not None and section.machine_type not in (machine_type, None):
                    continue
                if re.search(rf"\b{re.escape(code)}\b", section.title, re.I) and section not in found:
                    found.append(section)
                    break
        found = found[:limit]
        sections = [
            {"document": s.source, "section": s.title, "anchor": s.anchor, "score": None, "text": s.text}
            for s in found
        ]
        return ToolResult("procedure_sections", args, {"sections": sections}, [s.cite() for s in found])

    @functools.cached_property
    def sensor_types(self) -> dict[str, str]:
        """Each sensor name (lower case) → the machine type that has it (the first, if several);
        the fleet is fixed for a toolbox's life."""
        found: dict[str, str] = {}
        for name, mt in self.fleet.machine_types.items():
            for sensor in mt.sensor_names:
                found.setdefault(sensor.lower(), name)
        return found

    def manual_section(self, reference: str) -> ToolResult:
        """A manual section by ``document#anchor`` (as fleet files cite them)."""
        document, _, anchor = reference.partition("#")
        section = self.knowledge.get(document, anchor)
        if section is None:
            return ToolResult("manual_section", {"reference": reference}, {"found": False})
        data = {
            "found": True,
            "document": section.source,
            "section": section.title,
            "anchor": section.anchor,
            "text": section.text,
        }
        return ToolResult("manual_section", {"reference": reference}, data, [section.cite()])
