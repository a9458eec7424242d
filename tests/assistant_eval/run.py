"""Ask the evaluation set through the real API: the app in process, users of each role."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from pitstop.assistant.evaluation import Report, load_cases, run_set
from pitstop.config import load_settings
from pitstop.platform import Platform
from pitstop.processor import Processor
from pitstop.web import create_app
from tests.assistant_eval.fleets import user_keys

HERE = Path(__file__).resolve().parent
SETS = {"turbofan": HERE / "turbofan.yaml", "harvesters": HERE / "harvesters.yaml"}


def evaluate(root: Path, fleet: str) -> Report:
    """Run ``fleet``'s set against the data dir ``root`` (it changes: actions are carried out)."""
    platform = Platform.open(load_settings(None, data_dir=root, assistant_rate_per_minute=100_000))
    try:
        platform.scorer.reload()
        proc = Processor(platform)
        proc.bootstrap()
        keys = user_keys(root)
        with TestClient(create_app(platform, proc)) as client:
            headers = {role: {"Authorization": f"Bearer {k['key']}"} for role, k in keys.items()}

            def call(method: str, path: str, role: str, body: dict[str, Any] | None) -> tuple[int, Any]:
                response = client.request(method, path, json=body, headers=headers[role])
                return response.status_code, response.json()

            tools = client.app.state.assistant.tools  # type: ignore[attr-defined]
            return run_set(load_cases([SETS[fleet]]), call, tools)
    finally:
        platform.close()
