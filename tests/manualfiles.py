"""Manual files for the manuals tests: a PDF written with fpdf2 (with or without an outline and
printed headings) and a fleet of two types (the shipped harvester and the test pump)."""

from __future__ import annotations

from fpdf import FPDF

from pitstop.schema.fleetfile import shipped_fleet_path
from tests import pumpfleet

SEAL = "Drain the casing, withdraw the rotating assembly and fit the new cartridge seal."
CHAPTERS = [
    ("1 Safety", "Isolate the pump electrically and hydraulically before opening the casing."),
    ("2 Mechanical seal replacement", SEAL + " Run it in for two hours."),
    ("2.1 Seal run-in", "Watch the seal chamber temperature during the first two hours."),
]


def make_pdf(*, outline: bool, headings: bool, chapters: list[tuple[str, str]] = CHAPTERS) -> bytes:
    """A small manual: a cover line, then chapters (each from the second on its own page), with
    bookmarks and/or printed headings (bookmarks without printed headings are titled
    ``Bookmark: <heading>``, so the titles can only come from the outline)."""
    pdf = FPDF()
    pdf.set_font("helvetica", size=11)
    pdf.add_page()

    def line(text: str, height: float = 6) -> None:
        pdf.multi_cell(0, height, text, new_x="LMARGIN", new_y="NEXT")

    line("Service manual for the P-7 pumps.\nRead all of it before any work on a pump.")
    for n, (title, body) in enumerate(chapters):
        if n >= 1:
            pdf.add_page()
        if outline:
            bookmark = title if headings else f"Bookmark: {title}"
            pdf.start_section(bookmark, level=1 if title.count(".") else 0)
        if headings:
            pdf.set_font("helvetica", "B", 14)
            line(title, 8)
            pdf.set_font("helvetica", size=11)
        line(body)
    return bytes(pdf.output())


def two_type_fleet(manuals: str) -> str:
    """The shipped harvester type plus the test pump type, whose `manuals` list is given."""
    pump = pumpfleet.FLEET_TOML.replace(
        'description = "centrifugal pump"', f'description = "centrifugal pump"\nmanuals = [{manuals}]', 1
    )
    return shipped_fleet_path("harvesters").read_text() + pump
