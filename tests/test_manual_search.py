"""Manual sections and their search: PDF pages and heading-like lines, Markdown levels and the
fleets' anchors, BM25 as the textbook computes it, general manuals, speed, the PDF section cache,
and hybrid search with the embedding model shipped in a wheel (no download)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from pitstop.assistant.knowledge import KnowledgeBase, Section, tokens
from pitstop.assistant.markdown import markdown_sections
from pitstop.assistant.pdf import is_heading, pdf_sections
from pitstop.schema import parse_fleet
from pitstop.schema.fleetfile import shipped_fleet_path
from tests import pumpfleet
from tests.manualfiles import make_pdf


def test_a_pdf_without_outline_or_headings_is_one_section_per_page() -> None:
    sections = pdf_sections(make_pdf(outline=False, headings=False), "plain.pdf")
    assert [(s.title, s.anchor, s.page) for s in sections] == [
        ("Page 1", "page-1", 1),
        ("Page 2", "page-2", 2),
        ("Page 3", "page-3", 3),
    ]
    assert "Isolate the pump" in sections[0].text and sections[1].text.startswith("Drain the casing")


@pytest.mark.parametrize(
    ("line", "heading"),
    [
        ("3.2 Pump pressure test", True),
        ("HYDRAULIC SYSTEM", True),
        ("Drive Belt Replacement", True),
        ("Check the belt tension weekly.", False),
        ("Service manual for the P-7 pumps", False),
        ("12, 14 and 16 Nm", False),
    ],
)
def test_heading_like_lines(line: str, heading: bool) -> None:
    assert is_heading(line) is heading


def test_a_general_manual_answers_every_type() -> None:
    kb = KnowledgeBase(
        [
            Section("pump.md", "Seal replacement", "Fit the new cartridge seal.", machine_type="pump"),
            Section("site.md", "Lockout before any seal work", "Lock out and tag out first."),
        ]
    )
    assert [s.source for _, s in kb.search("seal", k=5, machine_type="harvester")] == ["site.md"]
    assert {s.source for _, s in kb.search("seal", k=5, machine_type="pump")} == {"pump.md", "site.md"}


def test_markdown_splits_at_three_levels_and_the_fleets_anchors_resolve() -> None:
    sections = markdown_sections(
        "Intro line.\n# Manual\n## Pumps\nBody a.\n### Seals\nBody b.\n## Pumps\nBody c.\n", "m.md"
    )
    assert [(s.title, s.anchor, s.text) for s in sections] == [
        ("m", "m", "Intro line."),
        ("Pumps", "pumps", "Body a."),
        ("Pumps › Seals", "seals", "Body b."),
        ("Pumps", "pumps-1", "Body c."),
    ]
    kb = KnowledgeBase.shipped()
    for fleet in ("turbofan", "harvesters"):
        schema = parse_fleet(shipped_fleet_path(fleet).read_text())
        for mt in schema.machine_types.values():
            for component in mt.components:
                source, _, anchor = component.manual.partition("#")
                assert kb.get(source, anchor) is not None, component.manual


def test_scores_are_the_textbook_bm25(tmp_path: Path) -> None:
    """bm25s computes what the hand-written BM25 it replaced did (Lucene idf, k1=1.5, b=0.75)."""
    import math
    from collections import Counter

    kb = KnowledgeBase.shipped()
    docs = [Counter(tokens(f"{s.title} {s.title} {s.text}")) for s in kb.sections]
    avg = sum(sum(d.values()) for d in docs) / len(docs)
    query = "HPC outlet temperature rising, borescope inspection"
    expected = {}
    for doc, section in zip(docs, kb.sections, strict=True):
        score = 0.0
        for term in tokens(query):
            df = sum(1 for d in docs if term in d)
            if doc.get(term):
                idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
                f = doc[term]
                score += idf * f * 2.5 / (f + 1.5 * (0.25 + 0.75 * sum(doc.values()) / avg))
        expected[section.id] = score
    hits = kb.search(query, k=5)
    assert len(hits) == 5
    for score, section in hits:
        assert score == pytest.approx(expected[section.id], rel=1e-5)
    assert [s.id for _, s in hits] == sorted(expected, key=lambda i: -expected[i])[:5]


def test_loading_and_searching_a_hundred_sections_is_fast(tmp_path: Path) -> None:
    manuals = tmp_path / "manuals"
    (manuals / "pump").mkdir(parents=True)
    chapters = [
        (f"{n} Chapter {n} Of The Pump", f"Check pump part {n} and its seal {n} weekly.")
        for n in range(1, 61)
    ]
    (manuals / "pump" / "big.pdf").write_bytes(make_pdf(outline=True, headings=True, chapters=chapters))
    (manuals / "pump" / "notes.md").write_text("".join(f"## Note {n}\n\nPump note {n}.\n" for n in range(60)))
    fleet = parse_fleet(pumpfleet.FLEET_TOML)
    KnowledgeBase.load(manuals, fleet)  # parses the PDF once and caches its sections
    load_s = search_s = 1.0
    for _ in range(3):
        start = time.perf_counter()
        kb = KnowledgeBase.load(manuals, fleet)
        load_s = min(load_s, time.perf_counter() - start)
        start = time.perf_counter()
        kb.search("pump seal 17 weekly", k=3, machine_type="pump")
        search_s = min(search_s, time.perf_counter() - start)
    assert len(kb.sections) >= 100
    assert load_s < 0.1 and search_s < 0.002, (load_s, search_s)


def test_pdf_sections_are_read_from_the_cache_until_the_file_changes(tmp_path: Path) -> None:
    manuals = tmp_path / "manuals"
    (manuals / "pump").mkdir(parents=True)
    pdf = manuals / "pump" / "pump.pdf"
    pdf.write_bytes(make_pdf(outline=True, headings=True))
    fleet = parse_fleet(pumpfleet.FLEET_TOML)
    assert len(KnowledgeBase.load(manuals, fleet).sections) == 4
    stat = pdf.stat()
    pdf.write_bytes(b"X" * stat.st_size)  # same size and mtime: the cache still stands for it
    os.utime(pdf, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    cached = KnowledgeBase.load(manuals, fleet)
    assert len(cached.sections) == 4 and cached.problems == []
    os.utime(pdf, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # changed: parsed again
    changed = KnowledgeBase.load(manuals, fleet)
    assert changed.sections == [] and "not a readable PDF" in changed.problems[0]


SYMPTOMS = [
    Section(
        "h.md", "High coolant temperature", "Check the radiator fan and the coolant level.", machine_type="t"
    ),
    Section("h.md", "Drive belt wear", "The belt slips and squeals under load.", machine_type="t"),
    Section("h.md", "Hydraulic pump wear", "Pressure drops and flow falls.", machine_type="t"),
    Section("h.md", "Fuel injector fouling", "Black smoke and a rough idle.", machine_type="t"),
    Section("p.md", "Pump seal leak", "Fluid weeps at the gland.", machine_type="pump"),
]


def test_hybrid_search_finds_a_section_asked_in_other_words_without_any_download(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pitstop.assistant import dense

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the embedding model tried the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(dense, "_model", None)  # loaded here, from the installed wheel only
    bm25 = KnowledgeBase(SYMPTOMS)
    hybrid = KnowledgeBase(SYMPTOMS, retrieval="hybrid")
    for query, title in [
        ("the engine is overheating", "High coolant temperature"),
        ("machine runs too hot", "High coolant temperature"),
        ("dark exhaust", "Fuel injector fouling"),
    ]:
        assert bm25.search(query, machine_type="t") == [], query  # no word in common
        [(score, hit)] = hybrid.search(query, k=1, machine_type="t")
        assert hit.title == title and score >= 1.0, (query, score)
    # still one score per section, whatever the scope; still no other type's section
    scoped = hybrid.search("machine runs too hot", k=5, machine_type="t")
    unscoped = {s.id: score for score, s in hybrid.search("machine runs too hot", k=5)}
    assert all(unscoped[s.id] == pytest.approx(score) for score, s in scoped if s.id in unscoped)
    assert all(
        s.machine_type == "t" for _, s in hybrid.search("fluid weeps at the gland", k=5, machine_type="t")
    )
