"""Feature rows as an Arrow IPC stream (``POST /api/v1/predict`` with ``Content-Type:
application/vnd.apache.arrow.stream``): each form gets the same predictions as the JSON body of the
same rows, through the fast path and through the route, and every bad stream a JSON 422 with its
code."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from pitstop.platform import Platform
from pitstop.serving.matrix import ARROW_STREAM, from_arrow
from pitstop.web.users import Users
from tests import test_fastpath
from tests.test_fastpath import answered, chunked

PREDICT = "/api/v1/predict"
client = test_fastpath.client  # the same fixture: a test client of the trained platform's app


@pytest.fixture
def auth(trained: Platform) -> dict[str, str]:
    users = Users(trained.db)
    users.add("arrow-viewer", "viewer")
    return {"Authorization": f"Bearer {users.create_key('arrow-viewer')}"}


def stream(
    table: pa.Table | pa.RecordBatch, chunk: int | None = None, compression: str | None = None
) -> bytes:
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        if isinstance(table, pa.Table):
            writer.write_table(table, max_chunksize=chunk)
        else:
            writer.write_batch(table)
    return bytes(sink.getvalue().to_pybytes())


def vectors(matrix: np.ndarray, names: list[str], tensor: bool = False) -> pa.Table:
    """The one-column form: a fixed-size list (or the canonical tensor type) per row."""
    column: pa.Array = pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), matrix.shape[1])
    if tensor:
        column = pa.ExtensionArray.from_storage(
            pa.fixed_shape_tensor(pa.float64(), [matrix.shape[1]]), column
        )
    return named(column, names)


def named(column: pa.Array, names: list[str]) -> pa.Table:
    """A table of the one column ``column``, ``names`` under the schema key ``pitstop.features``."""
    schema = pa.schema([pa.field("x", column.type)], metadata={b"pitstop.features": orjson.dumps(names)})
    return pa.Table.from_arrays([column], schema=schema)


def rows_of(trained: Platform, n: int = 7) -> tuple[list[str], np.ndarray]:
    names = list(trained.scorer.feature_names)
    rng = np.random.default_rng(3)
    return names, rng.normal(50.0, 20.0, size=(n, len(names))).round(3)


def test_each_arrow_form_scores_like_the_json_body_on_both_paths(
    client: TestClient, trained: Platform, auth: dict[str, str]
) -> None:
    names, matrix = rows_of(trained)
    expected = client.post(
        PREDICT, content=orjson.dumps({"columns": names, "data": matrix.tolist()}), headers=auth
    )
    assert expected.status_code == 200, expected.text
    order = names[::-1]  # any column order
    table = pa.table({n: matrix[:, names.index(n)] for n in order})
    ints = pa.table(
        {n: pa.array(np.full(len(matrix), 40, np.int32)) if n == order[0] else table[n] for n in order}
    )
    forms = {
        "table": stream(table),
        "table in batches of 3": stream(table, chunk=3),
        "vectors": stream(vectors(matrix, names)),
        "vectors, names reordered": stream(vectors(matrix[:, ::-1].copy(), order)),
        "tensor": stream(vectors(matrix, names, tensor=True)),
        "vectors in batches of 2": stream(vectors(matrix, names), chunk=2),
        "a sliced batch": stream(
            vectors(np.vstack([matrix[:1], matrix]), names).combine_chunks().to_batches()[0].slice(1)
        ),
    }
    headers = {**auth, "content-type": ARROW_STREAM}
    for form, body in forms.items():
        before = answered(trained)
        fast = client.post(PREDICT, content=body, headers=headers)
        mid = answered(trained)
        slow = client.post(PREDICT, content=chunked(body), headers=headers)
        after = answered(trained)
        assert fast.status_code == slow.status_code == 200, (form, fast.text, slow.text)
        assert fast.content == slow.content == expected.content, form
        assert (mid["fast"] - before["fast"], after["route"] - mid["route"]) == (1, 1), form
        assert fast.headers["content-type"] == "application/json"
    # integer columns are numbers like any other
    with_ints = client.post(PREDICT, content=stream(ints), headers=headers)
    assert with_ints.status_code == 200 and len(with_ints.json()["predictions"]) == len(matrix)
    # the content type's parameters and case do not matter; the machine type is a query parameter
    odd = {**auth, "content-type": "Application/Vnd.Apache.Arrow.Stream; charset=binary"}
    typed = client.post(f"{PREDICT}?machine_type={trained.default_type}", content=forms["table"], headers=odd)
    assert typed.status_code == 200 and typed.content == expected.content


def _bad_streams(names: list[str], matrix: np.ndarray) -> dict[str, tuple[bytes, str, str]]:
    """name -> (body, code, what the message or details must mention)."""
    table = pa.table({n: matrix[:, j] for j, n in enumerate(names)})
    nan = matrix.copy()
    nan[2, 5] = np.nan
    inf = matrix.copy()
    inf[4, 0] = np.inf
    nulls = table.set_column(1, names[1], pa.array([None, *matrix[1:, 1].tolist()], pa.float64()))
    text = table.set_column(0, names[0], pa.array(["x"] * len(matrix)))
    flags = table.set_column(0, names[0], pa.array([True] * len(matrix)))
    null_vector = pa.FixedSizeListArray.from_arrays(
        pa.array(matrix.ravel()), len(names), mask=pa.array([False, True] + [False] * (len(matrix) - 2))
    )
    no_meta = pa.table({"x": pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), len(names))})
    flat = pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), len(names))
    square = pa.ExtensionArray.from_storage(pa.fixed_shape_tensor(pa.float64(), [1, len(names)]), flat)
    return {
        "a tensor of two dimensions": (
            stream(named(square, names)),
            "invalid_features",
            "one vector",
        ),
        "not arrow": (b'{"rows": []}', "invalid_arrow", "Arrow IPC"),
        "truncated": (stream(table)[:100], "invalid_arrow", "Arrow IPC"),
        "no rows": (stream(table.slice(0, 0)), "invalid_request", "no rows"),
        "a missing column": (stream(table.drop_columns([names[3]])), "invalid_features", names[3]),
        "an unknown column": (stream(table.append_column("zz", table[names[0]])), "invalid_features", "zz"),
        "a text column": (stream(text), "invalid_features", "string"),
        "a boolean column": (stream(flags), "invalid_features", "bool"),
        "an arrow.bool8 column (integers underneath)": (
            stream(
                table.set_column(
                    0,
                    names[0],
                    pa.ExtensionArray.from_storage(pa.bool8(), pa.array([1] * len(matrix), pa.int8())),
                )
            ),
            "invalid_features",
            "bool8",
        ),
        "a null": (stream(nulls), "invalid_features", "nulls"),
        "a NaN": (
            stream(pa.table({n: nan[:, j] for j, n in enumerate(names)})),
            "invalid_features",
            names[5],
        ),
        "an infinity": (stream(vectors(inf, names)), "invalid_features", names[0]),
        "a null vector": (
            stream(named(null_vector, names)),
            "invalid_features",
            "nulls",
        ),
        "vectors without names": (stream(no_meta), "invalid_features", "pitstop.features"),
        "names that are not a list": (
            stream(no_meta.replace_schema_metadata({b"pitstop.features": b'{"a": 1}'})),
            "invalid_features",
            "pitstop.features",
        ),
        "fewer names than values": (
            stream(no_meta.replace_schema_metadata({b"pitstop.features": orjson.dumps(names[:-1])})),
            "invalid_features",
            "names",
        ),
        "vectors of text": (
            stream(
                named(pa.FixedSizeListArray.from_arrays(pa.array(["a"] * matrix.size), len(names)), names)
            ),
            "invalid_features",
            "string",
        ),
        "vectors of no values": (
            stream(named(pa.array([[], [], []], pa.list_(pa.float64(), 0)), [])),
            "invalid_features",
            "no values",
        ),
        "vectors as variable lists": (
            stream(named(pa.array(matrix.tolist(), pa.list_(pa.float64())), names)),
            "invalid_features",
            "fixed_size_list",
        ),
        "an IPC file": (ipc_file(table), "invalid_arrow", "stream format"),
        "only the end-of-stream marker": (
            b"\xff\xff\xff\xff\x00\x00\x00\x00",
            "invalid_arrow",
            "not a schema",
        ),
        "two streams end to end": (stream(table) + stream(table), "invalid_arrow", "follow"),
        "compressed buffers": (stream(table, compression="zstd"), "invalid_arrow", "compressed"),
        "cut at a batch boundary": (cut_after_first_batch(table), "invalid_arrow", "end-of-stream"),
        "a batch longer than its buffers": (longer_than_its_buffers(names), "invalid_arrow", "Arrow IPC"),
        "a column name that is not UTF-8": (
            stream(table).replace(names[4].encode(), b"\xff\xfe" + names[4].encode()[2:]),
            "invalid_arrow",
            "Arrow IPC",
        ),
    }


def ipc_file(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def cut_after_first_batch(table: pa.Table) -> bytes:
    """A stream of two batches cut right after the first: what remains reads as a shorter stream."""
    whole = stream(table, chunk=len(table) - 2)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_batch(table.to_batches(max_chunksize=len(table) - 2)[0])
    first = bytes(sink.getvalue().to_pybytes())[:-8]  # without its end-of-stream marker
    assert whole.startswith(first)
    return first


def longer_than_its_buffers(names: list[str]) -> bytes:
    """13 rows whose batch header says 14: read as is, the last row would come from past the end
    of the data (a crash, or a made-up row)."""
    rows = np.random.default_rng(5).normal(size=(13, len(names)))
    body = stream(pa.table({n: rows[:, j] for j, n in enumerate(names)}))
    assert body.count(struct.pack("<q", 13)) >= 1
    return body.replace(struct.pack("<q", 13), struct.pack("<q", 14))


def test_every_bad_stream_is_a_json_422_with_its_code(
    client: TestClient, trained: Platform, auth: dict[str, str]
) -> None:
    names, matrix = rows_of(trained)
    headers = {**auth, "content-type": ARROW_STREAM}
    for what, (body, code, mention) in _bad_streams(names, matrix).items():
        before = answered(trained)
        r = client.post(PREDICT, content=body, headers=headers)
        assert r.status_code == 422, (what, r.status_code, r.text)
        error = r.json()["error"]
        assert error["code"] == code, (what, error)
        assert mention in r.text, (what, r.text)
        assert answered(trained)["fast"] == before["fast"], what  # the route made the error
    unknown = client.post(
        f"{PREDICT}?machine_type=nope", content=stream(vectors(matrix, names)), headers=headers
    )
    as_json = client.post(
        PREDICT,
        content=orjson.dumps({"machine_type": "nope", "columns": names, "data": matrix.tolist()}),
        headers=auth,
    )
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (
        as_json.status_code,
        as_json.json()["error"]["code"],
    )
    # an Arrow body still needs an API key with the right to predict
    assert (
        client.post(
            PREDICT, content=stream(vectors(matrix, names)), headers={"content-type": ARROW_STREAM}
        ).status_code
        == 401
    )


def test_the_reader_alone_keeps_the_models_column_order() -> None:
    names = ["a", "b", "c"]
    matrix = np.arange(12, dtype=np.float64).reshape(4, 3)
    shuffled = pa.table({"c": matrix[:, 2], "a": matrix[:, 0], "b": pa.array(matrix[:, 1].astype(np.int64))})
    huge = pa.table(  # integers alone: Arrow's own conversion would put these in int64 and wrap
        {
            "a": pa.array([2**63 + 1, 5, 6, 7], pa.uint64()),
            "b": pa.array(matrix[:, 1].astype(np.int64)),
            "c": pa.array(matrix[:, 2].astype(np.int64)),
        }
    )
    wide = from_arrow(stream(huge), names)
    assert wide[0, 0] == float(2**63 + 1) and wide[1:, 0].tolist() == [5.0, 6.0, 7.0]
    np.testing.assert_array_equal(wide[:, 1:], matrix[:, 1:])
    halves = pa.table({"b": pa.array(matrix[:, 1], pa.float16()), "a": matrix[:, 0], "c": matrix[:, 2]})
    got: dict[str, Any] = {
        "table": from_arrow(stream(shuffled), names),
        "table in batches of 1": from_arrow(stream(shuffled, chunk=1), names),
        "half floats (read column by column)": from_arrow(stream(halves), names),
        "vectors": from_arrow(stream(vectors(matrix[:, [2, 0, 1]].copy(), ["c", "a", "b"])), names),
        "float32 tensor": from_arrow(
            stream(
                named(
                    pa.ExtensionArray.from_storage(
                        pa.fixed_shape_tensor(pa.float32(), [3]),
                        pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel(), pa.float32()), 3),
                    ),
                    names,
                )
            ),
            names,
        ),
    }
    for form, out in got.items():
        assert out.dtype == np.float64 and out.flags.c_contiguous, form
        np.testing.assert_array_equal(out, matrix, err_msg=form)


def test_more_rows_than_max_predict_rows_is_a_422_in_every_form(
    client: TestClient, trained: Platform, auth: dict[str, str]
) -> None:
    """The cap is told from the batches' headers, before any batch is read, and holds for JSON."""
    names, matrix = rows_of(trained, n=6)
    limit = 5
    trained.settings = trained.settings.model_copy(update={"max_predict_rows": limit})
    arrow = {**auth, "content-type": ARROW_STREAM}
    bodies = [
        (stream(vectors(matrix, names), chunk=2), arrow),
        (stream(pa.table({n: matrix[:, j] for j, n in enumerate(names)})), arrow),
        (orjson.dumps({"columns": names, "data": matrix.tolist()}), auth),
        (orjson.dumps({"rows": [dict(zip(names, r, strict=True)) for r in matrix.tolist()]}), auth),
    ]
    for body, headers in bodies:
        r = client.post(PREDICT, content=body, headers=headers)
        assert (r.status_code, r.json()["error"]["code"]) == (422, "too_many_rows"), r.text
        assert "max_predict_rows" in r.text
    ok = client.post(PREDICT, content=stream(vectors(matrix[:limit], names)), headers=arrow)
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == limit
