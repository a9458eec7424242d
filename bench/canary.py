"""The progressive canary's steps on a good and on a worse challenger, through the real processor.

A turbofan fleet of twelve machines (``tests/canaryfleet.py``) lives and fails round after round;
the champion is the demo's model. The good challenger is the champion's model registered again
(as good, by construction); the worse one is a three-tree model, barely off the mean. Schedule
25 → 50 → 100, each step at least two failures on the challenger's arm, no minimum time. Each
case prints its steps with the numbers that decided them (MAE at failures per arm, Welch's p,
the failures per arm the test needs to detect a fifth of the champion's MAE).

    python bench/canary.py [--rounds 4]

The last line is one JSON object: per case, its steps and the final champion.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.canaryfleet

from tests.canaryfleet import Fleet, canary_steps, same_model, worse_model

from pitstop.config import load_settings
from pitstop.platform import Platform
from pitstop.processor import Processor

CANARY = {
    "deployment": "canary",
    "canary_schedule": "25,50,100",
    "canary_step_min_s": 0,
    "canary_step_failures": 2,
    "canary_check_s": 0,
    "serving_poll_s": 0,
}


def trained(root: Path) -> Path:
    from pitstop.demo import ensure_champion, ensure_live_fleet, seed_last_season

    data = root / "trained"
    p = Platform.open(load_settings(None, data_dir=data))
    try:
        seed_last_season(p, echo=lambda _: None)
        ensure_live_fleet(p)
        ensure_champion(p, echo=lambda _: None)
    finally:
        p.close()
    return data


def run_case(source: Path, root: Path, name: str, rounds: int) -> dict[str, Any]:
    data = root / name
    shutil.copytree(source, data)
    platform = Platform.open(load_settings(None, data_dir=data, **CANARY))
    try:
        champion = platform.registry.alias_version("champion")
        challenger = same_model(platform) if name == "good" else worse_model(platform)
        proc = Processor(platform)
        proc.bootstrap()
        fleet = Fleet(platform, proc)
        started = time.perf_counter()
        for r in range(rounds):
            fleet.life(r)
            if canary_steps(platform)[-1]["action"] in ("canary_completed", "canary_rolled_back"):
                break
        steps = [_step(s) for s in canary_steps(platform)]
        return {
            "champion_before": champion,
            "challenger": challenger,
            "champion_after": platform.registry.alias_version("champion"),
            "rounds": r + 1,
            "seconds": round(time.perf_counter() - started, 1),
            "steps": steps,
        }
    finally:
        platform.close()


def _step(s: dict[str, Any]) -> dict[str, Any]:
    out = {"action": s["action"], "from_percent": s.get("from_percent"), "to_percent": s.get("to_percent")}
    errors = (s.get("evidence") or {}).get("mae_at_failure")
    if errors:
        out.update(
            mae_champion=errors["champion"],
            mae_challenger=errors["challenger"],
            p_value=errors["p_value"],
            verdict=errors["verdict"],
            failures=errors["n"],
            n_needed=errors["n_needed"],
            alpha=s["evidence"].get("alpha"),
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = trained(root)
        cases = {name: run_case(source, root, name, args.rounds) for name in ("good", "worse")}
    for name, case in cases.items():
        print(
            f"{name} challenger (version {case['challenger']}), {case['rounds']} rounds, {case['seconds']} s:"
        )
        for s in case["steps"]:
            numbers = (
                f"  MAE at failures {s['mae_challenger']} vs champion {s['mae_champion']}, "
                f"p={s['p_value']} at alpha {s['alpha']} ({s['verdict']}), "
                f"failures {s['failures']}, n needed {s['n_needed']}"
                if "verdict" in s
                else ""
            )
            print(f"  {s['action']}: {s['from_percent']}% -> {s['to_percent']}%{numbers}")
        print(f"  champion: {case['champion_before']} -> {case['champion_after']}")
    print(json.dumps(cases))


if __name__ == "__main__":
    main()
