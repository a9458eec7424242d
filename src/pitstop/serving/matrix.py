"""Feature matrices from the prediction API's JSON: ``{name: number}`` rows, or ``columns`` with
``data`` rows of numbers. A missing, unknown or non-numeric value is a 422 naming every problem.

The usual request (every value a finite number, every name there) is checked in bulk: numpy turns
the values into a float (or int) matrix only if every one is a number or a boolean, and a body
without the JSON literals ``true``/``false`` holds no booleans (``maybe_bools``, from the raw body),
so no value is looked at one by one. Anything else takes the row-by-row path that names problems.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np

from pitstop.errors import ValidationError

FIX = "feature rows do not match the model's inputs; GET /api/v1/models/serving lists them"


def from_rows(
    rows: list[dict[str, Any]],
    names: list[str],
    maybe_bools: bool = True,
    name_set: frozenset[str] | None = None,
) -> np.ndarray:
    """The matrix of ``{name: number}`` rows, columns in ``names`` order (``name_set``: the names
    as a set, when the caller keeps one)."""
    expected = frozenset(names) if name_set is None else name_set
    if all(row.keys() == expected for row in rows):  # the usual case, checked in bulk
        getter = _getter(names)
        values = list(map(getter, rows)) if len(names) > 1 else [[getter(row)] for row in rows]
        out = _numbers(values, len(rows), len(names), maybe_bools)
        if out is not None:
            return out
    return _matrix_or_problems(rows, names)


def from_columns(
    columns: list[str],
    data: list[list[Any]],
    names: list[str],
    maybe_bools: bool = True,
    name_set: frozenset[str] | None = None,
) -> np.ndarray:
    """The matrix of ``data`` rows whose values are in ``columns`` order, columns in ``names`` order."""
    if columns != names:
        _check_columns(columns, names, frozenset(names) if name_set is None else name_set)
    out = _numbers(data, len(data), len(columns), maybe_bools)
    if out is None:
        out = _columns_or_problems(columns, data)
    if columns != names:
        where = {c: i for i, c in enumerate(columns)}
        out = np.ascontiguousarray(out[:, [where[n] for n in names]])
    return out


def _check_columns(columns: list[str], names: list[str], name_set: frozenset[str]) -> None:
    """A 422 unless ``columns`` name every feature once (in any order)."""
    given = set(columns)
    if len(given) == len(columns) and given == name_set:
        return
    missing = [n for n in names if n not in given]
    problem = {
        "columns": True,
        "missing": missing[:10],
        "missing_count": len(missing),
        "unknown": sorted(given - set(names)),
        "duplicated": sorted({c for c in columns if columns.count(c) > 1}),
    }
    raise ValidationError(FIX, code="invalid_features", details=[problem])


def _numbers(values: Any, n: int, k: int, maybe_bools: bool) -> np.ndarray | None:
    """``values`` as an n × k float matrix when every value is a finite number (else None)."""
    if maybe_bools and {type(v) for vs in values for v in vs} - {float, int}:  # bools, strings, nulls
        return None
    try:
        out = np.array(values)
    except (ValueError, TypeError, OverflowError):  # ragged rows
        return None
    if out.shape != (n, k) or out.dtype.kind not in "fi":  # strings, nulls, lists, huge ints
        return None
    out = out.astype(np.float64, copy=False)
    return out if np.isfinite(out).all() else None


def _columns_or_problems(columns: list[str], data: list[list[Any]]) -> np.ndarray:
    rows = []
    problems = []
    for i, values in enumerate(data):
        if len(values) != len(columns):
            problems.append({"index": i, "values": len(values), "expected": len(columns)})
        else:
            rows.append(dict(zip(columns, values, strict=True)))
    if problems:
        raise ValidationError(FIX, code="invalid_features", details=problems)
    return _matrix_or_problems(rows, columns)


def _matrix_or_problems(rows: list[dict[str, Any]], names: list[str]) -> np.ndarray:
    """The row-by-row path: the matrix, or a 422 naming every problem."""
    out = np.empty((len(rows), len(names)))
    problems = []
    for i, row in enumerate(rows):
        missing = [n for n in names if n not in row]
        unknown = sorted(set(row) - set(names))
        bad = [
            n
            for n in names
            if n in row
            and (isinstance(row[n], bool) or not isinstance(row[n], int | float) or not math.isfinite(row[n]))
        ]
        if missing or unknown or bad:
            problems.append(
                {
                    "index": i,
                    "missing": missing[:10],
                    "missing_count": len(missing),
                    "unknown": unknown,
                    "invalid": bad,
                }
            )
            continue
        out[i] = [row[n] for n in names]
    if problems:
        raise ValidationError(FIX, code="invalid_features", details=problems)
    return out


_GETTERS: dict[int, tuple[list[str], Any]] = {}


def _getter(names: list[str]) -> Any:
    """``operator.itemgetter(*names)``, kept per names list (a spec's list lives as long as it)."""
    found = _GETTERS.get(id(names))
    if found is None or found[0] is not names:
        if len(_GETTERS) > 64:
            _GETTERS.clear()
        found = _GETTERS[id(names)] = (names, operator.itemgetter(*names))
    return found[1]
