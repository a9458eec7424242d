"""Serving benchmark: our prediction API beside ``mlflow models serve``, same model, same load.

Trains one LightGBM RUL model on FD001 (the turbofan spec), registers it as our champion and saves
the same booster as an MLflow LightGBM model. Then serves it twice on loopback, one server at a
time: ``pitstop serve --no-processor`` (``POST /api/v1/predict``, with a viewer's API key) and
``mlflow models serve --env-manager local`` (``POST /invocations``). The same load generator (a
minimal keep-alive HTTP/1.1 client, ``--concurrency`` connections) sends single-row requests for
``--seconds``, then 100-row requests, with rows of real FD001 test features: ours as row dicts
(``{"rows": [...]}``), as JSON columns (``{"columns": [...], "data": [[...]]}``, our counterpart
of MLflow's ``dataframe_split``) and as Arrow IPC streams (``application/vnd.apache.arrow.stream``:
one column of feature vectors with the names in its metadata, and a table of one column per
feature); theirs as ``dataframe_split`` (MLflow's scoring server takes JSON or CSV, not Arrow).
The floor: the same 100-row matrices through ``Booster.predict`` in this process (the better of
LightGBM's default threads and one thread). Then the real champion, the ensemble of every member
the training made (the model fit on all rows and the fold models, averaged), is served and
measured beside its own floor (the sum of its members' ``Booster.predict``). The servers'
predictions are checked to agree, and every form of ours to answer alike.

    python bench/serving.py [--seconds 10] [--concurrency 4]

The last line is one JSON object: ours_rps, mlflow_rps, ours_p99_ms, mlflow_p99_ms,
ours_batch_rows_per_s (Arrow vectors: our fastest batch form), ours_batch_json_rows_per_s (JSON
columns), ours_batch_arrow_table_rows_per_s, mlflow_batch_rows_per_s, floor_batch_rows_per_s,
ours_batch100_rows_per_s (row dicts), the ensemble's figures (and more).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import httpx
import numpy as np
import orjson
import pyarrow as pa
from loadgen import Connection

from pitstop.config import load_settings
from pitstop.features import build_features
from pitstop.platform import Platform
from pitstop.schema import TURBOFAN
from pitstop.serving.matrix import ARROW_STREAM, FEATURES_KEY
from pitstop.sim import shipped
from pitstop.training.cmapss import failures, telemetry
from pitstop.training.train import train_rul_model

JSON = {"content-type": "application/json"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def load(
    port: int,
    path: str,
    bodies: list[bytes],
    seconds: float,
    concurrency: int,
    token: str | None = None,
    content_type: str = "application/json",
) -> list[float]:
    """Send ``bodies`` round-robin on ``concurrency`` connections for ``seconds``: request latencies."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(k: int) -> None:
        conn = Connection("127.0.0.1", port)
        i = k
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                status, body = await conn.post(path, bodies[i % len(bodies)], token, content_type)
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
    batches: dict[str, list[bytes]],
    seconds: float,
    concurrency: int,
    token: str | None = None,
) -> dict[str, float]:
    """Single-row requests, then each form of 100-row requests: req/s, latencies, rows/s."""
    asyncio.run(load(port, path, single, 1.0, concurrency, token))  # warm-up
    lat = asyncio.run(load(port, path, single, seconds, concurrency, token))
    rps = len(lat) / seconds
    p50, p99 = (float(np.quantile(lat, q) * 1000) for q in (0.5, 0.99))
    out = {"rps": rps, "p50_ms": p50, "p99_ms": p99}
    line = f"{name:14s} single row: {rps:8,.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms"
    for form, bodies in batches.items():
        kind = ARROW_STREAM if form.startswith("arrow") else "application/json"
        batch_lat = asyncio.run(load(port, path, bodies, seconds, concurrency, token, kind))
        out[form] = len(batch_lat) * 100 / seconds
        line += f" | 100-row {form}: {out[form]:9,.0f} rows/s"
    print(line, flush=True)
    return out


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def arrow_vectors(matrix: np.ndarray, names: list[str]) -> bytes:
    """100 rows as an Arrow stream of one column of feature vectors, the names in its metadata."""
    column = pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), len(names))
    schema = pa.schema([pa.field("features", column.type)], metadata={FEATURES_KEY: orjson.dumps(names)})
    return _ipc(pa.Table.from_arrays([column], schema=schema))


def arrow_table(matrix: np.ndarray, names: list[str]) -> bytes:
    """100 rows as an Arrow stream of one column per feature (what a data frame's ``to_arrow`` gives)."""
    return _ipc(pa.table({n: matrix[:, j] for j, n in enumerate(names)}))


def floor(boosters: list[Any], matrices: list[np.ndarray], seconds: float) -> dict[str, float]:
    """Rows/s of the members' summed ``Booster.predict`` over ``matrices`` in this process, with
    LightGBM's default threads and with one thread."""
    out = {}
    for label, kwargs in (("default", {}), ("one_thread", {"num_threads": 1})):
        for m in matrices[:2]:
            sum(b.predict(m, **kwargs) for b in boosters)  # warm-up
        rows, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            for m in matrices:
                sum(b.predict(m, **kwargs) for b in boosters)
                rows += len(m)
        out[label] = rows / (time.perf_counter() - started)
    return out


def serve_ours(work: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pitstop", "serve", "--no-processor", "--data-dir", str(work / "data"),
         "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_ready(f"http://127.0.0.1:{port}/healthz", proc)
    return proc, port


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()

    import mlflow.lightgbm

    from pitstop.web.users import Users

    work = Path(tempfile.mkdtemp(prefix="pitstop-bench-serving-"))
    train = telemetry(shipped("fd001_train"), "u")
    print("training one LightGBM model on FD001 ...", flush=True)
    result = train_rul_model(train, failures(train), TURBOFAN.feature_spec, folds=2)
    ensemble = result.bundle
    bundle = replace(ensemble, boosters=ensemble.boosters[:1])  # the one model both serve
    settings = load_settings(None, data_dir=work / "data")
    platform = Platform.open(settings)
    version = platform.registry.log_and_register(bundle, lineage={"lake_version": "bench"})
    ensemble_version = platform.registry.log_and_register(ensemble, lineage={"lake_version": "bench"})
    platform.registry.set_alias("champion", version)
    users = Users(platform.db)
    users.add("bench", "viewer")
    token = users.create_key("bench")  # a client as the API expects one: a viewer's API key
    platform.close()
    mlflow_model = work / "mlflow-model"
    mlflow.lightgbm.save_model(bundle.booster, str(mlflow_model))

    test = telemetry(shipped("fd001_test"), "t")
    names = bundle.spec.names
    features = build_features(test, bundle.spec).select(names).sample(2000, seed=1).to_numpy()
    rows = features.tolist()  # python floats, for JSON
    matrices = [np.ascontiguousarray(features[i : i + 100]) for i in range(0, 2000, 100)]
    ours_single = [orjson.dumps({"rows": [dict(zip(names, row, strict=True))]}) for row in rows[:1000]]
    ours_batches = {
        "rows": [
            orjson.dumps({"rows": [dict(zip(names, row, strict=True)) for row in rows[i : i + 100]]})
            for i in range(0, 2000, 100)
        ],
        "columns": [orjson.dumps({"columns": names, "data": m.tolist()}) for m in matrices],
        "arrow": [arrow_vectors(m, names) for m in matrices],
        "arrow_table": [arrow_table(m, names) for m in matrices],
    }

    def split(rows: np.ndarray) -> bytes:
        return orjson.dumps({"dataframe_split": {"columns": names, "data": rows.tolist()}})

    theirs_single = [split(features[i : i + 1]) for i in range(1000)]
    theirs_batch = {"split": [split(m) for m in matrices]}
    # mlflow starts `uvicorn` by name: the venv's bin must be on PATH
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONWARNINGS": "ignore"}
    auth = {**JSON, "Authorization": f"Bearer {token}"}

    floors = {"one": floor(bundle.boosters, matrices, min(args.seconds, 5.0))}
    floors["ensemble"] = floor(ensemble.boosters, matrices, min(args.seconds, 5.0))
    for which, f in floors.items():
        print(
            f"floor ({which}: Booster.predict in process, 100-row matrices): "
            f"{f['default']:9,.0f} rows/s default threads, {f['one_thread']:9,.0f} one thread",
            flush=True,
        )

    figures = {}
    ours, port = serve_ours(work, env)
    try:
        url = f"http://127.0.0.1:{port}/api/v1/predict"
        got = httpx.post(url, content=ours_batches["rows"][0], headers=auth).json()
        assert "predictions" in got, got
        ours_pred = [p["rul"] for p in got["predictions"]]
        columnar = httpx.post(url, content=ours_batches["columns"][0], headers=auth).json()["predictions"]
        assert columnar == got["predictions"], "the columnar form answered otherwise"
        arrow_auth = {"Authorization": f"Bearer {token}", "content-type": ARROW_STREAM}
        for form in ("arrow", "arrow_table"):
            answer = httpx.post(url, content=ours_batches[form][0], headers=arrow_auth).json()["predictions"]
            assert answer == got["predictions"], f"the {form} form answered otherwise"
        figures["ours"] = measure(
            "ours", port, "/api/v1/predict", ours_single, ours_batches, args.seconds, args.concurrency, token
        )
    finally:
        stop(ours)

    platform = Platform.open(settings)
    platform.registry.set_alias("champion", ensemble_version)
    platform.close()
    ours, port = serve_ours(work, env)
    try:
        url = f"http://127.0.0.1:{port}/api/v1/predict"
        got = httpx.post(url, content=ours_batches["columns"][0], headers=auth).json()
        assert got["predictions"][0]["model"]["version"] == ensemble_version, got
        expected = np.round(ensemble.predict(matrices[0])[0], 3)
        ensemble_diff = float(np.max(np.abs(np.array([p["rul"] for p in got["predictions"]]) - expected)))
        figures["ensemble"] = measure(
            f"ours ({len(ensemble.boosters)} mem)",
            port,
            "/api/v1/predict",
            ours_single,
            {"columns": ours_batches["columns"], "arrow": ours_batches["arrow"]},
            args.seconds,
            args.concurrency,
            token,
        )
    finally:
        stop(ours)

    port = free_port()
    theirs = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(mlflow_model), "--env-manager", "local",
         "--host", "127.0.0.1", "-p", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{port}/ping", theirs)
        got = httpx.post(
            f"http://127.0.0.1:{port}/invocations", content=theirs_batch["split"][0], headers=JSON
        ).json()
        theirs_pred = np.clip(np.asarray(got["predictions"], np.float64), 0, None)
        figures["mlflow"] = measure(
            "mlflow", port, "/invocations", theirs_single, theirs_batch, args.seconds, args.concurrency
        )
    finally:
        stop(theirs)

    agree = float(np.max(np.abs(np.asarray(ours_pred) - np.round(theirs_pred, 3))))
    print(f"the two servers' predictions agree within {agree:.4f} (ours rounds to 0.001)")
    print(f"the ensemble's served predictions agree with ModelBundle.predict within {ensemble_diff:.4f}")
    o, m, e = figures["ours"], figures["mlflow"], figures["ensemble"]
    best_floor = max(floors["one"].values())
    ensemble_floor = max(floors["ensemble"].values())
    print(
        f"ours/mlflow: {o['rps'] / m['rps']:.1f}x the single-row requests/s, "
        f"p99 {o['p99_ms'] / m['p99_ms']:.2f} of theirs, "
        f"{o['arrow'] / m['split']:.1f}x the batch rows/s "
        f"(Arrow vectors; JSON columns {o['columns'] / m['split']:.1f}x, "
        f"row dicts {o['rows'] / m['split']:.1f}x); "
        f"batches at {o['arrow'] / best_floor:.2f} of the floor (Arrow table "
        f"{o['arrow_table'] / best_floor:.2f}, JSON columns {o['columns'] / best_floor:.2f}, "
        f"row dicts {o['rows'] / best_floor:.2f}); "
        f"the ensemble's at {e['arrow'] / ensemble_floor:.2f} of its own "
        f"(JSON columns {e['columns'] / ensemble_floor:.2f})"
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
                "ours_batch_rows_per_s": round(o["arrow"]),
                "ours_batch_arrow_table_rows_per_s": round(o["arrow_table"]),
                "ours_batch_json_rows_per_s": round(o["columns"]),
                "mlflow_batch_rows_per_s": round(m["split"]),
                "floor_batch_rows_per_s": round(best_floor),
                "floor_batch_rows_per_s_default_threads": round(floors["one"]["default"]),
                "floor_batch_rows_per_s_one_thread": round(floors["one"]["one_thread"]),
                "ours_batch100_rows_per_s": round(o["rows"]),
                "mlflow_batch100_rows_per_s": round(m["split"]),
                "ensemble_members": len(ensemble.boosters),
                "ours_ensemble_rps": round(e["rps"], 1),
                "ours_ensemble_p99_ms": round(e["p99_ms"], 2),
                "ours_ensemble_batch_rows_per_s": round(e["arrow"]),
                "ours_ensemble_batch_json_rows_per_s": round(e["columns"]),
                "floor_ensemble_batch_rows_per_s": round(ensemble_floor),
                "max_prediction_diff": agree,
                "ensemble_max_prediction_diff": ensemble_diff,
                "concurrency": args.concurrency,
            }
        )
    )
    shutil.rmtree(work, ignore_errors=True)  # the data dir, registry and MLflow copy of this run


if __name__ == "__main__":
    main()
