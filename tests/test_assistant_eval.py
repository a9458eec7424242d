"""The assistant's evaluation set, asked through the real chat API on both fleets built by seed.

Target (issue 18), with no LLM: at least 90% of the questions correct, no invented fact, p95
latency under 300 ms per turn. The latency is asserted with headroom for a loaded CI runner: the
answers take ~10 ms here; a p95 over 300 ms is a real regression, not noise.

The scorer itself is tested on hand-made answers: a wrong figure, a missing citation, an
invented machine, a refusal without its words each fail the question they should.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pitstop.assistant.evaluation import (
    Expect,
    Report,
    Snapshot,
    check_cite,
    check_fact,
    foreign_manuals,
    invented,
    load_cases,
)
from tests.assistant_eval.fleets import build_harvesters, live_turbofan
from tests.assistant_eval.run import SETS, evaluate

TARGET_SCORE = 0.90
TARGET_P95_MS = 300.0


@pytest.fixture(scope="module")
def reports(trained_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Report]]:
    turbofan = tmp_path_factory.mktemp("eval-turbofan") / "data"
    shutil.copytree(trained_dir, turbofan)
    live_turbofan(turbofan)
    harvesters = build_harvesters(tmp_path_factory.mktemp("eval-harvesters") / "data")
    yield {"turbofan": evaluate(turbofan, "turbofan"), "harvesters": evaluate(harvesters, "harvesters")}


def test_the_set_has_a_hundred_questions_over_both_fleets_in_every_category() -> None:
    cases = load_cases([path for paths in SETS.values() for path in paths])
    turns = [t for c in cases for t in c.turns]
    assert len(turns) >= 100
    assert {c.fleet for c in cases} == {"turbofan", "harvesters"}
    by_category = {c.category for c in cases}
    assert by_category == {"fleet", "procedure", "combined", "follow_up", "refusal", "action"}
    assert any(len(c.turns) > 1 and c.category == "follow_up" for c in cases)
    assert {c.role for c in cases} >= {"viewer", "technician", "engineer"}


@pytest.mark.heavy
def test_the_assistant_answers_the_set_at_target_with_no_invented_fact(reports: dict[str, Report]) -> None:
    report = Report([o for r in reports.values() for o in r.outcomes])
    print(report.text())  # the per-category scores and every failing answer, in the test's log
    assert report.questions >= 100
    assert report.by("category")["generated"]["questions"] >= 20  # drawn from the API, unseen
    assert report.invented == 0, [o.to_dict() for o in report.outcomes if o.invented]
    assert report.correct / report.questions >= TARGET_SCORE, report.text()
    assert report.percentile(95) < TARGET_P95_MS, report.summary()


# -- the scorer on hand-made answers ------------------------------------------------------------


def _snapshot() -> Snapshot:
    machines = {
        "eng-007": {
            "machine_id": "eng-007",
            "machine_type": "turbofan",
            "lifecycle": "active",
            "status": "at_risk",
            "predicted_rul": 12.4,
            "rul_interval": [6.6, 19.0],
            "threshold": 35.0,
            "time_unit": "cycles",
            "open_work_order_id": 4,
            "model_version": "3",
        },
        "eng-010": {
            "machine_id": "eng-010",
            "machine_type": "turbofan",
            "lifecycle": "active",
            "status": "ok",
            "predicted_rul": 90.0,
            "rul_interval": [70.0, 120.0],
            "threshold": 35.0,
            "time_unit": "cycles",
            "open_work_order_id": None,
            "model_version": "3",
        },
    }
    orders = {4: {"id": 4, "machine_id": "eng-007", "status": "open", "priority": "high", "due_at": None}}
    return Snapshot(machines, orders, {}, {"audit": [], "models": {}})._resolve()


def test_a_figure_counts_only_as_the_answer_rounds_it_and_ids_only_exactly() -> None:
    snap = _snapshot()
    assert snap.values["worst"] == "eng-007" and snap.values["ok_machine"] == "eng-010"
    right = "eng-007 has a predicted remaining useful life of 12 cycles (interval 7–19). WO-4 is open."
    assert check_fact("predicted_rul", right, snap, "eng-007", None) is None
    assert check_fact("rul_lower", right, snap, "eng-007", None) is None
    assert check_fact("open_work_order", right, snap, "eng-007", None) is None
    assert check_fact("predicted_rul", right.replace("12", "13"), snap, "eng-007", None) is not None
    assert check_fact("predicted_rul", right.replace("12 cycles", "112 cycles"), snap, "eng-007", None)
    assert check_fact("open_work_order", right.replace("WO-4", "WO-41"), snap, "eng-007", None)
    assert check_fact("machine_id", "eng-0070 is fine", snap, "eng-007", None) is not None
    assert check_fact("status", "it looks okay", snap, "eng-010", None) is not None


def test_a_citation_counts_only_with_its_kind_and_id() -> None:
    snap = _snapshot()
    sources = [{"kind": "machine", "id": "eng-010"}, {"kind": "manual", "id": "t.md#procedure-p-101"}]
    assert check_cite("machine", sources, snap, "eng-010", None) is None
    assert check_cite("machine", sources, snap, "eng-007", None) == "machine:eng-007"
    assert check_cite("manual:t.md#procedure-p-101", sources, snap, None, None) is None
    assert check_cite("manual:t.md#procedure-p-102", sources, snap, None, None) is not None
    assert check_cite("work_order", sources, snap, None, "4") == "work_order:4"


def test_a_manual_of_a_machine_type_the_fleet_does_not_have_is_a_wrong_citation() -> None:
    snap = _snapshot()
    own = {"kind": "manual", "id": "t.md#p-101", "machine_type": "turbofan"}
    general = {"kind": "manual", "id": "site.md#safety", "machine_type": None}
    other = {"kind": "manual", "id": "h.md#h-203", "machine_type": "harvester"}
    assert foreign_manuals([own, general], snap) == []
    assert foreign_manuals([own, other], snap) == ["cites h.md#h-203, a harvester manual"]


def test_an_id_the_fleet_does_not_have_is_invented_unless_the_user_named_it() -> None:
    snap = _snapshot()
    assert invented("eng-007 is at risk; see WO-4.", [], snap, "how is eng-007?", None) == []
    assert invented("eng-010 is ok.", [], snap, "which engines are ok?", None) == []
    assert invented("eng-099 is at risk.", [], snap, "which engines?", None) == ["eng-099 (no such machine)"]
    assert invented("There is no machine eng-099.", [], snap, "how is eng-099?", None) == []
    assert invented("Open: WO-77.", [], snap, "open orders?", None) == ["WO-77 (no such work order)"]


def test_a_malformed_case_is_refused_with_its_name(tmp_path: Path) -> None:
    from pitstop.errors import ValidationError

    path = tmp_path / "bad.yaml"
    path.write_text("fleet: x\ncases:\n  - id: a\n    category: fleet\n    turns:\n      - ask: no\n")
    with pytest.raises(ValidationError, match="quote yes/no"):
        load_cases([path])
    path.write_text("fleet: x\ncases:\n  - id: a\n    category: chit-chat\n    turns: []\n")
    with pytest.raises(ValidationError, match="category"):
        load_cases([path])
    assert Expect(ask="x").facts == []
