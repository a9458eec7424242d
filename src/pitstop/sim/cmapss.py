"""NASA C-MAPSS turbofan data: the raw text format and the copy of FD001 shipped in the package."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import polars as pl

SETTINGS = ["setting1", "setting2", "setting3"]
SENSORS = [f"s{i}" for i in range(1, 22)]
COLUMNS = ["unit", "cycle", *SETTINGS, *SENSORS]


def read_cmapss(path: str | Path) -> pl.DataFrame:
    """Read one C-MAPSS text file (train_FD00x or test_FD00x) into unit, cycle, settings, sensors."""
    rows = []
    with open(path, encoding="ascii") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != len(COLUMNS):
                raise ValueError(
                    f"{path}:{lineno}: expected {len(COLUMNS)} columns in C-MAPSS format, found {len(parts)}"
                )
            rows.append([float(p) for p in parts])
    frame = pl.DataFrame(rows, schema=COLUMNS, orient="row")
    return frame.with_columns(pl.col("unit").cast(pl.Int64), pl.col("cycle").cast(pl.Int64))


def read_rul(path: str | Path) -> pl.DataFrame:
    """Read a RUL_FD00x file: the true remaining life of each test unit after its last cycle."""
    values = [int(line.split()[0]) for line in Path(path).read_text().splitlines() if line.strip()]
    return pl.DataFrame({"unit": list(range(1, len(values) + 1)), "rul": values})


def shipped(name: str) -> pl.DataFrame:
    """Load a frame shipped in ``pitstop/data`` (``fd001_train``, ``fd001_test``, ``fd001_rul``)."""
    ref = resources.files("pitstop.data").joinpath(f"{name}.parquet")
    with resources.as_file(ref) as path:
        return pl.read_parquet(path)
