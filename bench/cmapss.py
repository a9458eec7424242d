"""C-MAPSS benchmark: our RUL model on FD001 over five seeds, beside the published results.

Trains from scratch on the training file for each seed (``pitstop benchmark cmapss``: features,
grouped cross-validation, conformal interval, the fold-and-final ensemble) and scores the last cycle
of every test engine against its true, uncapped RUL.

    python bench/cmapss.py [--data ../shared/data/cmapss] [--subset FD001] [--seeds 0 1 2 3 4]

The last line is one JSON object: rmse_mean, rmse_sd, score_mean, coverage_mean,
train_seconds_mean (and more).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pitstop.training.cmapss import benchmark

PUBLISHED = [  # FD001 test set: RMSE, PHM08 score
    ("CNN (Babu et al., 2016)", 18.45, 1287),
    ("LSTM (Zheng et al., 2017)", 16.14, 338),
    ("DCNN (Li et al., 2018)", 12.61, 274),
    ("MS-DCNN (Li et al., 2020)", 11.44, 196),
    ("STAR transformer (2024)", 10.61, 169),
]
HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    shared = [HERE.parent.parent / "shared", Path("/work/shared")]
    default = next((r / "data" / "cmapss" for r in shared if (r / "data" / "cmapss").is_dir()), shared[0])
    parser.add_argument("--data", type=Path, default=default, help="folder with train/test/RUL_FD00x.txt")
    parser.add_argument("--subset", default="FD001")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    files = [args.data / f"{kind}_{args.subset}.txt" for kind in ("train", "test", "RUL")]
    runs = []
    for seed in args.seeds:
        result = benchmark(*files, seed=seed)
        runs.append(result)
        print(
            f"seed {seed}: RMSE {result['rmse']:.2f}, score {result['phm08_score']:.0f}, "
            f"coverage {result['interval_coverage']:.0%}, trained in {result['train_seconds']:.1f} s",
            flush=True,
        )

    def stat(key: str) -> tuple[float, float]:
        values = [r[key] for r in runs]
        return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    rmse, rmse_sd = stat("rmse")
    score, score_sd = stat("phm08_score")
    coverage, _ = stat("interval_coverage")
    seconds, _ = stat("train_seconds")
    print(f"\n{args.subset} test set, last cycle of each engine against the true RUL")
    print(f"{'model':34s} {'RMSE':>14s} {'PHM08 score':>14s}")
    for name, r, s in PUBLISHED if args.subset == "FD001" else []:
        print(f"{name:34s} {r:14.2f} {s:14.0f}")
    print(
        f"{'Pitstop (LightGBM, ' + str(len(runs)) + ' seeds)':34s} {rmse:8.2f} ± {rmse_sd:4.2f} "
        f"{score:8.0f} ± {score_sd:3.0f}"
    )
    print(f"80% interval coverage {coverage:.0%}; training {seconds:.1f} s per model, no GPU")
    print(
        json.dumps(
            {
                "rmse_mean": round(rmse, 3),
                "rmse_sd": round(rmse_sd, 3),
                "score_mean": round(score, 1),
                "score_sd": round(score_sd, 1),
                "coverage_mean": round(coverage, 3),
                "train_seconds_mean": round(seconds, 2),
                "seeds": args.seeds,
                "subset": args.subset,
            }
        )
    )


if __name__ == "__main__":
    main()
