"""The spine: the caller's (entity keys, timestamp) rows that the export adds features to.

A spine is a Parquet or CSV file. Its columns pass through to the output unchanged; the export
reads only the join-key columns of the service's entities and the timestamp column. Everything
that can be wrong with it is reported before any feature is computed:

* a missing column, or one of the wrong type (join keys: the entity's declared type; CSV join
  keys are read with that type, so ids that look numeric stay strings);
* a timestamp that is neither timezone-aware nor integer epoch milliseconds (a naive timestamp
  is ambiguous: which instant is "2024-05-01 12:00"?);
* nulls in the timestamp or a join key.

Timestamps are converted to epoch milliseconds, floored: an event at ``e`` ms is included at
``t`` iff ``e <= t``, and for integer ``e`` that equals ``e <= floor(t)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from feature_store.core.model import ValueType

ROW_INDEX = "row_idx"
TIME = "t"
KEY_PREFIX = "k_"
BATCH_ROWS = 65_536

_UNIT_DIVISOR = {"s": -1000, "ms": 1, "us": 1000, "ns": 1_000_000}  # negative: multiply
_KEY_ARROW = {ValueType.STRING: pa.string(), ValueType.INT64: pa.int64(), ValueType.BYTES: pa.binary()}


class SpineError(ValueError):
    """A spine the export cannot use; the message says which column and what to do."""


@dataclass(frozen=True, slots=True)
class Spine:
    path: Path
    format: str  # "parquet" | "csv"
    schema: pa.Schema
    timestamp_column: str
    join_keys: tuple[tuple[str, ValueType], ...]

    def batches(self, batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        """The spine's rows in file order, every column, with the schema of :attr:`schema`."""
        if self.format == "parquet":
            yield from pq.ParquetFile(self.path).iter_batches(batch_size=batch_rows)
            return
        reader = pcsv.open_csv(
            self.path,
            read_options=pcsv.ReadOptions(block_size=1 << 22),
            convert_options=_csv_convert(self.join_keys),
        )
        yield from reader


def _csv_convert(join_keys: Sequence[tuple[str, ValueType]]) -> pcsv.ConvertOptions:
    return pcsv.ConvertOptions(column_types={name: _KEY_ARROW[vt] for name, vt in join_keys})


def spine_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix == ".csv":
        return "csv"
    raise SpineError(f"spine {path}: unsupported file type {suffix or '(none)'!r}; use .parquet or .csv")


def open_spine(path: Path, timestamp_column: str, join_keys: Sequence[tuple[str, ValueType]]) -> Spine:
    """Open ``path`` and check its schema (columns and types); raises :class:`SpineError`."""
    fmt = spine_format(path)
    if not path.is_file():
        raise SpineError(f"spine {path} does not exist")
    try:
        if fmt == "parquet":
            schema = pq.read_schema(path)
        else:
            reader = pcsv.open_csv(path, convert_options=_csv_convert(join_keys))
            schema = reader.schema
            reader.close()
    except (pa.ArrowInvalid, OSError) as exc:
        raise SpineError(f"spine {path} cannot be read: {exc}") from exc
    spine = Spine(path, fmt, schema, timestamp_column, tuple(join_keys))
    check_schema(spine)
    return spine


def check_schema(spine: Spine) -> None:
    schema = spine.schema
    names = set(schema.names)
    problems: list[str] = []
    if len(names) != len(schema.names):
        dupes = sorted({n for n in schema.names if schema.names.count(n) > 1})
        problems.append(f"duplicate column name(s) {', '.join(map(repr, dupes))}")
    ts = spine.timestamp_column
    if ts not in names:
        problems.append(
            f"no timestamp column {ts!r} (columns: {', '.join(schema.names)}); "
            "name it with --timestamp-column"
        )
    else:
        problem = _timestamp_problem(ts, schema.field(ts).type, spine.format)
        if problem:
            problems.append(problem)
    for key, vt in spine.join_keys:
        if key not in names:
            problems.append(f"no column {key!r}: the join key of the service's entities ({vt.value})")
            continue
        problem = _key_problem(key, schema.field(key).type, vt)
        if problem:
            problems.append(problem)
    if problems:
        raise SpineError(f"spine {spine.path}:\n  - " + "\n  - ".join(problems))


def _timestamp_problem(name: str, arrow: pa.DataType, fmt: str) -> str | None:
    if pa.types.is_null(arrow):
        return None  # an empty CSV: no values to interpret (non-empty null columns fail the scan)
    if pa.types.is_timestamp(arrow):
        if arrow.tz is None:
            fix = (
                "write ISO-8601 times with an offset, e.g. 2024-05-01T12:00:00Z"
                if fmt == "csv"
                else "make them timezone-aware, e.g. pandas df[col] = df[col].dt.tz_localize('UTC')"
            )
            return (
                f"column {name!r} holds timestamps without a time zone ({arrow}), which do not name "
                f"an instant; {fix}, or store epoch milliseconds as integers"
            )
        return None
    if pa.types.is_integer(arrow):
        return None
    return (
        f"column {name!r} is {arrow}; the spine's timestamp must be a timezone-aware timestamp or "
        "integer epoch milliseconds"
    )


def _key_problem(name: str, arrow: pa.DataType, vt: ValueType) -> str | None:
    base = arrow.value_type if pa.types.is_dictionary(arrow) else arrow
    if pa.types.is_null(base):
        return None  # an empty CSV
    ok = {
        ValueType.STRING: pa.types.is_string(base) or pa.types.is_large_string(base),
        ValueType.INT64: pa.types.is_integer(base),
        ValueType.BYTES: pa.types.is_binary(base)
        or pa.types.is_large_binary(base)
        or pa.types.is_fixed_size_binary(base),
    }.get(vt, False)
    if ok:
        return None
    hint = {
        ValueType.STRING: "cast it to string (pandas: df[col] = df[col].astype(str))",
        ValueType.INT64: "cast it to an integer type",
        ValueType.BYTES: "store it as binary",
    }.get(vt, "")
    return f"column {name!r} is {arrow} but the join key {name!r} is {vt.value}; {hint}"


def timestamps_ms(array: pa.Array | pa.ChunkedArray) -> npt.NDArray[np.int64]:
    """Epoch milliseconds (int64, floored) of a timestamp or integer column without nulls."""
    arrow = array.type
    if pa.types.is_integer(arrow):
        return np.asarray(pc.cast(array, pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
    if pa.types.is_timestamp(arrow):
        raw = np.asarray(pc.cast(array, pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
        divisor = _UNIT_DIVISOR[arrow.unit]
        if divisor < 0:
            return raw * -divisor
        return raw // divisor if divisor != 1 else raw
    raise SpineError(f"cannot read {arrow} as a timestamp")


def key_array(array: pa.Array | pa.ChunkedArray, vt: ValueType) -> pa.Array | pa.ChunkedArray:
    """A join-key column in the canonical type of its ValueType (string, int64 or binary)."""
    if pa.types.is_dictionary(array.type):
        array = pc.cast(array, array.type.value_type)
    return pc.cast(array, _KEY_ARROW[vt])


@dataclass(frozen=True, slots=True)
class CompactSpine:
    """The spine reduced to what the export joins on: row index, time (ms) and typed join keys."""

    path: Path
    rows: int
    min_t: int | None
    max_t: int | None


def compact(spine: Spine, dest: Path) -> CompactSpine:
    """Stream the spine into ``dest`` (Parquet: row_idx, t, k_<key>...), checking every value."""
    fields = [pa.field(ROW_INDEX, pa.int64()), pa.field(TIME, pa.int64())] + [
        pa.field(KEY_PREFIX + name, _KEY_ARROW[vt]) for name, vt in spine.join_keys
    ]
    schema = pa.schema(fields)
    rows = 0
    min_t: int | None = None
    max_t: int | None = None
    nulls: dict[str, tuple[int, int]] = {}  # column -> (count, first row)
    problems: list[str] = []
    columns = [spine.timestamp_column] + [name for name, _ in spine.join_keys]
    with pq.ParquetWriter(dest, schema) as writer:
        try:
            for batch in spine.batches():
                n = batch.num_rows
                if n == 0:
                    continue
                for name in columns:
                    col = batch.column(name)
                    if col.null_count:
                        first = rows + int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
                        count, seen_first = nulls.get(name, (0, first))
                        nulls[name] = (count + col.null_count, min(seen_first, first))
                if nulls:
                    rows += n
                    continue
                ts_col = batch.column(spine.timestamp_column)
                if pa.types.is_null(ts_col.type):
                    raise SpineError(f"column {spine.timestamp_column!r} has no values")
                ts = timestamps_ms(ts_col)
                bmin, bmax = int(ts.min()), int(ts.max())
                min_t = bmin if min_t is None else min(min_t, bmin)
                max_t = bmax if max_t is None else max(max_t, bmax)
                arrays: list[pa.Array] = [
                    pa.array(np.arange(rows, rows + n, dtype=np.int64)),
                    pa.array(ts, type=pa.int64()),
                ]
                for name, vt in spine.join_keys:
                    arrays.append(key_array(batch.column(name), vt))
                writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
                rows += n
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            problems.append(f"a value cannot be read: {exc}")
    for name, (count, first) in sorted(nulls.items()):
        problems.append(
            f"column {name!r} has {count} null value(s), the first in row {first}; drop or fill them"
        )
    if problems:
        raise SpineError(f"spine {spine.path}:\n  - " + "\n  - ".join(problems))
    return CompactSpine(dest, rows, min_t, max_t)
