"""Validation of a chunk of history readings, columnar: the HTTP intake's codes, row by row.

Every check is a Polars expression over the whole chunk; reasons are built only for the rows that
failed. The first failing check names the row's code, in the intake's order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import polars as pl

from pitstop.errors import ValidationError
from pitstop.ingest.history_read import (
    MACHINE_ID_RULE,
    TS_TYPE,
    Chunk,
    HistoryFile,
    machine_ids,
    parse_timestamps,
    timestamp_codes,
    timestamp_reason,
    valid_machine_id,
)
from pitstop.schema import FleetSchema

_NON_FINITE_WORDS = ["nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"]
_FIXED = ("machine_id", "ts", "machine_type")

# machine ids -> their registered machine types (only the registered ones)
TypeLookup = Callable[[list[str]], dict[str, str]]


@dataclass(frozen=True)
class Layout:
    """What a file's header says: its sensor columns and where each row's machine type comes from."""

    file: HistoryFile
    index: int  # of the file in this import
    sensors: tuple[str, ...]
    type_column: bool
    default_type: str | None

    @classmethod
    def of(cls, file: HistoryFile, index: int, fleet: FleetSchema, machine_type: str | None) -> Layout:
        file.require(("machine_id", "ts"))
        type_column = "machine_type" in file.columns
        default = machine_type
        if default is None and len(fleet.machine_types) == 1:
            default = next(iter(fleet.machine_types))
        if default is None and not type_column:
            raise ValidationError(
                f"{file.path}: which machine type? The fleet has {', '.join(sorted(fleet.machine_types))}: "
                "pass --machine-type or add a machine_type column",
                code="machine_type_required",
            )
        extra = [c for c in file.columns if c not in _FIXED]
        allowed = set(fleet.sensors) if type_column else set(fleet.type_of(str(default)).sensor_names)
        unknown = [c for c in extra if c not in allowed]
        if unknown:
            whose = "any machine type of the fleet" if type_column else f"machine type {default}"
            raise ValidationError(
                f"{file.path}: column(s) {', '.join(unknown)} are no sensor of {whose} "
                f"(machine_id, ts and a machine_type are the other columns; seq is assigned on import)",
                code="unknown_sensor",
            )
        return cls(file, index, tuple(extra), type_column, default)


@dataclass
class Checker:
    """Checks chunks in file order; remembers each machine's type (registered, or first seen)."""

    fleet: FleetSchema
    horizon: datetime
    skew_s: float
    lookup: TypeLookup
    types: dict[str, str] = field(default_factory=dict)  # machine -> expected type
    _looked_up: set[str] = field(default_factory=set)

    def check(self, piece: Chunk, layout: Layout, offset: int) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(valid rows: ``_file, _row, machine_id, ts, _type`` and the parsed sensors;
        rejected rows: the original columns as text, ``row``, ``code``, ``reason``)."""
        chunk = piece.frame
        mid = machine_ids(chunk)
        ids = mid.unique().drop_nulls().to_list()
        bad_ids = [m for m in ids if not valid_machine_id(m)]
        frame = chunk.with_columns(
            pl.int_range(offset + 1, offset + chunk.height + 1, dtype=pl.Int64).alias("_row"),
            mid.alias("_mid"),
            parse_timestamps(chunk).alias("_ts"),
            self._type_expr(layout).alias("_type"),
            *[_number(chunk, s).alias(f"_v:{s}") for s in layout.sensors],
        )
        bad_values = [s for s in layout.sensors if _has_unparsed(frame, s)]
        if bad_values:
            frame = frame.with_columns(*[e for s in bad_values for e in _retry(frame, s)])
        bad_id = pl.col("_mid").is_null() | (pl.col("_mid").is_in(bad_ids) if bad_ids else pl.lit(False))
        wrong = self._wrong_type(frame, layout, sorted(set(ids) - set(bad_ids)))
        frame = frame.with_columns(self._codes(layout, bad_values, bad_id, wrong).alias("_code"))
        valid = frame.filter(pl.col("_code").is_null()).select(
            pl.lit(layout.index, pl.Int32).alias("_file"),
            "_row",
            pl.col("_mid").alias("machine_id"),
            pl.col("_ts").alias("ts"),
            "_type",
            *[pl.col(f"_v:{s}").alias(s) for s in layout.sensors],
        )
        rejected = frame.filter(pl.col("_code").is_not_null())
        if rejected.height == 0:
            return valid, pl.DataFrame()
        explained = self._explain(rejected, layout, bad_values).select(
            pl.col("_row").alias("row"), "code", "reason"
        )
        original = piece.text(explained.get_column("row") - offset - 1)
        return valid, pl.concat([original, explained], how="horizontal")

    def _type_expr(self, layout: Layout) -> pl.Expr:
        default = pl.lit(layout.default_type, pl.String)
        if not layout.type_column:
            return default
        col = pl.col("machine_type").cast(pl.String)
        return pl.when(col.is_null() | (col == "")).then(default).otherwise(col)

    def _wrong_type(self, frame: pl.DataFrame, layout: Layout, ids: list[str]) -> pl.Expr | None:
        """Rows whose type is not their machine's: the registered type, else the first one seen in
        the import. None when no row can be wrong."""
        fresh = [m for m in ids if m not in self._looked_up]
        if fresh:
            self.types.update(self.lookup(fresh))
            self._looked_up.update(fresh)
        new = [m for m in ids if m not in self.types]
        if not layout.type_column:
            kind = str(layout.default_type)
            self.types.update((m, kind) for m in new)
            other = [m for m in ids if self.types[m] != kind]
            return pl.col("_mid").is_in(other) if other else None
        if new:
            first = (
                frame.filter(
                    pl.col("_mid").is_in(new) & pl.col("_type").is_in(list(self.fleet.machine_types))
                )
                .group_by("_mid", maintain_order=True)
                .agg(pl.col("_type").first())
            )
            self.types.update(zip(first["_mid"].to_list(), first["_type"].to_list(), strict=True))
        return pl.col("_type") != self._expected(ids)

    def _expected(self, ids: list[str]) -> pl.Expr:
        mapping = {m: self.types[m] for m in ids if m in self.types}
        return pl.col("_mid").replace_strict(mapping, default=None, return_dtype=pl.String)

    def _codes(
        self, layout: Layout, bad_values: list[str], bad_id: pl.Expr, wrong: pl.Expr | None
    ) -> pl.Expr:
        values = [pl.col(f"_v:{s}") for s in layout.sensors]
        checks: list[tuple[str, pl.Expr]] = [
            ("invalid_machine_id", bad_id),
            ("unknown_machine_type", ~pl.col("_type").is_in(list(self.fleet.machine_types)).fill_null(False)),
        ]
        if wrong is not None:
            checks.append(("wrong_machine_type", wrong))
        checks += [
            ("invalid_timestamp", pl.col("_ts").is_null()),
            ("future_timestamp", pl.col("_ts") > pl.lit(self.horizon).cast(TS_TYPE)),
        ]
        if bad_values:
            checks.append(("invalid_value", pl.any_horizontal([pl.col(f"_bad:{s}") for s in bad_values])))
        if values:
            checks.append(("non_finite", pl.any_horizontal([v.is_nan() | v.is_infinite() for v in values])))
        for name, kind in (("unknown_sensor", "foreign"), ("missing_sensor", "missing")):
            flags = self._per_type(layout, kind)
            if flags:
                of_type = [(pl.col("_type") == t) & pl.any_horizontal(f.values()) for t, f in flags.items()]
                checks.append((name, pl.any_horizontal(of_type).fill_null(False)))
        chain: Any = pl
        for name, failed in checks:
            chain = chain.when(failed).then(pl.lit(name))
        return cast(pl.Expr, chain)

    def _per_type(self, layout: Layout, kind: str) -> dict[str, dict[str, pl.Expr]]:
        """Per machine type, per sensor: whether a row of that type has a value for a sensor the
        type lacks (``foreign``), or lacks a value of a required sensor (``missing``)."""
        out: dict[str, dict[str, pl.Expr]] = {}
        names = list(self.fleet.machine_types) if layout.type_column else [str(layout.default_type)]
        for name in names:
            mt = self.fleet.type_of(name)
            if kind == "foreign":
                flags = {
                    s: pl.col(f"_v:{s}").is_not_null() for s in layout.sensors if s not in mt.sensor_names
                }
            else:
                flags = {
                    s: pl.col(f"_v:{s}").is_null() if s in layout.sensors else pl.lit(True)
                    for s in sorted(mt.required)
                }
            if flags:
                out[name] = flags
        return out

    def _names(self, layout: Layout, kind: str) -> pl.Expr:
        """The sensors behind a row's ``unknown_sensor`` or ``missing_sensor``, listed."""
        parts = [
            pl.when(pl.col("_type") == t).then(
                pl.concat_str(
                    [pl.when(f).then(pl.lit(s)) for s, f in flags.items()], separator=", ", ignore_nulls=True
                )
            )
            for t, flags in self._per_type(layout, kind).items()
        ]
        return pl.coalesce(parts) if parts else pl.lit("")

    def _explain(self, rejected: pl.DataFrame, layout: Layout, bad_values: list[str]) -> pl.DataFrame:
        ids = rejected.get_column("_mid").unique().drop_nulls().to_list()
        rejected = rejected.with_columns(self._expected(ids).alias("_expected"))
        code = pl.col("_code")
        refined = pl.when(code == "invalid_timestamp").then(timestamp_codes(rejected, "_ts", self.horizon))
        rejected = rejected.with_columns(refined.otherwise(code).alias("code"))
        code = pl.col("code")

        def listed(flags: list[pl.Expr]) -> pl.Expr:
            return pl.concat_str(flags, separator=", ", ignore_nulls=True) if flags else pl.lit("")

        values = [(s, pl.col(f"_v:{s}")) for s in layout.sensors]
        unparsed = listed([pl.when(pl.col(f"_bad:{s}")).then(pl.lit(s)) for s in bad_values])
        non_finite = listed([pl.when(v.is_nan() | v.is_infinite()).then(pl.lit(s)) for s, v in values])
        known = ", ".join(sorted(self.fleet.machine_types))
        reason = (
            pl.when(code == "invalid_machine_id")
            .then(pl.lit(MACHINE_ID_RULE))
            .when((code == "unknown_machine_type") & pl.col("_type").is_null())
            .then(pl.lit(f"no machine type: fill machine_type or pass --machine-type (known: {known})"))
            .when(code == "unknown_machine_type")
            .then(pl.format("unknown machine type '{}' (known: {})", pl.col("_type"), pl.lit(known)))
            .when(code == "wrong_machine_type")
            .then(
                pl.format(
                    "machine {} is a {}, not a {}", pl.col("_mid"), pl.col("_expected"), pl.col("_type")
                )
            )
            .when(code.str.ends_with("_timestamp"))
            .then(timestamp_reason(code, self.skew_s))
            .when(code == "invalid_value")
            .then(pl.format("not a number: {}", unparsed))
            .when(code == "non_finite")
            .then(pl.format("NaN or Infinity in {}", non_finite))
            .when(code == "unknown_sensor")
            .then(
                pl.format(
                    "not sensors of machine type {}: {}", pl.col("_type"), self._names(layout, "foreign")
                )
            )
            .when(code == "missing_sensor")
            .then(pl.format("missing sensors: {}", self._names(layout, "missing")))
        )
        return rejected.with_columns(reason.alias("reason"))


def _number(chunk: pl.DataFrame, sensor: str) -> pl.Expr:
    """A sensor column as floats; text that is no number is null here (``_retry`` sorts it out)."""
    dtype, col = chunk.schema[sensor], pl.col(sensor)
    if dtype == pl.String:
        return col.cast(pl.Float64, strict=False)
    if dtype.is_numeric():
        return col.cast(pl.Float64)
    return pl.lit(None, pl.Float64)  # booleans, lists, ...: any value is invalid


def _has_unparsed(frame: pl.DataFrame, sensor: str) -> bool:
    """Whether some non-empty cell did not parse as a number (null counts are free in Polars)."""
    return frame.get_column(f"_v:{sensor}").null_count() > frame.get_column(sensor).null_count()


def _retry(frame: pl.DataFrame, sensor: str) -> list[pl.Expr]:
    """For a column with unparsed cells: blank cells are empty, surrounding spaces are ignored, NaN
    and Infinity spellings are non-finite; anything else is ``invalid_value`` (``_bad:`` column)."""
    raw, parsed = pl.col(sensor), pl.col(f"_v:{sensor}")
    if frame.schema[sensor] != pl.String:
        return [raw.is_not_null().alias(f"_bad:{sensor}")]
    text = raw.str.strip_chars()
    word = text.str.to_lowercase().is_in(_NON_FINITE_WORDS)
    number = pl.when(word).then(pl.lit(float("nan"))).otherwise(text.cast(pl.Float64, strict=False))
    return [
        pl.coalesce(parsed, number).alias(f"_v:{sensor}"),
        (parsed.is_null() & (text != "") & number.is_null()).fill_null(False).alias(f"_bad:{sensor}"),
    ]
