"""The point-in-time export as a Flink batch job: ``fstore export --engine flink``.

Same inputs, same output file as :func:`feature_store.export.engine.run_export`; the per-entity
work is distributed over Flink task slots, keyed by entity bucket (see docs/export.md)::

    driver    prepare (validation) ─► compact spine (pyarrow, streamed) ─► work items: the
              archive files of the service's sources (date-pruned) and the spine's row groups
    Flink     (BATCH runtime mode; the local MiniCluster, or a cluster with the same entry point)
      work items ─► ReadInputs (flat_map, pyarrow): read one file (only the needed columns), drop
          dead-lettered events and events without an entity key, split the rows by (view, entity
          bucket) into Arrow IPC batches
        ─► key_by (view, bucket) ─► ReplayBucket (KeyedProcessFunction): buffer the key's batches
          (batch mode runs one key to completion; a timer at the end of input fires when all its
          records are in), dedup on (_partition, _offset), join the spine rows on the typed
          entity key, keep each entity's time range, sort, ViewReplay.run (the core)
        ─► (view, bucket, results as Arrow IPC) ─► collected by the driver
    driver    per-view result files ─► engine.assemble (the local engine's own assembly) ─► output

The event selection reproduces the local engine's SQL (``engine._select_events``) rule for rule:
dedup on ``(_partition, _offset)``, the dead-letter anti-join on ``(topic, partition, offset)``,
the job's key rule over every view of the source, typed key equality with the spine and the
per-entity range ``[t_min - history, t_max]``; the replay, the result columns (``replay_table``)
and the assembly are the local engine's code. Every view goes through the replay (the
vectorised path is DuckDB's, in one process); the local engine's tests assert both paths give
identical files.

:class:`InputReader` and :class:`BucketReplayer` are plain Python, so the job's logic can be
exercised without Flink; the Flink functions are thin wrappers built in :func:`_build`.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from feature_store.archive import layout
from feature_store.archive.schema import OFFSET_COLUMN, PARTITION_COLUMN
from feature_store.core.keys import entity_key_bytes
from feature_store.core.model import ValueType
from feature_store.export.engine import (
    ExportOptions,
    ExportSummary,
    Prepared,
    ProgressSink,
    ViewStats,
    assemble,
    export_run,
    replay_table,
)
from feature_store.export.plan import ExportPlan, ViewJob
from feature_store.export.replay import ViewReplay, history_ms
from feature_store.export.spine import KEY_PREFIX, ROW_INDEX, TIME

__all__ = [
    "BucketReplayer",
    "FlinkExportOptions",
    "InputReader",
    "WorkItem",
    "execute_in_process",
    "execute_on_flink",
    "run_flink_export",
]

EVENTS, SPINE = "events", "spine"  # work item kinds, and the kind of a batch between the operators
_T, _P, _O = "__t", PARTITION_COLUMN, OFFSET_COLUMN  # columns of an event batch, after k0..kn
_END_OF_INPUT = (1 << 63) - 1  # a batch job's final watermark: a timer here fires when a key is done


@dataclass(frozen=True, slots=True)
class FlinkExportOptions:
    parallelism: int = 1
    buckets: int | None = None  # entity buckets per view (default: from the input sizes, >= 2 x parallelism)
    rows_per_record: int = 65_536  # rows per Arrow batch between the operators


WorkItem = tuple[str, str, str, int]  # (EVENTS, source, file, 0) or (SPINE, "", compact spine, row group)


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    data: bytes = sink.getvalue().to_pybytes()
    return data


def _from_ipc(data: bytes) -> pa.Table:
    table: pa.Table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
    return table


def bucket_of(key: Sequence[Any], buckets: int) -> int:
    """The entity bucket of a typed key: stable across processes (unlike ``hash``)."""
    return zlib.crc32(entity_key_bytes(key)) % buckets


@dataclass(frozen=True, slots=True)
class _View:
    index: int
    job: ViewJob
    fields: tuple[str, ...]  # the replay's event fields, in its order
    history: int | None


def _views(plan: ExportPlan) -> tuple[_View, ...]:
    return tuple(
        _View(i, job, ViewReplay(job.view, job.source, job.output_indexes).fields, history_ms(job.view))
        for i, job in enumerate(plan.views)
    )


class InputReader:
    """A work item -> ``(view index, bucket, kind, Arrow IPC batch)`` records.

    Event batches hold ``k0..kn`` (the view's entity key fields), ``__t``, ``_partition``,
    ``_offset`` and ``f0..fm`` (the replay's fields); spine batches ``row_idx``, ``t``, ``k0..kn``.
    """

    def __init__(self, plan: ExportPlan, archive: Path, buckets: int, rows_per_record: int) -> None:
        self.plan = plan
        self.archive = archive
        self.buckets = buckets
        self.rows_per_record = rows_per_record
        self._dead: dict[str, frozenset[tuple[int, int]]] = {}
        self._specs: tuple[_View, ...] = ()  # built on first use, in the task

    @property
    def views(self) -> tuple[_View, ...]:
        if not self._specs:
            self._specs = _views(self.plan)
        return self._specs

    def read(self, item: WorkItem) -> Iterator[tuple[int, int, str, bytes]]:
        kind, source, path, row_group = item
        if kind == EVENTS:
            yield from self._events(source, Path(path))
        else:
            yield from self._spine(Path(path), row_group)

    def _emit(
        self, view: int, kind: str, table: pa.Table, keys: Sequence[str]
    ) -> Iterator[tuple[int, int, str, bytes]]:
        if table.num_rows == 0:
            return
        columns = [table.column(k).to_pylist() for k in keys]
        by_bucket: dict[int, list[int]] = {}
        for row, key in enumerate(zip(*columns, strict=True)):
            by_bucket.setdefault(bucket_of(key, self.buckets), []).append(row)
        for bucket, rows in sorted(by_bucket.items()):
            part = table.take(pa.array(rows, type=pa.int64()))
            for start in range(0, part.num_rows, self.rows_per_record):
                yield view, bucket, kind, _ipc(part.slice(start, self.rows_per_record))

    def _spine(self, path: Path, row_group: int) -> Iterator[tuple[int, int, str, bytes]]:
        rows = pq.ParquetFile(path).read_row_group(row_group)
        for view in self.views:
            names = [KEY_PREFIX + k for k, _ in view.job.entity.join_keys]
            part = rows.select([ROW_INDEX, TIME, *names]).rename_columns(
                [ROW_INDEX, TIME, *(f"k{i}" for i in range(len(names)))]
            )
            yield from self._emit(view.index, SPINE, part, [f"k{i}" for i in range(len(names))])

    def _dead_letters(self, source_name: str) -> frozenset[tuple[int, int]]:
        """``(partition, offset)`` of every event of the source the job dead-lettered."""
        if source_name not in self._dead:
            topic = self.plan.registry.source(source_name).topic
            found: set[tuple[int, int]] = set()
            for f in layout.list_files(layout.dead_letter_dir(self.archive, source_name)):
                table = pq.ParquetFile(f).read(columns=["topic", "partition", "offset"])
                for t, p, o in zip(*(c.to_pylist() for c in table.columns), strict=True):
                    if t == topic and p is not None and o is not None:
                        found.add((p, o))
            self._dead[source_name] = frozenset(found)
        return self._dead[source_name]

    def _events(self, source_name: str, path: Path) -> Iterator[tuple[int, int, str, bytes]]:
        views = [v for v in self.views if v.job.source.name == source_name]
        source = views[0].job.source
        time_col = source.event_time_field
        key_fields = views[0].job.source_key_fields
        wanted = list(
            dict.fromkeys(
                [time_col, _P, _O, *key_fields]
                + [f for v in views for f in (*v.job.view.entity_key_fields, *v.fields)]
            )
        )
        file = pq.ParquetFile(path)
        present = set(file.schema_arrow.names)
        table = file.read(columns=[n for n in wanted if n in present])
        for name in wanted:  # a field no file of this schema version has: null (union by name)
            if name not in present:
                table = table.append_column(name, pa.nulls(table.num_rows))
        # the job's key rule: an entity key field of any view of the source null or "" -> dropped
        types = {f.name: f.type for f in source.fields}
        keep = pc.is_valid(table.column(time_col))
        for name in key_fields:
            column = table.column(name)
            keep = pc.and_(keep, pc.is_valid(column))
            if types.get(name) is ValueType.STRING and not pa.types.is_null(column.type):
                keep = pc.and_(keep, pc.fill_null(pc.not_equal(column, ""), False))
        dead = self._dead_letters(source_name)
        if dead:
            located = zip(table.column(_P).to_pylist(), table.column(_O).to_pylist(), strict=True)
            keep = pc.and_(keep, pa.array([(p, o) not in dead for p, o in located], type=pa.bool_()))
        table = table.filter(keep)
        for view in views:
            keys = view.job.view.entity_key_fields
            names = [*keys, time_col, _P, _O, *view.fields]
            renamed = [
                *(f"k{i}" for i in range(len(keys))),
                _T,
                _P,
                _O,
                *(f"f{i}" for i in range(len(view.fields))),
            ]
            part = table.select(names).rename_columns(renamed)
            yield from self._emit(view.index, EVENTS, part, renamed[: len(keys)])


class BucketReplayer:
    """One (view, bucket) key's batches -> the replay's results for its spine rows."""

    def __init__(self, plan: ExportPlan, event_times: bool) -> None:
        self.plan = plan
        self.event_times = event_times
        self._views = _views(plan)
        self._replays: dict[int, ViewReplay] = {}

    def replay(
        self, view_index: int, events: Iterable[bytes], spine: Iterable[bytes]
    ) -> tuple[int, bytes] | None:
        """``(events folded, Arrow IPC of row_idx + the view's columns)``; None without spine rows."""
        view = self._views[view_index]
        spine_tables = [_from_ipc(b) for b in spine]
        if not spine_tables:
            return None
        rows = pa.concat_tables(spine_tables)
        n_keys = len(view.job.view.entity_key_fields)
        keys = list(zip(*(rows.column(f"k{i}").to_pylist() for i in range(n_keys)), strict=True))
        times: list[int] = rows.column(TIME).to_pylist()
        ranges: dict[tuple[Any, ...], list[int]] = {}
        for key, t in zip(keys, times, strict=True):
            span = ranges.setdefault(key, [t, t])
            span[0], span[1] = min(span[0], t), max(span[1], t)
        eid = {key: i for i, key in enumerate(sorted(ranges))}
        row_idx: list[int] = rows.column(ROW_INDEX).to_pylist()
        spine_order = sorted(range(len(keys)), key=lambda j: (eid[keys[j]], times[j], row_idx[j]))

        replay = self._replays.get(view_index)
        if replay is None:
            replay = self._replays[view_index] = ViewReplay(
                view.job.view, view.job.source, view.job.output_indexes
            )
        event_tables = [_from_ipc(b) for b in events]
        entities: list[int] = []
        event_time: list[int] = []
        columns: list[list[Any]] = [[] for _ in view.fields]
        if event_tables:
            table = pa.concat_tables(event_tables, promote_options="permissive")
            ev_keys = zip(*(table.column(f"k{i}").to_pylist() for i in range(n_keys)), strict=True)
            ev_t, ev_p, ev_o = (table.column(c).to_pylist() for c in (_T, _P, _O))
            seen: set[tuple[int, int]] = set()
            selected: list[tuple[int, int, int, int, int]] = []  # (eid, t, partition, offset, row)
            for row, (key, t, p, o) in enumerate(zip(ev_keys, ev_t, ev_p, ev_o, strict=True)):
                if (p, o) in seen:  # an archiver replay (the same event at the same position)
                    continue
                seen.add((p, o))
                bounds = ranges.get(key)
                if (
                    bounds is None
                    or t > bounds[1]
                    or (view.history is not None and t < bounds[0] - view.history)
                ):
                    continue
                selected.append((eid[key], t, p, o, row))
            selected.sort()
            fields = [table.column(f"f{i}").to_pylist() for i in range(len(view.fields))]
            for e, t, _, _, row in selected:
                entities.append(e)
                event_time.append(t)
                for column, values in zip(columns, fields, strict=True):
                    column.append(values[row])
        output = replay.run(
            entities,
            event_time,
            columns,
            [eid[keys[j]] for j in spine_order],
            [times[j] for j in spine_order],
        )
        index = pa.array([row_idx[j] for j in spine_order], type=pa.int64())
        return len(entities), _ipc(replay_table(view.job.columns, output, index, self.event_times))


def _plan_inputs(plan: ExportPlan, archive: Path, min_t: int, max_t: int) -> dict[str, list[Path]]:
    """Per source of the plan: its archive files in the date folders some view can need."""
    lows: dict[str, int | None] = {}
    for job in plan.views:
        history = history_ms(job.view)
        low = None if history is None else layout.day_of(min_t - history)
        name = job.source.name
        if name not in lows:
            lows[name] = low
        else:
            seen = lows[name]
            lows[name] = None if seen is None or low is None else min(seen, low)
    return {
        name: layout.list_files(layout.source_dir(archive, name), low, layout.day_of(max_t))
        for name, low in lows.items()
    }


def run_flink_export(
    prepared: Prepared,
    out: Path,
    options: ExportOptions,
    flink: FlinkExportOptions | None = None,
    progress: ProgressSink | None = None,
    executor: Executor | None = None,
) -> ExportSummary:
    """Compute the export as a Flink batch job (``executor``: :func:`execute_on_flink`, or
    :func:`execute_in_process`); the output is the local engine's file: the same schema, rows,
    values, statuses and event times."""
    started = time.monotonic()
    settings = flink or FlinkExportOptions()
    plan, spine = prepared.plan, prepared.spine
    with export_run(prepared, out, options) as (summary, work, compact_spine):
        results = [work / f"view{i}" / "out" for i in range(len(plan.views))]
        if compact_spine.rows:
            assert compact_spine.min_t is not None
            assert compact_spine.max_t is not None
            files = _plan_inputs(plan, prepared.archive, compact_spine.min_t, compact_spine.max_t)
            estimate = max(
                (sum(pq.ParquetFile(f).metadata.num_rows for f in fs) for fs in files.values()), default=0
            )
            buckets = settings.buckets or max(
                2 * settings.parallelism,
                math.ceil(estimate / options.bucket_events),
                math.ceil(compact_spine.rows / options.bucket_spine_rows),
            )
            items: list[WorkItem] = [(EVENTS, s, str(f), 0) for s, fs in files.items() for f in fs]
            row_groups = pq.ParquetFile(compact_spine.path).metadata.num_row_groups
            items += [(SPINE, "", str(compact_spine.path), g) for g in range(row_groups)]
            for i, job in enumerate(plan.views):
                summary.views[job.view.name] = ViewStats(
                    path="flink", buckets=buckets, files=len(files[job.source.name])
                )
                results[i].mkdir(parents=True)
            _run_job(
                plan,
                prepared.archive,
                items,
                buckets,
                options,
                settings,
                executor or execute_on_flink,
                results,
                summary,
                progress,
            )
            job_seconds = time.monotonic() - started
            for stats in summary.views.values():
                stats.seconds = job_seconds
        assemble(plan, spine, compact_spine, results, out, options, work, progress)
    return summary


Result = tuple[int, int, int, bytes]  # (view index, bucket, events folded, Arrow IPC of the rows)
Executor = Callable[
    [InputReader, BucketReplayer, Sequence[WorkItem], FlinkExportOptions, str], Iterator[Result]
]


def execute_on_flink(
    reader: InputReader,
    replayer: BucketReplayer,
    items: Sequence[WorkItem],
    settings: FlinkExportOptions,
    job_name: str,
) -> Iterator[Result]:
    """Run the dataflow as a Flink batch job; its results as they are collected."""
    _, stream = _build(reader, replayer, items, settings)
    with stream.execute_and_collect(job_name) as collected:
        for view, bucket, events, payload in collected:
            yield int(view), int(bucket), int(events), bytes(payload)


def execute_in_process(
    reader: InputReader,
    replayer: BucketReplayer,
    items: Sequence[WorkItem],
    settings: FlinkExportOptions,
    job_name: str,
) -> Iterator[Result]:
    """The same dataflow in this process, without Flink (the shuffle is a dict): to test the job's
    logic quickly on many cases, and to debug it."""
    events: dict[tuple[int, int], list[bytes]] = {}
    spine: dict[tuple[int, int], list[bytes]] = {}
    for item in items:
        for view, bucket, kind, payload in reader.read(item):
            (spine if kind == SPINE else events).setdefault((view, bucket), []).append(payload)
    for view, bucket in sorted(spine):
        result = replayer.replay(view, events.get((view, bucket), []), spine[(view, bucket)])
        if result is not None:
            yield view, bucket, result[0], result[1]


def _run_job(
    plan: ExportPlan,
    archive: Path,
    items: list[WorkItem],
    buckets: int,
    options: ExportOptions,
    settings: FlinkExportOptions,
    executor: Executor,
    results: Sequence[Path],
    summary: ExportSummary,
    progress: ProgressSink | None,
) -> None:
    """Run the job and write each (view, bucket) result to ``results[view]/bucket-B.parquet``."""
    reader = InputReader(plan, archive.resolve(), buckets, settings.rows_per_record)
    replayer = BucketReplayer(plan, options.event_times)
    names = [job.view.name for job in plan.views]
    if progress is not None:
        for name in names:
            progress.start(name, f"{name}: flink", buckets)
    rows = [0] * len(names)
    received = [0] * len(names)
    seen: set[tuple[int, int]] = set()
    for view, bucket, events, payload in executor(
        reader, replayer, items, settings, f"fstore-export-{plan.service}"
    ):
        if (view, bucket) in seen:
            raise RuntimeError(f"the job returned bucket {bucket} of view {names[view]!r} twice")
        seen.add((view, bucket))
        table = _from_ipc(payload)
        pq.write_table(table, results[view] / f"bucket-{bucket}.parquet")
        rows[view] += table.num_rows
        summary.views[names[view]].events += events
        received[view] += 1
        if progress is not None:
            progress.advance(names[view])
    for view, name in enumerate(names):
        if rows[view] != summary.rows:
            raise RuntimeError(f"the job returned {rows[view]} rows of view {name!r}, not {summary.rows}")
        if progress is not None and received[view] < buckets:
            progress.advance(name, buckets - received[view])


def _build(
    reader: InputReader, replayer: BucketReplayer, items: Sequence[WorkItem], settings: FlinkExportOptions
) -> tuple[Any, Any]:
    """The job graph on a new BATCH environment: (environment, the result stream)."""
    from pyflink.common import Types  # noqa: PLC0415 - keep pyflink out of import time
    from pyflink.datastream import FlatMapFunction, KeyedProcessFunction, RuntimeExecutionMode  # noqa: PLC0415
    from pyflink.datastream.state import ListStateDescriptor  # noqa: PLC0415

    from feature_store.stream.environment import FlinkSettings, create_environment  # noqa: PLC0415

    class ReadInputs(FlatMapFunction):  # type: ignore[misc]
        def __init__(self, reader: InputReader) -> None:
            self.reader = reader

        def flat_map(self, item: Any) -> Iterator[tuple[int, int, str, bytes]]:
            yield from self.reader.read((item[0], item[1], item[2], item[3]))

    class ReplayBucket(KeyedProcessFunction):  # type: ignore[misc]
        def __init__(self, replayer: BucketReplayer) -> None:
            self.replayer = replayer

        def open(self, runtime_context: Any) -> None:
            batch = Types.PRIMITIVE_ARRAY(Types.BYTE())
            self.events = runtime_context.get_list_state(ListStateDescriptor("events", batch))
            self.spine = runtime_context.get_list_state(ListStateDescriptor("spine", batch))

        def process_element(self, value: Any, ctx: Any) -> None:
            (self.spine if value[2] == SPINE else self.events).add(value[3])
            ctx.timer_service().register_event_time_timer(_END_OF_INPUT)

        def on_timer(self, timestamp: int, ctx: Any) -> Iterator[tuple[int, int, int, bytes]]:
            view, bucket = ctx.get_current_key()
            result = self.replayer.replay(
                view, [bytes(b) for b in self.events.get() or ()], [bytes(b) for b in self.spine.get() or ()]
            )
            self.events.clear()
            self.spine.clear()
            if result is not None:
                yield view, bucket, result[0], result[1]

    # the export reads no connector: one empty entry keeps the environment from adding the Kafka jar
    env = create_environment(
        # thread mode (PEMJA), the project's default: in process mode (Beam workers) PyFlink 2.2.1
        # lost whole keys of this keyed batch job (their end-of-key timers never produced output)
        FlinkSettings(parallelism=settings.parallelism, execution_mode="thread", jars=("",))
    )
    env.set_runtime_mode(RuntimeExecutionMode.BATCH)
    batch = Types.PRIMITIVE_ARRAY(Types.BYTE())
    item_type = Types.TUPLE([Types.STRING(), Types.STRING(), Types.STRING(), Types.INT()])
    p = settings.parallelism
    stream = (
        env.from_collection(list(items), type_info=item_type)
        .flat_map(
            ReadInputs(reader), output_type=Types.TUPLE([Types.INT(), Types.INT(), Types.STRING(), batch])
        )
        .name("read archive and spine")
        .set_parallelism(p)
        .key_by(lambda r: (r[0], r[1]), key_type=Types.TUPLE([Types.INT(), Types.INT()]))
        # results pickled whole: the collect sink's typed conversion turns byte[] into signed ints
        .process(ReplayBucket(replayer), output_type=Types.PICKLED_BYTE_ARRAY())
        .name("replay entity buckets")
        .set_parallelism(p)
    )
    return env, stream
