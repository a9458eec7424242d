"""Feature matrices from the prediction API's bodies: JSON ``{name: number}`` rows, or ``columns``
with ``data`` rows of numbers, or an Arrow IPC stream (``from_arrow``). A missing, unknown or
non-numeric value is a 422 naming every problem.

The usual request (every value a finite number, every name there) is checked in bulk: the set of
the values' types (one pass over them, cheaper than searching the raw body for ``true``/``false``) must
be ints and floats only, since numpy would take a boolean for 1.0 or 0.0; numpy then makes the
matrix. Anything else takes the row-by-row path that names problems.
"""

from __future__ import annotations

import math
import operator
import struct
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from pitstop.errors import ValidationError, first_line

FIX = "feature rows do not match the model's inputs; GET /api/v1/models lists them (serving.features)"
ARROW_STREAM = "application/vnd.apache.arrow.stream"  # the body's Content-Type
FEATURES_KEY = b"pitstop.features"  # schema metadata of the one-column form: the names, as JSON


def from_rows(
    rows: list[dict[str, Any]], names: list[str], name_set: frozenset[str] | None = None
) -> np.ndarray:
    """The matrix of ``{name: number}`` rows, columns in ``names`` order (``name_set``: the names
    as a set, when the caller keeps one)."""
    expected = frozenset(names) if name_set is None else name_set
    if all(row.keys() == expected for row in rows):  # the usual case, checked in bulk
        getter = _getter(names)
        values = list(map(getter, rows)) if len(names) > 1 else [[getter(row)] for row in rows]
        out = _numbers(values, len(rows), len(names))
        if out is not None:
            return out
    return _matrix_or_problems(rows, names)


def from_columns(
    columns: list[str], data: list[list[Any]], names: list[str], name_set: frozenset[str] | None = None
) -> np.ndarray:
    """The matrix of ``data`` rows whose values are in ``columns`` order, columns in ``names`` order."""
    if columns != names:
        _check_columns(columns, names, frozenset(names) if name_set is None else name_set)
    out = _numbers(data, len(data), len(columns))
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


def _numbers(values: Any, n: int, k: int) -> np.ndarray | None:
    """``values`` as an n × k float matrix when every value is a finite number (else None)."""
    if {type(v) for vs in values for v in vs} - {float, int}:  # bools (numpy would take them as 1.0
        return None  # and 0.0), strings, nulls
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


# -- Arrow IPC bodies --------------------------------------------------------------------------
def from_arrow(
    raw: bytes, names: list[str], name_set: frozenset[str] | None = None, max_rows: int = 50_000
) -> np.ndarray:
    """The matrix of an Arrow IPC stream (``Content-Type: application/vnd.apache.arrow.stream``)
    in one of two forms:

    - a table of one numeric column per feature, named by it, in any order: what
      ``polars.DataFrame.to_arrow()`` or ``pyarrow.Table.from_pandas`` give;
    - one column of feature vectors (``fixed_size_list<double>[k]``, or Arrow's canonical
      ``arrow.fixed_shape_tensor`` extension over it), with the features' names as a JSON list
      under the schema metadata key ``pitstop.features``. Its values go into the matrix in one
      copy, so a batch costs microseconds to read however many features it has.

    Integer and float values are taken; nulls, NaN, infinities, booleans and other types are a
    422 (``invalid_features``), as in JSON bodies. A body that is not a whole, uncompressed Arrow
    stream is a 422 ``invalid_arrow``: every batch is checked before its data is read (a batch
    whose declared lengths its buffers do not hold would read past them), and compressed buffers
    are refused because a small body could unpack to gigabytes. More than ``max_rows`` rows is a
    422 ``too_many_rows``, told from the batches' headers before any is read."""
    expected = frozenset(names) if name_set is None else name_set
    schema, batches = _read_stream(raw, max_rows)
    if sum(b.num_rows for b in batches) == 0:
        raise ValidationError("the Arrow stream has no rows", code="invalid_request")
    if len(schema) == 1 and pa.types.is_fixed_size_list(_storage(schema.field(0).type)):
        columns, out = _vectors(schema, batches)
        if columns != names:
            _check_columns(columns, names, expected)
    else:
        if len(schema) == 1 and (
            pa.types.is_list(schema.types[0]) or pa.types.is_large_list(schema.types[0])
        ):
            raise ValidationError(
                "a column of feature vectors must be a fixed_size_list (or arrow.fixed_shape_tensor), "
                f"not {schema.types[0]}",
                code="invalid_features",
            )
        columns = schema.names
        if columns != names:
            _check_columns(columns, names, expected)
        out = _table(schema, batches, columns)
    if columns != names:
        where = {c: i for i, c in enumerate(columns)}
        out = np.ascontiguousarray(out[:, [where[n] for n in names]])
    if not np.isfinite(out).all():
        bad = ~np.isfinite(out)
        rows = np.flatnonzero(bad.any(axis=1))
        problems = [
            {"index": int(i), "invalid": [names[j] for j in np.flatnonzero(bad[i])]} for i in rows[:10]
        ]
        raise ValidationError(FIX, code="invalid_features", details=problems)
    return out


_END = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # the end-of-stream marker Arrow's writers close with


def _read_stream(raw: bytes, max_rows: int) -> tuple[pa.Schema, list[pa.RecordBatch]]:
    """The schema and the checked batches of an IPC stream; a 422 for anything else."""

    def refuse(why: str) -> ValidationError:
        return ValidationError(
            f"the body is not an Arrow IPC stream Pitstop reads: {why}", code="invalid_arrow"
        )

    if raw.startswith(b"ARROW1"):
        raise refuse("it is an Arrow IPC file; send the stream format (pyarrow.ipc.new_stream)")
    if not raw.endswith(_END):
        raise refuse("it does not end with the end-of-stream marker (cut short?)")
    batches: list[pa.RecordBatch] = []
    rows = 0
    try:
        source = pa.BufferReader(raw)
        messages = pa.ipc.MessageReader.open_stream(source)
        first = next(iter(messages), None)
        if first is None or first.type != "schema":
            raise refuse(
                f"it starts with {'a ' + first.type + ' message' if first else 'nothing'}, not a schema"
            )
        schema = pa.ipc.read_schema(first)
        schema.names  # noqa: B018 (names that are not UTF-8 fail here, as a 422)
        for message in messages:  # Arrow has verified each message's header
            if message.type == "dictionary batch":
                raise refuse("a dictionary batch (dictionary-encoded columns are not taken)")
            if message.type != "record batch":
                raise refuse(f"a message of type {message.type!r} where record batches belong")
            length, compressed = _batch_header(message.metadata.to_pybytes())
            if compressed:
                raise refuse("its buffers are compressed; send them uncompressed")
            rows += length
            if rows > max_rows:
                raise too_many_rows(max_rows)
            batch = pa.ipc.read_record_batch(message, schema)
            batch.validate(full=True)  # its declared lengths against its buffers, before any read
            batches.append(batch)
        if source.tell() != len(raw):  # a second stream, or bytes, after the end-of-stream marker
            raise refuse(f"{len(raw) - source.tell()} bytes follow its end-of-stream marker")
    except (pa.ArrowException, OSError, ValueError, struct.error) as exc:
        raise refuse(first_line(exc)) from None
    return schema, batches


def _batch_header(meta: bytes) -> tuple[int, bool]:
    """(rows, whether its buffers are compressed) of a record batch message, from its flatbuffer
    header (Arrow's Message.fbs: Message.header is a RecordBatch table whose field 0 is the length
    and field 3 the compression). Read before the batch is, so a compressed body is never
    unpacked."""

    def field(table: int, index: int) -> int | None:
        vtable = table - struct.unpack_from("<i", meta, table)[0]
        size = struct.unpack_from("<H", meta, vtable)[0]
        if 4 + 2 * index >= size:
            return None
        offset = struct.unpack_from("<H", meta, vtable + 4 + 2 * index)[0]
        return table + offset if offset else None

    root = struct.unpack_from("<I", meta, 0)[0]
    header = field(root, 2)
    if header is None:
        raise ValueError("a record batch message without its header")
    batch = header + struct.unpack_from("<I", meta, header)[0]
    length = field(batch, 0)
    rows = struct.unpack_from("<q", meta, length)[0] if length is not None else 0
    return rows, field(batch, 3) is not None


def _storage(kind: pa.DataType) -> pa.DataType:
    return kind.storage_type if isinstance(kind, pa.BaseExtensionType) else kind


def _vectors(schema: pa.Schema, batches: list[pa.RecordBatch]) -> tuple[list[str], np.ndarray]:
    """The one-column form: the names from the metadata, the matrix from the vectors' values."""
    field = schema.field(0)
    kind = _storage(field.type)
    try:
        columns = orjson.loads((schema.metadata or {})[FEATURES_KEY])
    except (KeyError, orjson.JSONDecodeError):
        columns = None
    if type(columns) is not list or not all(type(c) is str for c in columns):
        raise ValidationError(
            "a column of feature vectors needs the features' names, as a JSON list of strings, under "
            "the schema metadata key 'pitstop.features'",
            code="invalid_features",
        )
    if isinstance(field.type, pa.FixedShapeTensorType) and len(field.type.shape) != 1:
        raise ValidationError(
            f"tensors of shape {field.type.shape}: one vector of features per row only",
            code="invalid_features",
        )
    width, value = kind.list_size, kind.value_type
    if width == 0:
        raise ValidationError("feature vectors of no values", code="invalid_features")
    if width != len(columns):
        raise ValidationError(
            f"the vectors hold {width} values and 'pitstop.features' names {len(columns)}",
            code="invalid_features",
        )
    if not (pa.types.is_floating(value) or pa.types.is_integer(value)):
        raise ValidationError(
            f"feature vectors of {value} values: numbers (integers or floats) only",
            code="invalid_features",
            details=[{"column": field.name, "type": str(value)}],
        )
    parts = []
    for batch in batches:
        vectors = batch.column(0)
        if isinstance(vectors, pa.ExtensionArray):
            vectors = vectors.storage
        values = vectors.flatten()  # this batch's slice of the values
        if vectors.null_count or values.null_count:
            raise ValidationError(
                "feature vectors with nulls: every value must be a number",
                code="invalid_features",
                details=[{"column": field.name, "nulls": vectors.null_count + values.null_count}],
            )
        parts.append(values.to_numpy(zero_copy_only=False).astype(np.float64, copy=False).reshape(-1, width))
    return columns, parts[0] if len(parts) == 1 else np.concatenate(parts)


def _table(schema: pa.Schema, batches: list[pa.RecordBatch], columns: list[str]) -> np.ndarray:
    """The form of one column per feature (``columns``, the schema's names): each must be integers
    or floats without nulls. Arrow makes each batch's row-major matrix in one call
    (``to_tensor``), in the schema's column order. A batch Arrow cannot convert (nulls, half
    floats) is read column by column, naming what is wrong."""
    try:  # integer and float columns only: any other type (extension types too) or a null raises
        tensors = [b.to_tensor(row_major=True) for b in batches]
        # with a float column Arrow converts to floats; integers alone it may put in a type that
        # does not hold them all (uint64 beside int64 wraps): column by column then
        parts = [np.asarray(t, dtype=np.float64) for t in tensors if pa.types.is_floating(t.type)]
        if len(parts) == len(tensors):
            return parts[0] if len(parts) == 1 else np.concatenate(parts)
    except pa.ArrowException:
        pass
    problems: list[dict[str, Any]] = [
        {"column": field.name, "type": str(field.type)}
        for field in schema
        if not (pa.types.is_floating(field.type) or pa.types.is_integer(field.type))
    ]
    typed = {p["column"] for p in problems}
    nulls = {c: sum(b.column(j).null_count for b in batches) for j, c in enumerate(columns) if c not in typed}
    problems += [{"column": name, "nulls": count} for name, count in nulls.items() if count]
    if problems:
        raise ValidationError(FIX, code="invalid_features", details=problems)
    out = np.empty((sum(b.num_rows for b in batches), len(columns)))
    start = 0
    for batch in batches:
        end = start + batch.num_rows
        for j in range(len(columns)):
            out[start:end, j] = batch.column(j).to_numpy(zero_copy_only=False)
        start = end
    return out


def too_many_rows(limit: int) -> ValidationError:
    """The 422 for a predict request of more than ``limit`` (``max_predict_rows``) rows."""
    return ValidationError(
        f"more than {limit} rows in one request (max_predict_rows): send them in parts", code="too_many_rows"
    )
