"""Training on Dask: offline features on the workers, LightGBM with ``lightgbm.dask``.

The same model as ``train_rul_model``, computed elsewhere:

- The client fits what needs every reading (fill values, operating regimes: ``fit_spec``) and
  splits the machines (sorted) into parts. Each part's task reads only its machines' rows from
  the lake and computes their features and labels with the single-node functions; features are
  per machine, so the parts' rows, concatenated, are exactly the single-node rows.
- The feature matrix stays on the workers. The client fetches the per-row label vectors (a few
  numbers a row) to assign the grouped folds and to compute the interval and the metrics, and the
  feature rows the component model and the drift reference need (all rows up to
  ``REFERENCE_ROWS``, an evenly strided sample of that many beyond).
- The final and fold models are ``DaskLGBMRegressor`` fits (data-parallel across the workers that
  hold the rows); the out-of-fold predictions run on the workers, one thread a row as single-node.

With one worker holding the rows (threads as single-node), LightGBM's data-parallel learner falls
back to the serial one on the same rows in the same order: the trees are the single-node trees.
With more, each worker finds bin boundaries for its share of the features from its own rows and
bagging samples each worker's rows: a different, equally valid model (see tests/test_dask.py for
how close).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from pitstop.errors import ConfigError, ServerError
from pitstop.features import FeatureSpec
from pitstop.training.component import component_rows, fit_component_model
from pitstop.training.dask_parts import (
    Labelling,
    LakeSource,
    Part,
    build_part,
    features_of,
    labels_of,
    predict,
    stack,
)
from pitstop.training.train import (
    DEFAULT_PARAMS,
    Progress,
    Targets,
    TrainResult,
    _Data,
    _lgb_params,
    _reference,
    assemble_bundle,
    assign_folds,
    fit_spec,
)

if TYPE_CHECKING:
    import lightgbm as lgb
    from distributed import Client, Future

REFERENCE_ROWS = 1_000_000  # feature rows fetched for the drift reference; strided beyond
PARTS_PER_WORKER = 4


@contextmanager
def dask_client(
    address: str, workers: int = 2, *, processes: bool = True, timeout_s: float = 10
) -> Iterator[Client]:
    """A Dask client: of a scheduler at ``address`` (``tcp://host:8786``), or with ``"local"`` of
    an in-process ``LocalCluster`` of ``workers`` workers (threads as single-node training uses),
    closed after. Dask's own info logs are held back meanwhile (warnings still show)."""
    try:
        import lightgbm.dask  # noqa: F401
        import pandas  # noqa: F401  (lightgbm.dask needs pandas and scikit-learn)
        import sklearn  # noqa: F401
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise ConfigError(
            f"training on Dask needs dask[distributed], pandas and scikit-learn ({exc}): "
            "pip install 'pitstop[scale]'",
            code="dask_missing",
        ) from exc
    dask_logs = logging.getLogger("distributed")
    level = dask_logs.level
    dask_logs.setLevel(logging.WARNING)
    try:
        if address == "local":
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # the worker processes inherit it
            with (
                LocalCluster(
                    n_workers=workers,
                    threads_per_worker=min(2, os.cpu_count() or 1),
                    processes=processes,
                    dashboard_address="127.0.0.1:0",  # a free port: never a clash with another cluster
                    silence_logs=logging.ERROR,
                ) as cluster,
                Client(cluster) as client,
            ):
                if processes:
                    client.run(_stdout_to_stderr)  # LightGBM's network logs: stdout is for the JSON
                yield client
            return
        try:
            client = Client(address, timeout=timeout_s)
        except (OSError, TimeoutError) as exc:
            raise ServerError(
                f"cannot reach the Dask scheduler at {address}: {exc}; "
                "start one (dask scheduler) or use --dask local",
                code="dask_unreachable",
            ) from exc
        with client:
            yield client
    finally:
        dask_logs.setLevel(level)


def _stdout_to_stderr() -> None:
    sys.stdout.flush()
    os.dup2(2, 1)


def train_rul_model_dask(
    client: Client,
    source: LakeSource,
    telemetry: pl.DataFrame,
    spec: FeatureSpec,
    *,
    rul_cap: float = 125,
    folds: int = 5,
    coverage: float = 0.8,
    seed: int = 42,
    params: dict[str, Any] | None = None,
    interval_horizon: float = 150,
    failure_horizon: float = 30,
    unit_seconds: float | None = None,
    optional: frozenset[str] = frozenset(),
    progress: Progress | None = None,
) -> TrainResult:
    """``train_rul_model`` on Dask: ``telemetry`` (the readings ``source`` points at) only fits the
    spec and lists the machines; each part's rows are read from ``source`` on the workers."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as single-node (the component model fits here)
    started = time.perf_counter()
    spec = fit_spec(telemetry, spec, seed, optional)
    machines = sorted(telemetry["machine_id"].unique().to_list())
    labelling = Labelling(spec, rul_cap, failure_horizon, unit_seconds)
    workers = max(1, len(client.scheduler_info()["workers"]))
    chunks = [c.tolist() for c in np.array_split(machines, min(len(machines), workers * PARTS_PER_WORKER))]
    parts = client.map(build_part, chunks, source=source, labelling=labelling)
    data, offsets = _labels(client, parts, spec, folds, seed)

    p = {**DEFAULT_PARAMS, **(params or {})}
    rounds = int(p.pop("num_boost_round"))
    lgb_params = _lgb_params(p, seed)
    total = folds + 1
    oof = np.empty_like(data.y)
    members = []
    for k in range(folds):
        if progress:
            progress(f"fold {k + 1}/{folds}", k, total)
        train = [data.fold[a:b] != k for a, b in offsets]
        booster = _fit(client, parts, train, spec.names, lgb_params, rounds)
        test = [~t for t in train]
        oof[data.fold == k] = np.clip(_predict(client, parts, booster, test), 0.0, None)
        members.append(booster)
    if progress:
        progress("final model", folds, total)
    everything = [np.ones(b - a, bool) for a, b in offsets]
    final = _fit(client, parts, everything, spec.names, lgb_params, rounds)
    if progress:
        progress("done", total, total)

    rows = component_rows(data, rul_cap)
    classifier = fit_component_model(_rows(client, parts, offsets, rows), data, rows, folds, seed)
    ref = np.arange(0, len(data.y), max(1, -(-len(data.y) // REFERENCE_ROWS)))
    reference = _reference(_rows(client, parts, offsets, ref), spec.names, oof[ref], data.machines[ref])
    targets = Targets(rul_cap, folds, coverage, interval_horizon, failure_horizon, unit_seconds)
    bundle = assemble_bundle(data, oof, [final, *members], lgb_params, rounds, targets, classifier, reference)
    return TrainResult(
        bundle,
        len(data.y),
        len(np.unique(data.machines)),
        time.perf_counter() - started,
        censored_rows=int(np.isnan(data.uncapped).sum()),
    )


def _labels(
    client: Client, parts: list[Future], spec: FeatureSpec, folds: int, seed: int
) -> tuple[_Data, list[tuple[int, int]]]:
    """The parts' label vectors, concatenated (in machine order, as single-node), with each
    part's row range and the grouped folds."""
    labels: list[Part] = client.gather(client.map(labels_of, parts))
    ends = np.cumsum([len(p.y) for p in labels])
    offsets = [(int(a), int(b)) for a, b in zip(np.r_[0, ends[:-1]], ends, strict=True)]
    joined = {f: np.concatenate([getattr(p, f) for p in labels]) for f in Part.__dataclass_fields__}
    machines = joined["machines"]
    return (
        _Data(
            spec=spec,
            X=np.empty((len(machines), 0)),  # stays on the workers
            y=joined["y"],
            uncapped=joined["uncapped"],
            fails_within=joined["fails_within"],
            machines=machines,
            fold=assign_folds(machines, ~joined["censored"], folds, seed),
            component=joined["component"],
        ),
        offsets,
    )


def _fit(
    client: Client,
    parts: list[Future],
    rows: list[np.ndarray],
    names: list[str],
    lgb_params: dict[str, Any],
    rounds: int,
) -> lgb.Booster:
    """A ``DaskLGBMRegressor`` on the parts' ``rows`` (boolean masks), in part order."""
    import dask
    import dask.array as da
    from lightgbm.dask import DaskLGBMRegressor

    # one block per worker, its parts' rows in part order: LightGBM concatenates a worker's blocks
    # in no set order, and with bagging the row order matters
    holder = {key: sorted(ws)[0] for key, ws in client.who_has(parts).items()}
    blocks: dict[str, list[tuple[Future, np.ndarray]]] = {}
    for p, r in zip(parts, rows, strict=True):
        if r.any():
            blocks.setdefault(holder[p.key], []).append((p, r))
    X, y = [], []
    for held in blocks.values():
        n = sum(int(r.sum()) for _, r in held)
        futures, masks = [p for p, _ in held], [r for _, r in held]
        X.append(
            da.from_delayed(dask.delayed(stack)(futures, masks), shape=(n, len(names)), dtype=np.float64)
        )
        y.append(da.from_delayed(dask.delayed(stack)(futures, masks, "y"), shape=(n,), dtype=np.float64))
    params = {k: v for k, v in lgb_params.items() if k != "num_threads"}  # the workers' threads
    model = DaskLGBMRegressor(client=client, n_estimators=rounds, **params)
    # the sklearn wrapper's own n_jobs gives way to the workers' threads; the ports it finds are
    # printed: on stderr, stdout is for the command's JSON
    with warnings.catch_warnings(), redirect_stdout(sys.stderr):
        warnings.filterwarnings("ignore", "Parameter n_jobs will be ignored", UserWarning)
        model.fit(da.concatenate(X), da.concatenate(y), feature_name=names)
    booster: lgb.Booster = model.booster_
    return booster


def _predict(client: Client, parts: list[Future], booster: lgb.Booster, rows: list[np.ndarray]) -> np.ndarray:
    shared = client.scatter(booster, broadcast=True)
    kept = [(p, r) for p, r in zip(parts, rows, strict=True) if r.any()]
    out = client.gather([client.submit(predict, p, shared, r) for p, r in kept])
    return np.concatenate(out) if out else np.zeros(0)


def _rows(
    client: Client, parts: list[Future], offsets: list[tuple[int, int]], rows: np.ndarray
) -> np.ndarray:
    """The feature rows at global indices ``rows`` (sorted), fetched from the parts holding them."""
    wanted = []
    for p, (a, b) in zip(parts, offsets, strict=True):
        local = rows[(rows >= a) & (rows < b)] - a
        if len(local):
            wanted.append(client.submit(features_of, p, local))
    fetched = client.gather(wanted)
    return np.vstack(fetched) if fetched else np.zeros((0, 0))
