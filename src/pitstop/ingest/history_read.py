"""History files (CSV, Parquet) read in chunks, the checks readings and events share, reject files.

A CSV chunk's sensor columns are read as floats when every cell parses (the common case, and the
fastest); a chunk with a cell that is no number is read as text, so that such a cell, a NaN and
an empty cell can be told apart. Either way a rejected row is written as the file had it.
Parquet keeps its types. Chunks bound the memory a large file needs and drive the progress bar.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pitstop.errors import ValidationError

Progress = Callable[[str, int, int], None]

FORMATS = {".csv": "csv", ".parquet": "parquet"}
CHUNK_BYTES = 48 << 20  # CSV text per chunk
CHUNK_ROWS = 400_000  # Parquet rows per chunk
TS_TYPE = pl.Datetime("us", "UTC")

_MACHINE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_ARROW_TS = pa.timestamp("us", tz="UTC")
MACHINE_ID_RULE = "machine_id must be 1-64 of [A-Za-z0-9_.:-], starting with a letter or digit"
# An ISO 8601 date or date-time without an offset: a timestamp that is missing its zone.
_RFC3339 = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$"
_NAIVE = r"^\s*\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}([.,]\d+)?)?)?\s*$"
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class HistoryFile:
    """One input file: its path, format and column names (read from the header only)."""

    path: Path
    format: str
    columns: tuple[str, ...]

    @classmethod
    def open(cls, path: Path) -> HistoryFile:
        path = Path(path)
        kind = FORMATS.get(path.suffix.lower())
        if kind is None:
            raise ValidationError(
                f"{path}: unsupported file type {path.suffix or '(none)'!r}; use .csv or .parquet",
                code="unsupported_format",
            )
        if not path.is_file():
            raise ValidationError(f"{path} does not exist or is not a file", code="unreadable_file")
        try:
            if kind == "parquet":
                columns = tuple(pq.ParquetFile(path).schema_arrow.names)
            else:
                with path.open("rb") as fh:
                    header = fh.readline().removeprefix(_BOM)
                columns = tuple(pl.read_csv(header, n_rows=0, infer_schema=False).columns) if header else ()
        except (OSError, pl.exceptions.PolarsError, ValueError) as exc:  # pyarrow's errors are ValueErrors
            raise ValidationError(f"cannot read {path}: {exc}", code="unreadable_file") from None
        return cls(path, kind, columns)

    def require(self, names: tuple[str, ...]) -> None:
        missing = [n for n in names if n not in self.columns]
        if missing:
            raise ValidationError(
                f"{self.path} has no {', '.join(missing)} column; its columns are "
                f"{', '.join(self.columns) or '(none)'}",
                code="missing_column",
            )

    def chunks(self, progress: Progress | None = None, numeric: Collection[str] = ()) -> Iterator[Chunk]:
        """The rows in chunks, in file order. CSV cells are strings (an empty cell is null), except
        the ``numeric`` columns, read as floats when every cell of the chunk is a number or empty."""
        try:
            if self.format == "parquet":
                yield from self._parquet_chunks(progress)
            else:
                yield from self._csv_chunks(progress, [c for c in self.columns if c in set(numeric)])
        except (OSError, pl.exceptions.PolarsError, ValueError) as exc:
            raise ValidationError(f"cannot read {self.path}: {exc}", code="unreadable_file") from None

    def read_all(self) -> pl.DataFrame:
        frames = [c.frame for c in self.chunks()]
        return pl.concat(frames, how="vertical") if frames else pl.DataFrame()

    def rows(self, numbers: pl.Series) -> pl.DataFrame:
        """The rows with these 1-based numbers, as text, numbered (``row``), read from the file again."""
        out, offset = [], 0
        for chunk in self.chunks():
            last = offset + chunk.frame.height
            inside = numbers.filter((numbers > offset) & (numbers <= last)).sort()
            if inside.len():
                out.append(chunk.text(inside - offset - 1).with_columns(inside.alias("row")))
            offset = last
        return pl.concat(out, how="vertical") if out else pl.DataFrame()

    def _parquet_chunks(self, progress: Progress | None) -> Iterator[Chunk]:
        total, done = pq.ParquetFile(self.path).metadata.num_rows, 0
        for frame in pl.scan_parquet(self.path).collect_batches(chunk_size=CHUNK_ROWS):
            done += frame.height
            if progress is not None:
                progress("reading", done, total)
            yield Chunk(frame, None)

    def _csv_chunks(self, progress: Progress | None, numeric: list[str]) -> Iterator[Chunk]:
        total = self.path.stat().st_size
        with self.path.open("rb") as fh:
            header = fh.readline()
            done, carry = len(header), b""
            header = header.removeprefix(_BOM)
            if not header.endswith(b"\n"):
                header += b"\n"
            while True:
                block = fh.read(CHUNK_BYTES)
                data = carry + block
                if not data:
                    return
                if block:
                    cut = _last_row_end(data)
                    if cut is None:  # no whole row yet: read on
                        carry = data
                        continue
                    data, carry = data[:cut], data[cut:]
                else:
                    carry = b""
                done += len(data)
                yield _csv_chunk(header + data, numeric)
                if progress is not None:
                    progress("reading", done, total)
                if not block:
                    return


@dataclass(frozen=True)
class Chunk:
    """Rows of a file; ``text`` gives some of them as the file wrote them (for reject files)."""

    frame: pl.DataFrame
    csv: bytes | None  # the CSV text (header and rows) when some columns were read as numbers

    def text(self, positions: pl.Series) -> pl.DataFrame:
        """The rows at these 0-based positions, every column as text."""
        if self.csv is not None:
            return pl.read_csv(self.csv, infer_schema=False)[positions]
        return as_text(self.frame[positions])


def as_text(frame: pl.DataFrame) -> pl.DataFrame:
    """Every column as text (as a reject file shows it)."""

    def text(column: str, dtype: pl.DataType) -> pl.Expr:
        if dtype == pl.String:
            return pl.col(column)
        if dtype.is_nested() or dtype == pl.Object:
            return pl.col(column).map_elements(str, return_dtype=pl.String)
        return pl.col(column).cast(pl.String)

    return frame.select(text(c, d) for c, d in frame.schema.items())


def _csv_chunk(data: bytes, numeric: list[str]) -> Chunk:
    """A CSV chunk, its ``numeric`` columns as floats if every cell parses, else all as text."""
    if numeric:
        try:
            frame = pl.read_csv(data, infer_schema=False, schema_overrides=dict.fromkeys(numeric, pl.Float64))
            return Chunk(frame, data)
        except pl.exceptions.ComputeError:
            pass  # a cell that is no number: read as text, the checks find it
    return Chunk(pl.read_csv(data, infer_schema=False), None)


def _last_row_end(data: bytes) -> int | None:
    """The end of the last whole row in ``data``: after a newline that is not inside quotes."""
    end = data.rfind(b"\n")
    while end >= 0 and data.count(b'"', 0, end) % 2:
        end = data.rfind(b"\n", 0, end)
    return end + 1 if end >= 0 else None


def machine_ids(frame: pl.DataFrame) -> pl.Series:
    """The machine id column as strings (a Parquet integer id becomes its decimal text)."""
    col = frame.get_column("machine_id")
    return col if col.dtype == pl.String else col.cast(pl.String)


def valid_machine_id(machine_id: str) -> bool:
    return _MACHINE_ID.fullmatch(machine_id) is not None


def parse_timestamps(frame: pl.DataFrame) -> pl.Series:
    """``ts`` as UTC microseconds; null where it is missing, unparsable or without a zone.

    Text is ISO 8601 with an offset (``Z``, ``+02:00``), parsed value by value by Polars, or by
    Arrow for the whole column when every value has the plain RFC 3339 form (the same result,
    faster). A Parquet timestamp column with a zone is converted; one without a zone is naive (null
    here, ``naive_timestamp``).
    """
    col = frame.get_column("ts")
    if isinstance(col.dtype, pl.Datetime):
        if col.dtype.time_zone is None:
            return pl.Series("ts", [None] * len(col), dtype=TS_TYPE)
        return col.dt.convert_time_zone("UTC").dt.cast_time_unit("us")
    text = col if col.dtype == pl.String else col.cast(pl.String)
    if text.null_count() == 0 and text.str.contains(_RFC3339).all():
        try:
            parsed = pl.from_arrow(pc.cast(text.to_arrow(), _ARROW_TS))
            assert isinstance(parsed, pl.Series)
            return parsed.cast(TS_TYPE).alias("ts")
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass  # an impossible date: Polars finds which
    return text.str.to_datetime(format="%+", time_unit="us", time_zone="UTC", strict=False)


def timestamp_codes(frame: pl.DataFrame, parsed: str, horizon: datetime) -> pl.Expr:
    """``invalid_timestamp``, ``naive_timestamp`` or ``future_timestamp`` per row (null if fine).

    Meant for the few rows already found bad or for a whole small file: it runs a regex."""
    dtype = frame.schema["ts"]
    raw = pl.col("ts")
    if isinstance(dtype, pl.Datetime):
        naive = raw.is_not_null() & pl.lit(dtype.time_zone is None)
    else:
        naive = (raw if dtype == pl.String else raw.cast(pl.String)).str.contains(_NAIVE).fill_null(False)
    return (
        pl.when(pl.col(parsed).is_null() & naive)
        .then(pl.lit("naive_timestamp"))
        .when(pl.col(parsed).is_null())
        .then(pl.lit("invalid_timestamp"))
        .when(pl.col(parsed) > pl.lit(horizon).cast(TS_TYPE))
        .then(pl.lit("future_timestamp"))
    )


def timestamp_reason(code: pl.Expr, skew_s: float) -> pl.Expr:
    shown = pl.col("ts").cast(pl.String).str.slice(0, 40)
    return (
        pl.when(code == "naive_timestamp")
        .then(pl.lit("ts must carry a timezone, e.g. 2026-01-01T00:00:00Z"))
        .when((code == "invalid_timestamp") & pl.col("ts").is_null())
        .then(pl.lit("ts is empty"))
        .when(code == "invalid_timestamp")
        .then(pl.format("ts '{}' is not ISO 8601 (e.g. 2026-01-01T00:00:00Z)", shown))
        .when(code == "future_timestamp")
        .then(pl.format("ts {} is more than {} s in the future", shown, pl.lit(f"{skew_s:g}")))
    )


def rejects_path(source: Path, chosen: Path | None) -> Path:
    return chosen if chosen is not None else source.with_name(source.name + ".rejects.csv")


def write_rejects(path: Path, frames: list[pl.DataFrame]) -> int:
    """Write rejected rows (original columns as text, then ``row``, ``code``, ``reason``), in row
    order; returns how many. With none, an earlier reject file at ``path`` is removed (stale)."""
    frames = [f for f in frames if f.height]
    if not frames:
        path.unlink(missing_ok=True)
        return 0
    text = [f.select(pl.all().cast(pl.String)).with_columns(pl.col("row").cast(pl.Int64)) for f in frames]
    merged = pl.concat(text, how="diagonal")
    tail = ["row", "code", "reason"]
    order = ["file", "row"] if "file" in merged.columns else ["row"]
    merged = merged.sort(order).select(pl.all().exclude(tail), *tail)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        merged.write_csv(path)
    except OSError as exc:
        raise ValidationError(
            f"cannot write the reject file {path}: {exc}", code="unwritable_rejects"
        ) from None
    return merged.height
