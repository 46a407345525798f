"""The offline point-in-time export: spine + archive -> Parquet with the service's features.

Pipeline, per feature view of the service (see docs/export.md)::

    spine ──► compact (row_idx, t ms, typed join keys)          [pyarrow, streamed, validated]
        entities = distinct join keys with min/max t, numbered; bucket = entity number % B
    archive ──► DuckDB: projection, date-folder pruning, dedup on (_partition, _offset), drop the
        events the job dead-lettered, the job's key rules, only spine entities and events in
        [t_min - longest window, t_max] of their entity  ──► Parquet partitioned by bucket
    vectorised view (vector.py)  ──► one DuckDB query: prefix aggregates + ASOF joins
    otherwise, per bucket: events and spine rows sorted by (entity, time) ──► ViewReplay (core
        update / read / resolve)
    ──► per view: Parquet (row_idx, value, status[, event time] per feature)
    spine batches + DuckDB join of every view's results ordered by row_idx ──► output Parquet

Memory: DuckDB spills to the work folder; Python holds one bucket of one view at a time.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import math
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from feature_store.archive import layout
from feature_store.archive.schema import OFFSET_COLUMN, PARTITION_COLUMN
from feature_store.core.model import Feature, FeatureView, Registry, Source, ValueType
from feature_store.core.tiles import served_windows
from feature_store.export.plan import (
    STATUS_NAMES,
    ExportPlan,
    ExportPlanError,
    OutputColumn,
    ViewJob,
    plan_export,
)
from feature_store.export.replay import ReplayOutput, ViewReplay, clamp_int64, history_ms
from feature_store.export.spine import (
    KEY_PREFIX,
    ROW_INDEX,
    TIME,
    CompactSpine,
    Spine,
    SpineError,
    compact,
    open_spine,
)
from feature_store.export.vector import BASE_COLUMN, run_vector, split_columns, vector_plan

__all__ = [
    "ExportError",
    "ExportOptions",
    "ExportSummary",
    "Prepared",
    "ProgressSink",
    "SpineError",
    "arrow_type",
    "assemble",
    "export",
    "output_fields",
    "prepare",
    "replay_table",
    "run_export",
]

Engine = Literal["auto", "replay"]
_ARROW: dict[ValueType, pa.DataType] = {
    ValueType.BOOL: pa.bool_(),
    ValueType.INT64: pa.int64(),
    ValueType.FLOAT64: pa.float64(),
    ValueType.STRING: pa.string(),
    ValueType.BYTES: pa.binary(),
}
_OUT_BATCH = 65_536
_NO_HIVE = "hive_partitioning = false"  # archive folders are named date=...: never add columns


class ExportError(ValueError):
    """An export that cannot run as asked; raised before any work is done."""


def arrow_type(vt: ValueType) -> pa.DataType:
    if vt.value.endswith("_list"):
        return pa.list_(_ARROW[ValueType(vt.value.removesuffix("_list"))])
    return _ARROW[vt]


class ProgressSink(Protocol):
    def start(self, key: str, description: str, total: int) -> None: ...

    def advance(self, key: str, steps: int = 1) -> None: ...


class _NoProgress:
    def start(self, key: str, description: str, total: int) -> None:
        pass

    def advance(self, key: str, steps: int = 1) -> None:
        pass


@dataclass(frozen=True, slots=True)
class ExportOptions:
    timestamp_column: str = "ts"
    full_names: bool = False
    event_times: bool = False
    engine: Engine = "auto"  # "replay": every view through the per-event core path
    bucket_events: int = 1_000_000  # archived events per bucket of the replay (before filtering)
    bucket_spine_rows: int = 250_000
    work_dir: Path | None = None  # default: a temporary folder next to the output, removed after
    memory_limit: str | None = None  # DuckDB, e.g. "2GB"
    threads: int | None = None  # DuckDB
    # replay buckets of a view run in this many processes (the per-event replay is Python: one
    # core per process); None = one per core (the CLI's default), 1 = in this process
    processes: int | None = 1


@dataclass(slots=True)
class ViewStats:
    path: str = ""  # "vector" or "replay"
    events: int = 0  # selected for the view (after dedup, dead letters, key rules, time range)
    buckets: int = 0
    files: int = 0
    seconds: float = 0.0


@dataclass(slots=True)
class ExportSummary:
    out: Path
    rows: int
    columns: list[str]
    views: dict[str, ViewStats] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Prepared:
    """A validated export: every check that needs no feature computation has passed."""

    plan: ExportPlan
    spine: Spine
    archive: Path
    warnings: tuple[str, ...]


def prepare(
    registry: Registry, service: str, spine_path: Path, archive: Path, options: ExportOptions
) -> Prepared:
    """Validate the request (service, spine schema, archive); raises ExportError or SpineError."""
    try:
        plan = plan_export(registry, service, full_names=options.full_names, event_times=options.event_times)
        spine = open_spine(spine_path, options.timestamp_column, plan.join_keys)
        plan = plan_export(
            registry,
            service,
            full_names=options.full_names,
            event_times=options.event_times,
            spine_columns=spine.schema.names,
        )
    except ExportPlanError as exc:
        raise ExportError(str(exc)) from None
    if not archive.is_dir():
        raise ExportError(
            f"no archive at {archive}: run `fstore archive run --out {archive}` first, or pass --archive"
        )
    warnings = [
        f"the archive has no events of source {name!r}: its features will be NOT_FOUND"
        for name in dict.fromkeys(job.source.name for job in plan.views)
        if not layout.source_dir(archive, name).is_dir()
    ]
    return Prepared(plan, spine, archive, tuple(warnings))


# --- SQL helpers -----------------------------------------------------------------------------------


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _files(paths: Sequence[Path]) -> str:
    return "[" + ", ".join(_literal(str(p)) for p in paths) + "]"


def _glob(folder: Path, depth: int = 1) -> str:
    return _literal(str(folder.joinpath(*["*"] * (depth - 1), "*.parquet")))


def _run(con: duckdb.DuckDBPyConnection, sql: str) -> list[Any]:
    """Run a statement to completion and return its rows."""
    rows: list[Any] = con.execute(sql).fetchall()
    return rows


def _table(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    table: pa.Table = con.sql(sql).to_arrow_table()
    return table


def _arrow_reader(relation: duckdb.DuckDBPyRelation, batch_rows: int) -> pa.RecordBatchReader:
    to_reader = getattr(relation, "to_arrow_reader", None) or relation.fetch_arrow_reader  # duckdb < 1.4
    reader: pa.RecordBatchReader = to_reader(batch_rows)
    return reader


def _connect(options: ExportOptions, work: Path) -> duckdb.DuckDBPyConnection:
    config: dict[str, Any] = {"temp_directory": str(work / "duckdb_tmp")}
    if options.memory_limit:
        config["memory_limit"] = options.memory_limit
    if options.threads:
        config["threads"] = options.threads
    return duckdb.connect(config=config)


# --- the export ------------------------------------------------------------------------------------


@contextlib.contextmanager
def export_run(
    prepared: Prepared, out: Path, options: ExportOptions
) -> Iterator[tuple[ExportSummary, Path, CompactSpine]]:
    """What every engine's run shares: a work folder (removed after, unless the caller chose it),
    the summary (timed), and the compacted spine in the work folder."""
    started = time.monotonic()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = options.work_dir or Path(tempfile.mkdtemp(prefix=".fstore-export-", dir=out.parent))
    work.mkdir(parents=True, exist_ok=True)
    summary = ExportSummary(out, 0, prepared.plan.output_names(), warnings=list(prepared.warnings))
    try:
        compact_spine = compact(prepared.spine, work / "spine.parquet")
        summary.rows = compact_spine.rows
        yield summary, work, compact_spine
        summary.seconds = time.monotonic() - started
    finally:
        if options.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)


def run_export(
    prepared: Prepared,
    out: Path,
    options: ExportOptions,
    progress: ProgressSink | None = None,
) -> ExportSummary:
    """Compute and write the export; the output appears atomically when complete."""
    sink = progress or _NoProgress()
    plan, spine = prepared.plan, prepared.spine
    with export_run(prepared, out, options) as (summary, work, compact_spine):
        con = _connect(options, work)
        try:
            results = []
            if compact_spine.rows:
                for index, job in enumerate(plan.views):
                    view_started = time.monotonic()
                    stats = summary.views[job.view.name] = ViewStats()
                    folder = work / f"view{index}"
                    _export_view(con, job, compact_spine, prepared.archive, folder, options, stats, sink)
                    results.append(folder / "out")
                    stats.seconds = time.monotonic() - view_started
            _assemble(con, plan, spine, compact_spine, results, out, sink)
        finally:
            con.close()
    return summary


def _export_view(
    con: duckdb.DuckDBPyConnection,
    job: ViewJob,
    spine: CompactSpine,
    archive: Path,
    folder: Path,
    options: ExportOptions,
    stats: ViewStats,
    sink: ProgressSink,
) -> None:
    """Compute the view's requested features for every spine row into ``folder/out``.

    Columns the vectorised path can compute exactly go there (with the view's statuses); the
    others are replayed through the core on a view reduced to their features, and combined.
    """
    replay = ViewReplay(job.view, job.source, job.output_indexes)
    eligible, rest = split_columns(job) if options.engine == "auto" else ((), job.columns)
    vector = vector_plan(job, replay.fields, eligible) if eligible else None
    (folder / "out").mkdir(parents=True)
    every = tuple(range(len(replay.fields)))
    buckets = _select(con, job, replay.fields, spine, archive, folder, options, stats, not rest)
    name = job.view.name
    if vector is None or not stats.events:
        stats.path = "replay"
        sink.start(name, f"{name}: replay", buckets)
        whole = _ReplayTask(job.view, job.source, tuple(job.output_indexes), tuple(job.columns), every)
        _replay_buckets(con, whole, replay, folder, buckets, options, False, lambda: sink.advance(name))
        return
    stats.path = "vector" if not rest else "vector+replay"
    sink.start(name, f"{name}: {stats.path}", 1 + (buckets if rest else 0))
    vector_out = folder / ("out" if not rest else "") / "vector.parquet"
    events, spine_files = _glob(folder / "events", depth=2), _glob(folder / "spine", depth=2)
    run_vector(con, vector, events, spine_files, vector_out, options.event_times, with_base=bool(rest))
    sink.advance(name)
    if not rest:
        return
    view, source, outputs = _reduced_view(job, rest)
    reduced = ViewReplay(view, source, outputs)
    fields = tuple(replay.fields.index(f) for f in reduced.fields)
    task = _ReplayTask(view, source, tuple(outputs), tuple(rest), fields)
    _replay_buckets(con, task, reduced, folder, buckets, options, True, lambda: sink.advance(name))
    _combine(con, rest, vector_out, folder / "rest", folder / "out" / "combined.parquet", options.event_times)


def _reduced_view(job: ViewJob, columns: Sequence[OutputColumn]) -> tuple[FeatureView, Source, list[int]]:
    """The view with only the features behind ``columns``, and their outputs in its reads."""
    windows = served_windows(job.view)
    features: list[Feature] = []
    for c in columns:
        feature = windows[c.output_index][0]
        if feature not in features:
            features.append(feature)
    view = dataclasses.replace(job.view, features=tuple(features))
    served = [f.served_name(w) for f, w in served_windows(view)]
    return view, job.source, [served.index(c.feature) for c in columns]


def _combine(
    con: duckdb.DuckDBPyConnection,
    columns: Sequence[OutputColumn],
    vector: Path,
    rest: Path,
    out: Path,
    event_times: bool,
) -> None:
    """The vectorised columns, plus the replayed ones resolved with the view's statuses."""
    parts = [f"v.* EXCLUDE ({BASE_COLUMN})"]
    for c in columns:
        value = f"r.{_ident(c.name)}"
        parts.append(f"CASE WHEN v.{BASE_COLUMN} = 1 THEN {value} END AS {_ident(c.name)}")
        parts.append(
            f"CASE v.{BASE_COLUMN} WHEN 2 THEN 'NOT_FOUND' WHEN 4 THEN 'OUTSIDE_MAX_AGE' "
            f"ELSE CASE WHEN {value} IS NULL THEN 'NULL_VALUE' ELSE 'PRESENT' END END "
            f"AS {_ident(c.status_name)}"
        )
        if event_times:
            time = f"r.{_ident(c.event_time_name)}"
            parts.append(
                f"CASE WHEN v.{BASE_COLUMN} = 2 THEN 0 ELSE {time} END AS {_ident(c.event_time_name)}"
            )
    _run(
        con,
        f"COPY (SELECT {', '.join(parts)} FROM read_parquet({_literal(str(vector))}, {_NO_HIVE}) v "  # noqa: S608
        f"JOIN read_parquet({_glob(rest)}, {_NO_HIVE}) r USING ({ROW_INDEX})) "
        f"TO {_literal(str(out))} (FORMAT PARQUET)",
    )


def _select(
    con: duckdb.DuckDBPyConnection,
    job: ViewJob,
    fields: Sequence[str],
    spine: CompactSpine,
    archive: Path,
    folder: Path,
    options: ExportOptions,
    stats: ViewStats,
    single_bucket: bool,
) -> int:
    """Number the spine's entities, split spine rows and selected events into buckets of entities
    (``folder/spine/bucket=B``, ``folder/events/bucket=B``); return the number of buckets."""
    assert spine.min_t is not None
    assert spine.max_t is not None
    history = history_ms(job.view)
    min_day = None if history is None else layout.day_of(spine.min_t - history)
    files = layout.list_files(
        layout.source_dir(archive, job.source.name), min_day, layout.day_of(spine.max_t)
    )
    stats.files = len(files)
    keys = ", ".join(_ident(KEY_PREFIX + k) for k, _ in job.entity.join_keys)
    spine_sql = f"read_parquet({_literal(str(spine.path))}, {_NO_HIVE})"
    _run(
        con,
        f"CREATE OR REPLACE TEMP TABLE ents AS SELECT {keys}, min({TIME}) AS tmin, max({TIME}) AS tmax, "  # noqa: S608
        f"(row_number() OVER (ORDER BY {keys}) - 1) AS eid FROM {spine_sql} GROUP BY {keys}",
    )
    if single_bucket:
        buckets = 1
    else:
        estimate = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        entities = int(_run(con, "SELECT count(*) FROM ents")[0][0])
        wanted = max(
            math.ceil(estimate / options.bucket_events), math.ceil(spine.rows / options.bucket_spine_rows)
        )
        buckets = max(1, min(wanted, entities))
    stats.buckets = buckets
    on_spine = " AND ".join(
        f"s.{_ident(KEY_PREFIX + k)} = e.{_ident(KEY_PREFIX + k)}" for k, _ in job.entity.join_keys
    )
    _run(
        con,
        f"COPY (SELECT s.{ROW_INDEX}, s.{TIME}, e.eid, e.eid % {buckets} AS bucket "  # noqa: S608
        f"FROM {spine_sql} s JOIN ents e ON {on_spine}) "
        f"TO {_literal(str(folder / 'spine'))} (FORMAT PARQUET, PARTITION_BY (bucket))",
    )
    if files:
        stats.events = _select_events(con, job, fields, files, history, buckets, archive, folder / "events")
    return buckets


def _key_presence(fields: Sequence[tuple[str, ValueType | None]]) -> str:
    """The job's rule: an event whose entity key field (of any view of the source) is null or
    the empty string is dead-lettered (MISSING_ENTITY_KEY) for every view."""
    parts = []
    for name, vt in fields:
        col = f"r.{_ident(name)}"
        parts.append(
            f"({col} IS NOT NULL AND {col} <> '')" if vt is ValueType.STRING else f"{col} IS NOT NULL"
        )
    return " AND ".join(parts) if parts else "TRUE"


_SQL_TYPES = {
    ValueType.BOOL: "BOOLEAN",
    ValueType.INT64: "BIGINT",
    ValueType.FLOAT64: "DOUBLE",
    ValueType.STRING: "VARCHAR",
    ValueType.BYTES: "BLOB",
}


def _sql_type(vt: ValueType | None) -> str:
    """The column type of a field no archived file has yet (a null of the right type)."""
    if vt is None:
        return "VARCHAR"
    if vt.value.endswith("_list"):
        return _SQL_TYPES[ValueType(vt.value.removesuffix("_list"))] + "[]"
    return _SQL_TYPES[vt]


def _select_events(
    con: duckdb.DuckDBPyConnection,
    job: ViewJob,
    fields: Sequence[str],
    files: Sequence[Path],
    history: int | None,
    buckets: int,
    archive: Path,
    dest: Path,
) -> int:
    """Write the view's events, as the job folded them, to ``dest`` by bucket; return their count.

    Columns: eid, bucket, __t (event time), _partition, _offset and ``fields`` as f0, f1...
    """
    source = job.source
    archived = f"read_parquet({_files(files)}, union_by_name = true, {_NO_HIVE})"
    available = {row[0] for row in _run(con, f"DESCRIBE SELECT * FROM {archived}")}  # noqa: S608
    time_col = source.event_time_field
    wanted = dict.fromkeys([time_col, PARTITION_COLUMN, OFFSET_COLUMN, *job.source_key_fields, *fields])
    types = {f.name: f.type for f in source.fields}
    projection = ", ".join(
        _ident(n) if n in available else f"CAST(NULL AS {_sql_type(types.get(n))}) AS {_ident(n)}"
        for n in wanted
    )
    t = f"r.{_ident(time_col)}"
    lower = "" if history is None else f" AND {t} >= e.tmin - {history}"
    on_keys = " AND ".join(
        f"r.{_ident(f)} = e.{_ident(KEY_PREFIX + k)}"
        for f, (k, _) in zip(job.view.entity_key_fields, job.entity.join_keys, strict=True)
    )
    presence = _key_presence([(name, types.get(name)) for name in job.source_key_fields])
    dead_files = layout.list_files(layout.dead_letter_dir(archive, source.name))
    rejected = ""
    if dead_files:
        dead = f"read_parquet({_files(dead_files)}, union_by_name = true, {_NO_HIVE})"
        rejected = (
            f"AND NOT EXISTS (SELECT 1 FROM {dead} d "  # noqa: S608
            f"WHERE d.topic = {_literal(source.topic)} AND d.partition = r.{PARTITION_COLUMN} "
            f"AND d.offset = r.{OFFSET_COLUMN})"
        )
    selected = "".join(f", r.{_ident(name)} AS f{i}" for i, name in enumerate(fields))
    query = (
        f"SELECT e.eid, e.eid % {buckets} AS bucket, {t} AS __t, r.{PARTITION_COLUMN}, "  # noqa: S608
        f"r.{OFFSET_COLUMN}{selected} "
        f"FROM (SELECT DISTINCT ON ({PARTITION_COLUMN}, {OFFSET_COLUMN}) {projection} FROM {archived}) r "
        f"JOIN ents e ON {on_keys} WHERE {t} <= e.tmax{lower} AND {presence} {rejected}"
    )
    written = _run(con, f"COPY ({query}) TO {_literal(str(dest))} (FORMAT PARQUET, PARTITION_BY (bucket))")
    return int(written[0][0]) if written else 0


@dataclass(frozen=True, slots=True)
class _ReplayTask:
    """What a replay of a view's buckets needs, picklable for worker processes."""

    view: FeatureView
    source: Source
    outputs: tuple[int, ...]
    columns: tuple[OutputColumn, ...]
    fields: tuple[int, ...]


def _replay_processes(options: ExportOptions, buckets: int) -> int:
    wanted = options.processes if options.processes is not None else (os.cpu_count() or 1)
    return max(1, min(wanted, buckets))


def _replay_buckets(
    con: duckdb.DuckDBPyConnection,
    task: _ReplayTask,
    replay: ViewReplay,
    folder: Path,
    buckets: int,
    options: ExportOptions,
    raw: bool,
    advance: Callable[[], None],
) -> None:
    """Replay every bucket of a view, here or in worker processes (``options.processes``).

    Buckets hold disjoint entities and each writes its own file, so the result does not depend on
    where or in which order they run. Workers are spawned (never forked: DuckDB and the driver
    keep threads), each with its own one-thread DuckDB connection.
    """
    event_times = options.event_times or raw
    processes = _replay_processes(options, buckets)
    if processes == 1:
        for bucket in range(buckets):
            _replay_bucket(con, task.columns, replay, task.fields, folder, bucket, event_times, raw)
            advance()
        return
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=context) as pool:
        futures = [
            pool.submit(_replay_bucket_worker, task, folder, bucket, event_times, raw, options.memory_limit)
            for bucket in range(buckets)
        ]
        for future in concurrent.futures.as_completed(futures):
            future.result()  # a worker's exception is raised here
            advance()


def _replay_bucket_worker(
    task: _ReplayTask, folder: Path, bucket: int, event_times: bool, raw: bool, memory_limit: str | None
) -> None:
    config: dict[str, Any] = {"threads": 1, "temp_directory": str(folder / f"duckdb_tmp_{bucket}")}
    if memory_limit:
        config["memory_limit"] = memory_limit
    con = duckdb.connect(config=config)
    try:
        replay = ViewReplay(task.view, task.source, task.outputs)
        _replay_bucket(con, task.columns, replay, task.fields, folder, bucket, event_times, raw)
    finally:
        con.close()


def _replay_bucket(
    con: duckdb.DuckDBPyConnection,
    columns: Sequence[OutputColumn],
    replay: ViewReplay,
    fields: Sequence[int],
    folder: Path,
    bucket: int,
    event_times: bool,
    raw: bool,
) -> None:
    """Replay one bucket; write ``out/bucket-B.parquet`` (or, ``raw``, ``rest/bucket-B.parquet``
    with the reads' values and event times, to be resolved by :func:`_combine`).

    ``fields`` index the selected event columns (f0, f1...) the replay reads, in its order.
    """
    spine_dir = folder / "spine" / f"bucket={bucket}"
    if not spine_dir.is_dir():
        return
    rows = _table(
        con,
        f"SELECT eid, {TIME}, {ROW_INDEX} FROM read_parquet({_glob(spine_dir)}, {_NO_HIVE}) "  # noqa: S608
        f"ORDER BY eid, {TIME}, {ROW_INDEX}",
    )
    event_dir = folder / "events" / f"bucket={bucket}"
    if event_dir.is_dir():
        selected = "".join(f", f{i}" for i in fields)
        events = _table(
            con,
            f"SELECT eid, __t{selected} FROM read_parquet({_glob(event_dir)}, {_NO_HIVE}) "  # noqa: S608
            f"ORDER BY eid, __t, {PARTITION_COLUMN}, {OFFSET_COLUMN}",
        )
        data = [c.to_pylist() for c in events.columns]
    else:
        data = [[] for _ in range(2 + len(fields))]
    output = replay.run(
        data[0], data[1], data[2:], rows.column(0).to_pylist(), rows.column(1).to_pylist(), raw=raw
    )
    table = replay_table(columns, output, rows.column(2).combine_chunks(), event_times, raw=raw)
    dest = folder / ("rest" if raw else "out")
    dest.mkdir(exist_ok=True)
    pq.write_table(table, dest / f"bucket-{bucket}.parquet")


def replay_table(
    columns: Sequence[OutputColumn],
    output: ReplayOutput,
    row_index: pa.Array,
    event_times: bool,
    *,
    raw: bool = False,
) -> pa.Table:
    """A replay's results as a table: ``row_idx`` (the spine rows, in ``output``'s order), then
    per column its value, status name (not ``raw``) and newest event time (``event_times``).

    int64 values outside int64 become ``ERROR`` (:func:`clamp_int64`, in place)."""
    arrays: list[pa.Array] = [row_index]
    names = [ROW_INDEX]
    for k, column in enumerate(columns):
        values, statuses = output.values[k], output.statuses[k]
        if column.value_type is ValueType.INT64 and not raw:
            clamp_int64(values, statuses)
        arrays.append(pa.array(values, type=arrow_type(column.value_type)))
        names.append(column.name)
        if not raw:
            arrays.append(pa.array([STATUS_NAMES[s] for s in statuses], type=pa.string()))
            names.append(column.status_name)
        if event_times:
            arrays.append(pa.array(output.event_times[k], type=pa.int64()))
            names.append(column.event_time_name)
    return pa.Table.from_arrays(arrays, names=names)


# --- assembling the output -------------------------------------------------------------------------


class _Rows:
    """Takes exactly ``n`` rows at a time from a record batch reader."""

    def __init__(self, reader: pa.RecordBatchReader, schema: pa.Schema) -> None:
        self._reader = reader
        self._schema = schema
        self._buffer: list[pa.RecordBatch] = []
        self._have = 0

    def take(self, n: int) -> pa.Table:
        while self._have < n:
            try:
                batch = self._reader.read_next_batch()
            except StopIteration:
                raise RuntimeError(f"feature results ended {n - self._have} row(s) early") from None
            self._buffer.append(batch)
            self._have += batch.num_rows
        table = pa.Table.from_batches(self._buffer)
        head, tail = table.slice(0, n), table.slice(n)
        self._buffer = tail.to_batches()
        self._have -= n
        return head.cast(self._schema)


def output_fields(plan: ExportPlan) -> list[pa.Field]:
    fields: list[pa.Field] = []
    for c in plan.columns:
        fields.append(pa.field(c.name, arrow_type(c.value_type)))
        fields.append(pa.field(c.status_name, pa.string()))
        if plan.event_times:
            fields.append(pa.field(c.event_time_name, pa.int64()))
    return fields


def _assemble(
    con: duckdb.DuckDBPyConnection,
    plan: ExportPlan,
    spine: Spine,
    compact_spine: CompactSpine,
    results: Sequence[Path],
    out: Path,
    sink: ProgressSink,
) -> None:
    """Write the spine's columns, in file order, followed by every feature column."""
    features = pa.schema(output_fields(plan))
    schema = pa.schema(list(spine.schema) + list(features), metadata=spine.schema.metadata)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            if compact_spine.rows:
                sources = [f"read_parquet({_glob(r)}, {_NO_HIVE}) v{i}" for i, r in enumerate(results)]
                joined = sources[0] + "".join(f" JOIN {s} USING ({ROW_INDEX})" for s in sources[1:])
                names = ", ".join(_ident(n) for n in features.names)
                query = f"SELECT {names} FROM {joined} ORDER BY {ROW_INDEX}"  # noqa: S608
                rows = _Rows(_arrow_reader(con.sql(query), _OUT_BATCH), features)
                sink.start("assemble", "write output", compact_spine.rows)
                for batch in spine.batches(_OUT_BATCH):
                    if batch.num_rows == 0:
                        continue
                    table = pa.Table.from_batches([batch])
                    for f, column in zip(features, rows.take(batch.num_rows).columns, strict=True):
                        table = table.append_column(f, column)
                    writer.write_table(table.replace_schema_metadata(schema.metadata))
                    sink.advance("assemble", batch.num_rows)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def assemble(
    plan: ExportPlan,
    spine: Spine,
    compact_spine: CompactSpine,
    results: Sequence[Path],
    out: Path,
    options: ExportOptions,
    work: Path,
    progress: ProgressSink | None = None,
) -> None:
    """Write the output as :func:`run_export` does, from per-view result folders (Parquet files
    of ``row_idx`` and the view's columns, each spine row exactly once): for other engines."""
    con = _connect(options, work)
    try:
        _assemble(con, plan, spine, compact_spine, results, out, progress or _NoProgress())
    finally:
        con.close()


def export(
    registry: Registry,
    service: str,
    spine_path: Path,
    archive: Path,
    out: Path,
    options: ExportOptions | None = None,
    progress: ProgressSink | None = None,
) -> ExportSummary:
    """Validate, then run (the library entry point; the CLI calls the two steps itself)."""
    opts = options or ExportOptions()
    return run_export(prepare(registry, service, spine_path, archive, opts), out, opts, progress)
