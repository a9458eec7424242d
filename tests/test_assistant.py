from __future__ import annotations

import json

from click.testing import CliRunner
from fastapi.testclient import TestClient

from pitstop.assistant import Assistant, KnowledgeBase
from pitstop.cli import cli
from pitstop.platform import Platform
from pitstop.processor import Processor
from pitstop.web import create_app
from tests.conftest import admin_headers
from tests.test_api import post, readings


def _score(platform: Platform, client: TestClient, machine: str, unit: int) -> None:
    tokens = json.loads((platform.settings.data_dir / "demo-devices.json").read_text())
    proc: Processor = client.app.state.processor  # type: ignore[attr-defined]
    rows = readings(machine, unit, 0, 10_000)
    for i in range(0, len(rows), 100):
        assert post(client, tokens[machine], rows[i : i + 100]).status_code == 202
        proc.run_once()


def test_answers_cite_fleet_state_and_manuals(trained: Platform) -> None:
    proc = Processor(trained)
    proc.bootstrap()
    with TestClient(create_app(trained, proc), headers=admin_headers(trained)) as client:
        _score(trained, client, "eng-031", 31)
        _score(trained, client, "eng-002", 2)
        assistant = Assistant(trained.db, trained.policy, KnowledgeBase.shipped())

        answer = assistant.ask("How is eng-031 doing?")
        assert "eng-031" in answer.text and "predicted remaining useful life" in answer.text
        assert {"kind": "machine", "id": "eng-031", "url": "/machines/eng-031"} in answer.sources
        assert any(s["kind"] == "work_order" for s in answer.sources)  # it crossed the threshold

        # "engine 2" resolves to the machine id; the numbers match the API's
        answer = assistant.ask("what is the RUL of engine 2")
        api = client.get("/api/v1/machines/eng-002").json()
        assert f"{api['predicted_rul']:.0f} cycles" in answer.text

        answer = assistant.ask("Which machines are at risk?")
        assert answer.text.index("eng-031") < answer.text.index("eng-002")  # lowest RUL first

        answer = assistant.ask("static pressure s11 rising and fuel flow ratio falling, what does it mean?")
        assert answer.sources[0]["kind"] == "manual"
        assert "HPC" in answer.sources[0]["title"]

        answer = assistant.ask("how do I do a water wash?")
        assert answer.sources[0]["id"].endswith("#procedure-p-102-hpc-water-wash")

        assert assistant.ask("xyzzy plugh").sources == []
        assert assistant.ask("status of zzz-999").text == "There is no machine zzz-999 in the fleet."

        r = client.post("/api/v1/assistant/ask", json={"question": "open work orders?"})
        assert r.status_code == 200 and r.json()["sources"][0]["kind"] == "work_order"
        bad = client.post("/api/v1/assistant/ask", json={"question": ""})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"


def test_ask_command(trained: Platform) -> None:
    result = CliRunner().invoke(
        cli, ["ask", "--data-dir", str(trained.settings.data_dir), "--json", "borescope inspection steps"]
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.output.strip().splitlines()[-1])
    assert body["sources"][0]["title"].startswith("Procedure P-101")


def test_extra_manuals_are_searched(tmp_path: object) -> None:
    kb = KnowledgeBase.from_markdown(
        {"harvester.md": "# H\n\n## Header belt tension\n\nCheck the header belt tension weekly."}
    )
    [(score, section)] = kb.search("belt tension")
    assert score > 0 and section.source == "harvester.md"
