"""``pitstop manuals``: the Markdown and PDF manuals the assistant searches, per machine type."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pitstop.cli_common import _platform, data_dir_option

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group()
def manuals() -> None:
    """Manuals per machine type (Markdown or PDF), split into sections the assistant cites."""


@manuals.command("add")
@click.argument("file", type=_FILE)
@click.option("--machine-type", required=True, help="The machine type it is for (see pitstop fleet show).")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.pass_context
def add(ctx: click.Context, file: Path, machine_type: str, data_dir: Path | None, as_json: bool) -> None:
    """Check FILE (.md, .markdown or .pdf), split it into sections and store it under
    <data-dir>/manuals/<machine type>/ (replacing one of the same name). Audited."""
    from pitstop.assistant.manuals import add_manual

    with _platform(ctx, data_dir) as p:
        manual, sections, replaced = add_manual(
            p.settings.data_dir / "manuals",
            p.fleet,
            file,
            machine_type,
            p.settings.manual_max_mb * 2**20,
        )
        result = {
            **manual.to_dict(),
            "sections": len(sections),
            "pages": max((s.page or 0 for s in sections), default=0) or None,
            "replaced": replaced,
        }
        p.db.audit(
            "cli",
            "manual_added",
            name=manual.name,
            machine_type=machine_type,
            format=result["format"],
            sections=len(sections),
            replaced=replaced,
        )
    if as_json:
        click.echo(json.dumps({**result, "titles": [s.title for s in sections]}))
        return
    click.echo(
        f"{manual.name}: {len(sections)} section(s) found, {'replaced' if replaced else 'added'} "
        f"for machine type {machine_type}"
    )
    for s in sections:
        click.echo(f"  {s.title}" + (f" (page {s.page})" if s.page else ""))


@manuals.command("list")
@click.option("--machine-type", default=None, help="Only this type's manuals (and general ones).")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def list_(ctx: click.Context, machine_type: str | None, data_dir: Path | None, as_json: bool) -> None:
    """The manuals the assistant searches: name, machine type, origin (shipped, fleet, added),
    format and sections."""
    from pitstop.assistant.knowledge import KnowledgeBase
    from pitstop.assistant.manuals import check_machine_type, manuals_in_use

    with _platform(ctx, data_dir) as p:
        if machine_type is not None:
            check_machine_type(p.fleet, machine_type)
        kb = KnowledgeBase.load(p.settings.data_dir / "manuals", p.fleet)
        rows = []
        for m in manuals_in_use(p.settings.data_dir / "manuals", p.fleet):
            if machine_type is not None and m.machine_type not in (machine_type, None):
                continue
            count = sum(1 for s in kb.sections if s.source == m.name and s.machine_type == m.machine_type)
            rows.append({**m.to_dict(), "sections": count})
    if as_json:
        click.echo(json.dumps({"manuals": rows, "problems": kb.problems}))
        return
    for row in rows:
        click.echo(
            f"{row['machine_type'] or '(general)':16} {row['name']:40} {row['origin']:8} "
            f"{row['format']:8} {row['sections']} section(s)"
        )
    for problem in kb.problems:
        click.echo(f"left out: {problem}", err=True)


@manuals.command("remove")
@click.argument("name")
@click.option("--machine-type", required=True, help="The machine type it was added for.")
@data_dir_option
@click.pass_context
def remove(ctx: click.Context, name: str, machine_type: str, data_dir: Path | None) -> None:
    """Delete a manual added with `pitstop manuals add`. Audited. (A fleet's manuals go with the
    fleet file: drop them from its `manuals` list and apply it.)"""
    from pitstop.assistant.manuals import remove_manual

    with _platform(ctx, data_dir) as p:
        remove_manual(p.settings.data_dir / "manuals", machine_type, name)
        p.db.audit("cli", "manual_removed", name=name, machine_type=machine_type)
    click.echo(f"{name}: removed for machine type {machine_type}")


@manuals.command("search")
@click.argument("query", nargs=-1, required=True)
@click.option("--machine-type", default=None, help="Only this type's sections (and general ones).")
@click.option("-k", "k", type=click.IntRange(min=1, max=50), default=3, show_default=True)
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def search(
    ctx: click.Context,
    query: tuple[str, ...],
    machine_type: str | None,
    k: int,
    data_dir: Path | None,
    as_json: bool,
) -> None:
    """The sections the assistant would find for QUERY, best first, with their scores and citations
    (as the `manuals_retrieval` setting searches)."""
    from pitstop.assistant.knowledge import KnowledgeBase

    with _platform(ctx, data_dir) as p:
        kb = KnowledgeBase.load(
            p.settings.data_dir / "manuals", p.fleet, retrieval=p.settings.manuals_retrieval
        )
    hits = kb.search(" ".join(query), k=k, machine_type=machine_type)
    if as_json:
        out = [{"score": round(score, 4), **s.to_dict()} for score, s in hits]
        click.echo(json.dumps({"results": out, "retrieval": kb.retrieval}))
        return
    if not hits:
        click.echo("no section matches", err=True)
    for score, s in hits:
        where = f", page {s.page}" if s.page else ""
        click.echo(f"{score:6.2f}  {s.id}  [{s.machine_type or 'general'}{where}]  {s.title}")
