"""A dataset validation report: its findings, verdict, JSON and a self-contained HTML page."""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from typing import Any

SECTIONS = ("schema", "ranges", "gaps", "labels")
VERDICTS = ("ok", "warnings", "errors")


@dataclass(frozen=True)
class Problem:
    """One finding: ``severity`` ``warning`` or ``error``; ``blocking`` when it makes training
    impossible (the others never stop training)."""

    section: str
    severity: str
    code: str
    message: str
    blocking: bool = False


@dataclass
class ValidationReport:
    """What a dataset (a machine type's readings and events) looks like, and what is wrong with it."""

    dataset: str  # "training" or "import"
    machine_type: str
    summary: dict[str, Any] = field(default_factory=dict)
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def add(self, section: str, severity: str, code: str, message: str, blocking: bool = False) -> None:
        self.problems.append(Problem(section, severity, code, message, blocking))

    @property
    def verdict(self) -> str:
        severities = {p.severity for p in self.problems}
        return "errors" if "error" in severities else "warnings" if severities else "ok"

    @property
    def trainable(self) -> bool:
        return not any(p.blocking for p in self.problems)

    def codes(self) -> set[str]:
        return {p.code for p in self.problems}

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "machine_type": self.machine_type,
            "verdict": self.verdict,
            "trainable": self.trainable,
            "summary": self.summary,
            "problems": [asdict(p) for p in self.problems],
            "sections": self.sections,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def to_html(self) -> str:
        return render_html(self)


_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:70em;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}
th{background:#f4f4f4}.ok{color:#176f2c}.warnings,.warning{color:#8a5a00}.errors,.error{color:#b00020}
.verdict{font-size:1.2em;font-weight:600}code{background:#f4f4f4;padding:0 .2em}
"""


def render_html(report: ValidationReport) -> str:
    """One page, no scripts, no external resources."""
    e = html.escape
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Dataset validation: {e(report.machine_type)} ({e(report.dataset)})</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Dataset validation: {e(report.machine_type)} ({e(report.dataset)})</h1>",
        f"<p class='verdict {report.verdict}'>Verdict: {report.verdict}</p>",
        "<p>"
        + (
            "Training is possible."
            if report.trainable
            else "<span class='error'>Training is impossible on this dataset</span> (see blocking problems)."
        )
        + "</p>",
        _table(report.summary),
        "<h2>Problems</h2>",
    ]
    if report.problems:
        rows = "".join(
            f"<tr class='{e(p.severity)}'><td>{e(p.severity)}{' (blocking)' if p.blocking else ''}</td>"
            f"<td>{e(p.section)}</td><td><code>{e(p.code)}</code></td><td>{e(p.message)}</td></tr>"
            for p in report.problems
        )
        parts.append(
            f"<table><tr><th>severity</th><th>section</th><th>code</th><th>message</th></tr>{rows}</table>"
        )
    else:
        parts.append("<p class='ok'>None.</p>")
    for name in SECTIONS:
        facts = report.sections.get(name)
        if facts is None:
            continue
        parts.append(f"<h2>{e(name.capitalize())}</h2>")
        scalars = {k: v for k, v in facts.items() if not isinstance(v, list | dict)}
        parts.append(_table(scalars))
        for key, value in facts.items():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                parts.append(f"<h3>{e(key.replace('_', ' '))}</h3>{_rows(value)}")
            elif isinstance(value, dict) and value:
                parts.append(f"<h3>{e(key.replace('_', ' '))}</h3>{_table(value)}")
            elif isinstance(value, list) and value:
                parts.append(f"<p>{e(key.replace('_', ' '))}: {e(', '.join(map(str, value)))}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return html.escape(str(value) if not isinstance(value, dict | list) else json.dumps(value, default=str))


def _table(facts: dict[str, Any]) -> str:
    if not facts:
        return ""
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_cell(v)}</td></tr>" for k, v in facts.items())
    return f"<table>{rows}</table>"


def _rows(records: list[dict[str, Any]]) -> str:
    keys = list(dict.fromkeys(k for r in records for k in r))
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(r.get(k, ''))}</td>" for k in keys) + "</tr>" for r in records
    )
    return f"<table><tr>{head}</tr>{body}</table>"
