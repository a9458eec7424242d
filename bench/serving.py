"""Serving benchmark: our prediction API beside ``mlflow models serve``, same model, same load.

Trains one LightGBM RUL model on FD001 (the turbofan spec), registers it as our champion and saves
the same booster as an MLflow LightGBM model. Then serves it twice on loopback, one server at a
time: ``pitstop serve --no-processor`` (``POST /api/v1/predict``) and
``mlflow models serve --env-manager local`` (``POST /invocations``). The same load generator (a
minimal keep-alive HTTP/1.1 client, ``--concurrency`` connections) sends single-row requests for
``--seconds``, then 100-row requests, with rows of real FD001 test features. The two servers'
predictions are checked to agree.

    python bench/serving.py [--seconds 10] [--concurrency 4]

The last line is one JSON object: ours_rps, mlflow_rps, ours_p99_ms, mlflow_p99_ms,
ours_batch100_rows_per_s (and more).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import httpx
import numpy as np
import orjson
from loadgen import Connection

from pitstop.config import load_settings
from pitstop.features import build_features
from pitstop.platform import Platform
from pitstop.schema import TURBOFAN
from pitstop.sim import shipped
from pitstop.training.cmapss import failures, telemetry
from pitstop.training.train import train_rul_model

JSON = {"content-type": "application/json"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def load(port: int, path: str, bodies: list[bytes], seconds: float, concurrency: int) -> list[float]:
    """Send ``bodies`` round-robin on ``concurrency`` connections for ``seconds``: request latencies."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(k: int) -> None:
        conn = Connection("127.0.0.1", port)
        i = k
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                status, body = await conn.post(path, bodies[i % len(bodies)])
                if status != 200:
                    raise RuntimeError(f"{path} answered {status}: {body[:300]!r}")
                latencies.append(time.perf_counter() - started)
                i += concurrency
        finally:
            conn.close()

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return latencies


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready in {timeout} s")


def measure(
    name: str,
    port: int,
    path: str,
    single: list[bytes],
    batches: list[bytes],
    seconds: float,
    concurrency: int,
) -> dict[str, float]:
    asyncio.run(load(port, path, single, 1.0, concurrency))  # warm-up
    lat = asyncio.run(load(port, path, single, seconds, concurrency))
    rps = len(lat) / seconds
    p50, p99 = (float(np.quantile(lat, q) * 1000) for q in (0.5, 0.99))
    batch_lat = asyncio.run(load(port, path, batches, seconds, concurrency))
    rows_per_s = len(batch_lat) * 100 / seconds
    print(
        f"{name:8s} single row: {rps:8,.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms | "
        f"100-row batches: {rows_per_s:9,.0f} rows/s",
        flush=True,
    )
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "batch100_rows_per_s": rows_per_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()

    import mlflow.lightgbm

    work = Path(tempfile.mkdtemp(prefix="pitstop-bench-serving-"))
    train = telemetry(shipped("fd001_train"), "u")
    print("training one LightGBM model on FD001 ...", flush=True)
    result = train_rul_model(train, failures(train), TURBOFAN.feature_spec, folds=2)
    bundle = replace(result.bundle, boosters=result.bundle.boosters[:1])  # the one model both serve
    settings = load_settings(None, data_dir=work / "data")
    platform = Platform.open(settings)
    version = platform.registry.log_and_register(bundle, lineage={"lake_version": "bench"})
    platform.registry.set_alias("champion", version)
    platform.close()
    mlflow_model = work / "mlflow-model"
    mlflow.lightgbm.save_model(bundle.booster, str(mlflow_model))

    test = telemetry(shipped("fd001_test"), "t")
    names = bundle.spec.names
    features = build_features(test, bundle.spec).select(names).sample(2000, seed=1).to_numpy()
    rows = features.tolist()  # python floats, for JSON
    ours_single = [orjson.dumps({"rows": [dict(zip(names, row, strict=True))]}) for row in rows[:1000]]
    ours_batch = [
        orjson.dumps({"rows": [dict(zip(names, row, strict=True)) for row in rows[i : i + 100]]})
        for i in range(0, 2000, 100)
    ]

    def split(rows: np.ndarray) -> bytes:
        return orjson.dumps({"dataframe_split": {"columns": names, "data": rows.tolist()}})

    theirs_single = [split(features[i : i + 1]) for i in range(1000)]
    theirs_batch = [split(features[i : i + 100]) for i in range(0, 2000, 100)]
    # mlflow starts `uvicorn` by name: the venv's bin must be on PATH
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONWARNINGS": "ignore"}

    figures = {}
    port = free_port()
    ours = subprocess.Popen(
        [sys.executable, "-m", "pitstop", "serve", "--no-processor", "--data-dir", str(work / "data"),
         "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{port}/healthz", ours)
        got = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/predict", content=ours_batch[0], headers=JSON
        ).json()
        assert "predictions" in got, got
        ours_pred = [p["rul"] for p in got["predictions"]]
        figures["ours"] = measure(
            "ours", port, "/api/v1/predict", ours_single, ours_batch, args.seconds, args.concurrency
        )
    finally:
        ours.terminate()
        ours.wait(30)

    port = free_port()
    theirs = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(mlflow_model), "--env-manager", "local",
         "--host", "127.0.0.1", "-p", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{port}/ping", theirs)
        got = httpx.post(f"http://127.0.0.1:{port}/invocations", content=theirs_batch[0], headers=JSON).json()
        theirs_pred = np.clip(np.asarray(got["predictions"], np.float64), 0, None)
        figures["mlflow"] = measure(
            "mlflow", port, "/invocations", theirs_single, theirs_batch, args.seconds, args.concurrency
        )
    finally:
        theirs.terminate()
        theirs.wait(30)

    agree = float(np.max(np.abs(np.asarray(ours_pred) - np.round(theirs_pred, 3))))
    print(f"the two servers' predictions agree within {agree:.4f} (ours rounds to 0.001)")
    o, m = figures["ours"], figures["mlflow"]
    print(
        f"ours/mlflow: {o['rps'] / m['rps']:.1f}x the single-row requests/s, "
        f"p99 {o['p99_ms'] / m['p99_ms']:.2f} of theirs, "
        f"{o['batch100_rows_per_s'] / m['batch100_rows_per_s']:.1f}x the batch rows/s"
    )
    print(
        json.dumps(
            {
                "ours_rps": round(o["rps"], 1),
                "mlflow_rps": round(m["rps"], 1),
                "ours_p50_ms": round(o["p50_ms"], 2),
                "mlflow_p50_ms": round(m["p50_ms"], 2),
                "ours_p99_ms": round(o["p99_ms"], 2),
                "mlflow_p99_ms": round(m["p99_ms"], 2),
                "ours_batch100_rows_per_s": round(o["batch100_rows_per_s"]),
                "mlflow_batch100_rows_per_s": round(m["batch100_rows_per_s"]),
                "max_prediction_diff": agree,
                "concurrency": args.concurrency,
            }
        )
    )


if __name__ == "__main__":
    main()
