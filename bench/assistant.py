"""The maintenance assistant's evaluation set: score and latency, with no LLM.

Builds both fleets by seed (``tests/assistant_eval/fleets.py``: the turbofan demo replayed for
120 one-second batches, a small simulated harvester fleet with a trained champion), then asks
questions generated from the API's lists and every conversation of
``tests/assistant_eval/*.yaml`` through the real chat API as users of each role, and scores each
answer by its facts and citations (``pitstop.assistant.evaluation``).
The target (issue 18): at least 90% correct, no invented fact, p95 latency under 300 ms.

    python bench/assistant.py [--keep DIR] [--failures FILE] [--outcomes FILE] [--fleet NAME]

``--keep DIR`` builds the fleets into DIR once and reuses them on later runs (each run asks on a
copy: the set's actions change the fleet). ``--failures FILE`` writes the failing answers as
Markdown, ``--outcomes FILE`` every question's outcome as JSON (question, answer, sources,
what was missing or invented, milliseconds). The last line is one JSON object: questions,
correct, score, invented, p50_ms, p95_ms, and the same per category and per fleet.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.assistant_eval

from tests.assistant_eval.fleets import build_harvesters, build_turbofan
from tests.assistant_eval.run import evaluate

from pitstop.assistant.evaluation import Report

BUILDERS = {"turbofan": build_turbofan, "harvesters": build_harvesters}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="build the fleets here once and reuse them")
    parser.add_argument("--failures", type=Path, help="write the failing answers here (Markdown)")
    parser.add_argument("--outcomes", type=Path, help="write every question's outcome here (JSON)")
    parser.add_argument("--fleet", choices=sorted(BUILDERS), action="append", help="only this fleet")
    args = parser.parse_args()
    fleets = args.fleet or sorted(BUILDERS, reverse=True)
    with tempfile.TemporaryDirectory() as scratch:
        built = args.keep or Path(scratch) / "built"
        outcomes = []
        for name in fleets:
            source = built / name
            if not (source / "eval-users.json").exists():
                shutil.rmtree(source, ignore_errors=True)
                started = time.perf_counter()
                BUILDERS[name](source, echo=lambda line: print(line, flush=True))
                print(f"{name}: built in {time.perf_counter() - started:.0f} s", flush=True)
            copy = Path(scratch) / "asked" / name
            shutil.copytree(source, copy)
            outcomes += evaluate(copy, name).outcomes
    report = Report(outcomes)
    print(report.text())
    if args.failures:
        args.failures.write_text(report.markdown(), encoding="utf-8")
    if args.outcomes:
        every = [o.to_dict() for o in report.outcomes]
        args.outcomes.write_text(json.dumps(every, indent=1), encoding="utf-8")
    summary = report.summary()
    line = {k: v for k, v in summary.items() if k not in ("by_category", "by_fleet")}
    line.update({f"{k}_score": v["score"] for k, v in summary["by_category"].items()})
    line.update({"by_category": summary["by_category"], "by_fleet": summary["by_fleet"]})
    print(json.dumps(line))


if __name__ == "__main__":
    main()
