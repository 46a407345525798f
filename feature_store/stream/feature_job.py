"""The generic feature job: Kafka events of one or more sources -> tiles in the online store.

Per source::

    Kafka (raw bytes + partition/offset, Table API source; watermarks per partition)
      -> route         decode (Confluent wire format), too late?, filter,        --> dead letters
                       fan out per view: in the JVM (jobs/jvm EventRouter, by the jvm_route
                       plan) when every view of the source merges in SQL, with RouteEvents
                       (Python) behind it for the records it hands over; else RouteEvents
      views whose IRs the JVM merges exactly (tile_sql):
         one-event IRs -> key_by entity -> TileMerger (jobs/jvm, keyed state: every tile of
         the entity; changed tiles out every flush interval and before each checkpoint
         barrier; or, with tile_merge="sql", Flink SQL mini-batch GROUP BY (view, entity,
         tile), the same tiles byte for byte), encoded in the JVM (TileEncoder)
         -> CqlTileSink (one sink for every source; UNLOGGED batches per replica set, async,
         waits for its writes at checkpoints)
      other views:
         -> key_by (view, entity)
         -> WriteTiles fold into tiles in keyed MapState; every flush interval, write the
                       key's dirty tiles as one single-partition batch (absolute state,
                       USING TIMESTAMP/TTL), asynchronously, confirmed by a timer
    dead letters -> Kafka <source>.dlq (JSON with reason, origin and original bytes)

Everything the job stores is absolute and versioned per tile, and a key keeps a checkpointed
timer until its writes are confirmed, so a restart from the last checkpoint rewrites identical
cells and loses none.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from cassandra.query import BatchStatement, BatchType

from feature_store.adapters.avro_wire import DeadLetterReason, dead_letter
from feature_store.adapters.cql import CqlConfig
from feature_store.adapters.cql_online_store import insert_cql
from feature_store.adapters.schema_registry import SchemaRegistryClient, SchemaRegistryConfig
from feature_store.core.model import Registry
from feature_store.core.tiles import ViewAggregator
from feature_store.stream.environment import FlinkSettings, create_environment
from feature_store.stream.jvm_route import NotRoutable, route_plan
from feature_store.stream.tile_sql import SourceTilesSql, sql_ineligible
from feature_store.stream.tile_writer import (
    DeadLetter,
    EventRouter,
    KeyTiles,
    Routed,
    ViewTiles,
    parse_tile_state_key,
    split_key,
    unpack,
    write_timestamp_us,
)

log = logging.getLogger(__name__)
_END_OF_INPUT = (1 << 63) - 1
# tiles of one key go out as single-partition batches up to this many payload bytes (below
# Cassandra's batch_size_warn_threshold; ScyllaDB has the same knob); bigger tiles go alone
_BATCH_BYTES = 4096
_STALLED_S = 30.0
# the tile sink's row (jobs/jvm CqlTileSink): column names and SQL types
TILE_ROW: Final = (
    ("insert_cql", "STRING"),
    ("entity_key", "BYTES"),
    ("feature_view", "STRING"),
    ("granularity_ms", "BIGINT"),
    ("tile_start_ms", "BIGINT"),
    ("payload", "BYTES"),
    ("expires_ms", "BIGINT"),
    ("timestamp_us", "BIGINT"),
)


WriteBatching = Literal["replica_set", "partition"]
TileMerge = Literal["operator", "sql"]


@dataclass(frozen=True, slots=True)
class JobConfig:
    registry: Registry
    sources: tuple[str, ...]
    bootstrap: str = "127.0.0.1:9092"
    cql: CqlConfig = field(default_factory=CqlConfig)
    group_id: str = "fstore-features"
    flush_interval_ms: int = 250
    # while the tile merger is catching up (its newest event time > 10 s behind the wall clock:
    # a backlog, a backfill), changed tiles wait up to this long instead (fewer writes, since
    # freshness is lost to the lag anyway); at most flush_interval_ms disables it
    catch_up_flush_ms: int = 1000
    cached_keys: int = 100_000  # decoded tiles kept in memory per operator (write-through)
    # 0 = no idleness: a partition without data holds the watermark back (so nothing is judged
    # late). Idleness is opt-in because under backpressure (catching up after a restore) Flink can
    # mark a busy partition idle, let the watermark run ahead and dead-letter in-order events.
    idleness_ms: int = 0
    write_concurrency: int = 256  # tile writes in flight per operator
    # which waiting tiles of the SQL path share an UNLOGGED batch (jobs/jvm CqlTileSink):
    # "replica_set" every partition the same replicas own (one request for many entities),
    # "partition" one entity's tiles in one table
    write_batching: WriteBatching = "replica_set"
    # a batch's size at most, estimated as the store counts it: below the store's
    # batch_size_warn_threshold (Cassandra's default 5 KiB, the local stack's 64 KiB, ScyllaDB's
    # 128 KiB)
    write_batch_bytes: int = 16_384
    # merge the tiles of every view whose IRs the JVM merges exactly in Flink SQL (tile_sql)
    # instead of the Python keyed operator; False keeps every view on the Python path
    sql_tiles: bool = True
    # how the JVM merges those views' one-event IRs into tiles: "operator" the keyed jobs/jvm
    # TileMerger, "sql" Flink SQL mini-batch aggregations (same tiles, byte for byte)
    tile_merge: TileMerge = "operator"
    # route a source in the JVM when every view of it merges in SQL (jvm_route); False keeps the
    # Python router for every record
    jvm_route: bool = True
    bounded: bool = False  # stop at the offsets that exist at start (tests, backfills)
    schema_registry: SchemaRegistryConfig | None = None  # for schema ids the applied registry lacks
    flink: FlinkSettings = field(default_factory=FlinkSettings)


def expiry_horizon_ms(watermark_ms: int, now_ms: int) -> int:
    """The time tiles of the job's state are expired against: the later of the watermark and the
    wall clock.

    The store already expires tiles by the wall clock (USING TTL from now), and no read at "now"
    looks at a tile past its retention, so dropping it from state then changes nothing anyone
    reads. The wall clock keeps state bounded when the watermark is held back: with idleness
    off (the default), a Kafka partition without records holds the watermark at its minimum
    forever, and expiring by the watermark alone would keep every tile.
    """
    return max(watermark_ms, now_ms)


def _dlq_bytes(dl: DeadLetter, topic: str) -> bytes:
    return dead_letter(dl.reason, dl.message, dl.payload, topic, dl.partition, dl.offset)


def sql_view_indices(registry: Registry, source_name: str) -> list[int]:
    """The source's views (by index) whose tiles the job merges in SQL."""
    source = registry.source(source_name)
    types = {f.name: f.type for f in source.fields}
    return [
        i
        for i, view in enumerate(registry.views_of_source(source_name))
        if sql_ineligible(view, ViewAggregator(view, types)) is None
    ]


def _sql_plans(config: JobConfig, t_env: Any) -> dict[str, SourceTilesSql]:
    """The SQL-merged views per source; configures the table environment when there are any."""
    plans: dict[str, SourceTilesSql] = {}
    if config.sql_tiles:
        for name in config.sources:
            indices = sql_view_indices(config.registry, name)
            if indices:
                plans[name] = SourceTilesSql(config.registry, name, config.cql.keyspace, indices)
    if plans and config.tile_merge == "sql":
        t_env.create_java_temporary_system_function("fstore_tile", "io.featurestore.flink.TileEncoder")
        t_env.create_java_temporary_system_function("fstore_hll", "io.featurestore.flink.HllSketch")
        t_env.create_java_temporary_system_function("fstore_last", "io.featurestore.flink.LastN")
        table_config = t_env.get_config()
        table_config.set("table.exec.mini-batch.enabled", "true")
        table_config.set("table.exec.mini-batch.allow-latency", f"{config.flush_interval_ms} ms")
        table_config.set("table.exec.mini-batch.size", "20000")
        table_config.set("table.optimizer.agg-phase-strategy", "ONE_PHASE")
        # state TTL: per aggregation, by a STATE_TTL hint in each plan's query (windowed tiles
        # live as long as a window reads them, lifetime tiles for ever)
    return plans


def build(config: JobConfig) -> Any:
    """Build the job graph on a new environment; returns the environment (call ``execute``)."""
    from pyflink.common import Row, Types  # noqa: PLC0415
    from pyflink.datastream import KeyedProcessFunction, OutputTag, ProcessFunction  # noqa: PLC0415
    from pyflink.datastream.connectors.base import DeliveryGuarantee  # noqa: PLC0415
    from pyflink.datastream.connectors.kafka import (  # noqa: PLC0415
        KafkaRecordSerializationSchema,
        KafkaSink,
    )
    from pyflink.datastream.state import MapStateDescriptor  # noqa: PLC0415
    from pyflink.table import StreamTableEnvironment  # noqa: PLC0415

    env = create_environment(config.flink)
    t_env = StreamTableEnvironment.create(env)
    registry = config.registry
    dlq_tag = OutputTag("dead-letters", Types.PRIMITIVE_ARRAY(Types.BYTE()))
    # events of views on the Python keyed path (the main output carries the SQL path's rows)
    keyed_tag = OutputTag("keyed", Types.PICKLED_BYTE_ARRAY())
    plans = _sql_plans(config, t_env)

    class RouteEvents(ProcessFunction):  # type: ignore[misc]
        """The Python router: of every record of the source, or (``behind_jvm``) of the records
        the JVM router hands over, ``(value, partition, offset, newest event time)``."""

        def __init__(self, source_name: str, behind_jvm: bool = False) -> None:
            self.source_name = source_name
            self.behind_jvm = behind_jvm
            self.router: EventRouter | None = None

        def open(self, runtime_context: Any) -> None:
            schemas = SchemaRegistryClient(config.schema_registry) if config.schema_registry else None
            self.router = EventRouter(registry, self.source_name, schemas)
            self.plan = plans.get(self.source_name)
            self.sql_views = frozenset(self.plan.view_indices) if self.plan else frozenset()
            group = runtime_context.get_metrics_group().add_group("source", self.source_name)
            self.dlq_counters = {r: group.counter(f"dead_letters_{r.value}") for r in DeadLetterReason}
            self.events = group.counter("events_in")
            self.rate = group.meter("events_per_second", time_span_in_seconds=10)
            self.seen = 0
            self.watermark_lag_ms = 0
            group.gauge("watermark_lag_ms", lambda: self.watermark_lag_ms)

        def process_element(self, row: Any, ctx: Any) -> Iterator[Any]:
            assert self.router is not None
            self.seen += 1
            if self.seen >= 1024:
                self._report()
                # how far event time trails the wall clock, sampled with the other metrics
                now_watermark = ctx.timer_service().current_watermark()
                self.watermark_lag_ms = max(0, int(time.time() * 1000) - now_watermark)
            if self.behind_jvm:  # the JVM router saw the partition's records first
                self.router.observe(row[1], row[3])
            # the watermark is a JVM call: asked only for an event that may be too late
            result = self.router.route(bytes(row[0]), row[1], row[2], ctx.timer_service().current_watermark)
            if isinstance(result, DeadLetter):
                self.dlq_counters[result.reason].inc()
                yield dlq_tag, _dlq_bytes(result, self.router.source.topic)
                return
            plan = self.plan
            for routed in result:
                if plan is not None:
                    index, entity = split_key(routed.key)  # once per event and view
                    if index in self.sql_views:
                        irs = plan.route_split(index, entity, routed)
                        if irs is not None:
                            yield Row(*irs)
                        continue
                yield keyed_tag, routed

        def _report(self) -> None:
            # metric calls cross into the JVM: batch them (at most 1024 events behind)
            if self.behind_jvm:  # the JVM router counted these records already
                self.seen = 0
                return
            self.events.inc(self.seen)
            self.rate.mark_event(self.seen)
            self.seen = 0

        def close(self) -> None:
            if self.seen:
                self._report()

    class WriteTiles(KeyedProcessFunction):  # type: ignore[misc]
        """Folds events into tiles (keyed state) and writes dirty tiles every flush interval.

        State: ``tiles`` (MapState tile key -> packed version + tile) and processing-time
        timers. Which tiles are dirty or in flight lives in memory only: a key whose timer fires
        with nothing in memory (after a restore) rewrites all its tiles, which is idempotent.
        """

        def __init__(self, source_name: str) -> None:
            self.source_name = source_name

        def open(self, runtime_context: Any) -> None:
            from feature_store.adapters.cql import make_cluster  # noqa: PLC0415

            source = registry.source(self.source_name)
            views = [v for v in registry.views if v.source == self.source_name]
            self.tiles_of = [ViewTiles(v, source) for v in views]
            self.tiles = runtime_context.get_map_state(
                # bytes as latin-1 text: thread mode hands byte[] state to the JVM as Object[],
                # which breaks checkpoints; a 1:1 byte<->char mapping in a String does not
                MapStateDescriptor("tiles", Types.STRING(), Types.STRING())
            )
            self.backing = _MapStateView(self.tiles)
            self.cache: OrderedDict[str, KeyTiles] = OrderedDict()
            self.dirty: dict[str, set[str] | None] = {}  # None: every tile of the key
            self.inflight: dict[str, TileWrites] = {}  # writes sent, not yet confirmed
            self.armed: set[str] = set()  # keys with a processing-time timer pending
            self.end_armed: set[str] = set()  # keys with the end-of-input timer (bounded runs)
            self.window = threading.BoundedSemaphore(config.write_concurrency)
            self.flushes = 0
            self.cluster = make_cluster(config.cql)
            self.session = self.cluster.connect(config.cql.keyspace)
            self.inserts = {v.name: self.session.prepare(insert_cql(config.cql.keyspace, v)) for v in views}
            group = runtime_context.get_metrics_group().add_group("source", self.source_name)
            self.tiles_written = group.counter("tiles_written")
            self.write_errors = group.counter("write_errors")
            self.write_ms = group.distribution("write_batch_ms")
            self.watermark_lag_ms = 0
            group.gauge("watermark_lag_ms", lambda: self.watermark_lag_ms)

        def close(self) -> None:
            self.cluster.shutdown()

        def _key_tiles(self, key: str) -> KeyTiles:
            tiles = self.cache.get(key)
            if tiles is None:
                tiles = self.cache[key] = KeyTiles(self.backing)
                if len(self.cache) > config.cached_keys:
                    self.cache.popitem(last=False)
            else:
                self.cache.move_to_end(key)
            return tiles

        def process_element(self, value: Routed, ctx: Any) -> Iterable[Any]:
            key = value.key
            index, _ = split_key(key)
            # first touch of a key in this operator's life (or since its eviction): its state may
            # hold tiles dirtied before a restore, so its next flush rewrites all of them
            fresh = key not in self.cache
            changed = self.tiles_of[index].apply(self._key_tiles(key), value.event_time_ms, value.fields)
            if not changed:
                return ()
            if key not in self.dirty:
                self._arm(ctx, key, config.flush_interval_ms)
                self.dirty[key] = None if fresh else set(changed)
            elif fresh:
                self.dirty[key] = None
            else:
                dirty = self.dirty[key]
                if dirty is not None:
                    dirty.update(changed)
            return ()

        def on_timer(self, timestamp: int, ctx: Any) -> Iterable[Any]:
            """Confirm this key's writes in flight, then write its dirty tiles asynchronously.

            A key keeps a processing-time timer while it has dirty or unconfirmed tiles, and
            timers are checkpointed: after a restore a timer fires for a key with nothing in
            memory, which rewrites all its tiles (idempotent). So a checkpoint taken while writes
            are in flight never loses them, and the task thread never waits on the store.
            """
            key = ctx.get_current_key()
            final = timestamp == _END_OF_INPUT  # bounded input ended: settle everything now
            if not final:
                self.armed.discard(key)
            inflight = self.inflight.get(key)
            if inflight is not None and not self._settle(key, inflight, final):
                self._arm(ctx, key, config.flush_interval_ms)  # still in flight: look again soon
                return []
            if key in self.dirty:
                wanted = self.dirty.pop(key)
            elif key not in self.cache and inflight is None:
                wanted = None  # a timer restored from a checkpoint: rewrite all tiles
            else:
                return []
            index, entity = split_key(key)
            view_tiles = self.tiles_of[index]
            skeys = set(self.tiles.keys()) if wanted is None else wanted
            source = self.cache.get(key) or self.backing  # memory first: no state read per tile
            writes = self._write(entity, view_tiles, skeys, source)
            self.flushes += 1
            if self.flushes % 16 == 0:  # now and then: drop tiles no window reads any more
                watermark = ctx.timer_service().current_watermark()
                now_ms = int(time.time() * 1000)
                self.watermark_lag_ms = max(0, now_ms - watermark)
                self._expire(key, view_tiles, expiry_horizon_ms(watermark, now_ms))
            if final:
                for attempt in range(5):
                    writes.wait()
                    self._account(writes)
                    if not writes.failed:
                        break
                    time.sleep(0.2 * (attempt + 1))
                    writes = self._write(entity, view_tiles, writes.failed, self.backing)
                else:
                    raise RuntimeError(f"writing tiles of {key!r} failed: {writes.error}")
                return []
            self.inflight[key] = writes
            self._arm(ctx, key, config.flush_interval_ms)
            return []

        def _settle(self, key: str, inflight: TileWrites, final: bool) -> bool:
            """Account for a key's finished writes (failed tiles become dirty again)."""
            if final:
                inflight.wait()
            elif inflight.stalled:
                log.warning("tile writes of %r unanswered for %.0f s: writing them again", key, _STALLED_S)
                inflight.failed.update(inflight.sent)
            elif not inflight.done:
                return False
            del self.inflight[key]
            self._account(inflight)
            if inflight.failed:
                retry = self.dirty.setdefault(key, set())
                if retry is not None:
                    retry.update(inflight.failed)
            return True

        def _write(
            self, entity: str, view_tiles: ViewTiles, skeys: set[str], source: KeyTiles | _MapStateView
        ) -> TileWrites:
            view = view_tiles.view.name
            insert = self.inserts[view]
            entity_key = entity.encode()
            now_ms = int(time.time() * 1000)
            writes = TileWrites(self.window)
            batch: list[tuple[str, tuple[Any, ...]]] = []
            size = 0
            for skey in skeys:
                packed = source.get_packed(skey)
                if packed is None:
                    continue
                tile = parse_tile_state_key(skey)
                version, payload = unpack(packed)
                if batch and size + len(payload) > _BATCH_BYTES:
                    writes.start(self.session, insert, batch)
                    batch, size = [], 0
                ttl = view_tiles.ttl_seconds(tile, now_ms)
                batch.append(
                    (
                        skey,
                        (entity_key, view, tile[0], tile[1], payload, ttl, write_timestamp_us(tile, version)),
                    )
                )
                size += len(payload)
            if batch:
                writes.start(self.session, insert, batch)
            writes.seal()
            return writes

        def _account(self, writes: TileWrites) -> None:
            # metrics are touched on the task thread only (driver callbacks run elsewhere)
            self.tiles_written.inc(writes.written)
            if writes.failed:
                self.write_errors.inc(len(writes.failed))
            self.write_ms.update(writes.elapsed_ms)

        def _arm(self, ctx: Any, key: str, delay_ms: int) -> None:
            """Make sure ``key`` has a processing-time timer pending (at most one per key)."""
            if key in self.armed:
                return
            # Flink's processing time is the wall clock: no JVM call to read it
            ctx.timer_service().register_processing_time_timer(int(time.time() * 1000) + delay_ms)
            self.armed.add(key)
            if config.bounded and key not in self.end_armed:
                # processing-time timers are dropped at the end of bounded input; the final
                # watermark (Long.MAX_VALUE) fires this one, so nothing stays unwritten
                ctx.timer_service().register_event_time_timer(_END_OF_INPUT)
                self.end_armed.add(key)

        def _expire(self, key: str, view_tiles: ViewTiles, watermark: int) -> None:
            cached = self.cache.get(key)
            for skey in list(self.tiles.keys()):
                tile = parse_tile_state_key(skey)
                if view_tiles.expired(tile, watermark):
                    self.tiles.remove(skey)
                    if cached is not None:
                        cached.forget(tile)

    tile_streams: list[Any] = []  # the SQL path's changed tiles, per source
    for source_name in config.sources:
        source = registry.source(source_name)
        if not registry.views_of_source(source_name):
            continue
        plan = plans.get(source_name)
        table = f"src_{source_name}"
        bounded = "'scan.bounded.mode' = 'latest-offset'," if config.bounded else ""
        idle = f"'scan.watermark.idle-timeout' = '{config.idleness_ms} ms'," if config.idleness_ms else ""
        # Watermarks come from the Kafka record timestamp, per partition, inside the JVM source:
        # producers set it to the event time (the generator and client do). The payload's
        # event time is what tiles use; the lateness check compares it with this watermark.
        delay_s = source.watermark_delay_ms / 1000
        t_env.execute_sql(
            f"""CREATE TEMPORARY TABLE {table} (
                  `value` BYTES,
                  `partition` INT METADATA VIRTUAL,
                  `offset` BIGINT METADATA VIRTUAL,
                  `kafka_ts` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL,
                  WATERMARK FOR `kafka_ts` AS `kafka_ts` - INTERVAL '{delay_s:.3f}' SECOND
                ) WITH (
                  'connector' = 'kafka',
                  'topic' = '{source.topic}',
                  'properties.bootstrap.servers' = '{config.bootstrap}',
                  'properties.group.id' = '{config.group_id}.{source_name}',
                  'scan.startup.mode' = 'group-offsets',
                  'properties.auto.offset.reset' = 'earliest',
                  {idle}
                  {bounded}
                  'format' = 'raw'
                )"""
        )
        raw = t_env.to_data_stream(t_env.from_path(table))
        jvm_plan = _jvm_route_plan(config, source_name, plan)
        if plan is None:  # no SQL path: the main output stays empty
            row_type = Types.ROW_NAMED(["vi"], [Types.INT()])
        else:
            row_type = Types.ROW_NAMED(
                list(plan.routed_columns),
                [Types.INT(), Types.STRING(), Types.LONG(), *map(_type_info, plan.input_types)],
            )
        if jvm_plan is None:
            routed = raw.process(RouteEvents(source_name), output_type=row_type).name(f"route-{source_name}")
            sql_rows, dead_letters = routed, routed.get_side_output(dlq_tag)
        else:
            routed, sql_rows, dead_letters = _routed_in_jvm(
                raw, jvm_plan, row_type, RouteEvents(source_name, True)
            )
            sql_rows = sql_rows.union(routed)
            dead_letters = dead_letters.union(routed.get_side_output(dlq_tag))
        if len(plan.view_indices if plan else ()) < len(registry.views_of_source(source_name)):
            (
                routed.get_side_output(keyed_tag)
                .key_by(lambda r: r.key, key_type=Types.STRING())
                .process(WriteTiles(source_name), output_type=Types.PICKLED_BYTE_ARRAY())
                .name(f"tiles-{source_name}")
            )
        if plan is not None:
            tile_streams.append(_tile_stream(config, t_env, plan, source_name, sql_rows))
        dlq_sink = (
            KafkaSink.builder()
            .set_bootstrap_servers(config.bootstrap)
            .set_record_serializer(
                KafkaRecordSerializationSchema.builder()
                .set_topic(source.dead_letter_topic)
                .set_value_serialization_schema(_ByteArraySchema())
                .build()
            )
            .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
            .build()
        )
        dead_letters.sink_to(dlq_sink).name(f"dlq-{source_name}")
    if tile_streams:
        # one writer for every source: one driver session, and the changed tiles of an entity
        # from different sources batch together (one table per entity)
        tile_streams[0].union(*tile_streams[1:]).sink_to(_tile_sink(config)).name("write-tiles")
    return env


def _tile_stream(config: JobConfig, t_env: Any, plan: SourceTilesSql, source_name: str, rows: Any) -> Any:
    """The source's changed tiles as the sink's rows, merged from its routed rows by the keyed
    operator or by Flink SQL (``config.tile_merge``)."""
    if config.tile_merge == "operator":
        return _merged_tiles(config, plan, source_name, rows)
    from pyflink.table import ChangelogMode  # noqa: PLC0415

    t_env.create_temporary_view(f"routed_{source_name}", t_env.from_data_stream(rows))
    tiles = t_env.sql_query(plan.write_sql(f"routed_{source_name}"))
    return t_env.to_changelog_stream(tiles, _sql_tile_row(), changelog_mode=ChangelogMode.upsert())


def _type_info(sql_type: str) -> Any:
    """The DataStream type of a routed or tile row's column of ``sql_type``."""
    from pyflink.common import Types  # noqa: PLC0415

    if sql_type == "BYTES":
        return Types.PRIMITIVE_ARRAY(Types.BYTE())
    return {"STRING": Types.STRING, "BIGINT": Types.LONG, "INT": Types.INT}[sql_type]()


def _sql_tile_row() -> Any:
    """The SQL merge's output schema: the sink's row, one type for every source (the queries'
    CHAR(n) lengths and nullability differ per source, which would keep their streams from one
    union)."""
    from pyflink.table import DataTypes, Schema  # noqa: PLC0415

    types = {"STRING": DataTypes.STRING(), "BYTES": DataTypes.BYTES(), "BIGINT": DataTypes.BIGINT()}
    builder = Schema.new_builder()
    for name, sql_type in TILE_ROW:
        builder = builder.column(name, types[sql_type])
    return builder.build()


def _merged_tiles(config: JobConfig, plan: SourceTilesSql, source_name: str, rows: Any) -> Any:
    """The source's changed tiles, merged from its routed rows by jobs/jvm TileMerger."""
    from pyflink.common import Types  # noqa: PLC0415
    from pyflink.datastream import DataStream  # noqa: PLC0415
    from pyflink.java_gateway import get_gateway  # noqa: PLC0415

    jvm = get_gateway().jvm
    merger = jvm.io.featurestore.flink.TileMerger
    tile_type = Types.ROW_NAMED([name for name, _ in TILE_ROW], [_type_info(t) for _, t in TILE_ROW])
    plan_json = json.dumps(plan.merge_plan(), separators=(",", ":"))
    keyed = rows._j_data_stream.keyBy(merger.entityKey(), Types.STRING().get_java_type_info())  # noqa: SLF001
    j_tiles = keyed.transform(
        f"merge-tiles-{source_name}",
        tile_type.get_java_type_info(),
        merger(plan_json, config.flush_interval_ms, config.catch_up_flush_ms),
    )
    # a stable id for its state (the tiles) across changes elsewhere in the job's graph
    j_tiles.uid(f"merge-tiles-{source_name}")
    return DataStream(j_tiles)


def _jvm_route_plan(config: JobConfig, source_name: str, plan: SourceTilesSql | None) -> str | None:
    """The JVM router's plan (JSON) for the source, or ``None``: the Python router routes it."""
    if plan is None or not config.jvm_route:
        return None
    try:
        return json.dumps(route_plan(config.registry, source_name, plan), separators=(",", ":"))
    except NotRoutable as exc:
        log.info("source %s: routed in Python (%s)", source_name, exc)
        return None


def _routed_in_jvm(raw: Any, plan_json: str, row_type: Any, python_router: Any) -> tuple[Any, Any, Any]:
    """Route ``raw`` in the JVM (jobs/jvm EventRouter) by ``plan_json``; the records it hands over
    go through ``python_router``. Returns (the Python router's stream, the JVM's routed rows,
    the JVM's dead letters)."""
    from pyflink.datastream import DataStream  # noqa: PLC0415
    from pyflink.java_gateway import get_gateway  # noqa: PLC0415

    router = get_gateway().jvm.io.featurestore.flink.EventRouter
    j_raw = raw._j_data_stream  # noqa: SLF001 - PyFlink wraps no Java process function
    j_routed = j_raw.process(router(plan_json), row_type.get_java_type_info())
    name = python_router.source_name
    j_routed.name(f"route-{name}")
    handed_over = DataStream(j_routed.getSideOutput(router.fallbackTag()))
    python_routed = handed_over.process(python_router, output_type=row_type).name(f"route-python-{name}")
    return python_routed, DataStream(j_routed), DataStream(j_routed.getSideOutput(router.deadLetterTag()))


def _tile_sink(config: JobConfig) -> Any:
    """The JVM tile writer (jobs/jvm CqlTileSink)."""
    from pyflink.datastream.connectors.base import Sink  # noqa: PLC0415
    from pyflink.java_gateway import get_gateway  # noqa: PLC0415

    gateway = get_gateway()
    hosts = gateway.new_array(gateway.jvm.String, len(config.cql.hosts))
    for i, host in enumerate(config.cql.hosts):
        hosts[i] = host
    j_sink = gateway.jvm.io.featurestore.flink.CqlTileSink(
        hosts,
        config.cql.port,
        config.cql.local_dc or "",
        config.write_concurrency,
        int(config.cql.request_timeout_s * 1000),
        config.write_batching.upper(),
        config.write_batch_bytes,
    )
    return Sink(j_sink)


def _ByteArraySchema() -> Any:
    """Flink's byte[] serialization schema (PyFlink has no Python wrapper for it)."""
    from pyflink.common.serialization import SerializationSchema  # noqa: PLC0415
    from pyflink.java_gateway import get_gateway  # noqa: PLC0415

    gateway = get_gateway()
    j_schema = gateway.jvm.org.apache.flink.api.common.serialization.ByteArraySchema()
    return SerializationSchema(j_serialization_schema=j_schema)


class TileWrites:
    """The tile writes of one key's flush: sent asynchronously, confirmed later by a timer.

    ``window`` bounds the writes in flight across the operator (backpressure on the task
    thread when the store is slow); driver callbacks run on the driver's event loop thread.
    """

    __slots__ = (
        "_done",
        "_lock",
        "_sealed",
        "_started",
        "_window",
        "elapsed_ms",
        "error",
        "failed",
        "remaining",
        "sent",
        "written",
    )

    def __init__(self, window: threading.BoundedSemaphore) -> None:
        self._window = window
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._sealed = False
        self._started = time.monotonic()
        self.remaining = 0
        self.failed: set[str] = set()
        self.sent: list[str] = []
        self.error: BaseException | None = None
        self.elapsed_ms = 0
        self.written = 0

    def start(self, session: Any, statement: Any, rows: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Send ``rows`` (tile state key, bound values) of one partition as one request: a lone
        INSERT, or an UNLOGGED batch (single-partition: one mutation, applied atomically)."""
        skeys = [skey for skey, _ in rows]
        self.sent.extend(skeys)
        self._window.acquire()
        with self._lock:
            self.remaining += 1
        try:
            if len(rows) == 1:
                request = statement.bind(rows[0][1])
            else:
                request = BatchStatement(batch_type=BatchType.UNLOGGED)
                for _, values in rows:
                    request.add(statement, values)
            # no per-request driver timer (a libev timer per write was ~10% of the job's
            # Python time); the key's confirm timer gives up on writes older than _STALLED_S
            future = session.execute_async(request, timeout=None)
        except Exception as exc:  # e.g. no host available: the timer retries
            self._finish(skeys, exc)
            return
        future.add_callbacks(self._ok, self._failed, callback_args=(len(skeys),), errback_args=(skeys,))

    def seal(self) -> None:
        """No more writes will start: the last callback (or this call) completes the batch."""
        with self._lock:
            self._sealed = True
            if self.remaining == 0:
                self._complete()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def stalled(self) -> bool:
        """Unanswered for too long (e.g. a node died mid-request): write the tiles again."""
        return not self._done.is_set() and time.monotonic() - self._started > _STALLED_S

    def wait(self) -> None:
        self._done.wait()

    def _ok(self, _rows: Any, count: int) -> None:
        self._finish([], None, count)

    def _failed(self, exc: BaseException, skeys: list[str]) -> None:
        self._finish(skeys, exc)

    def _finish(self, skeys: list[str], exc: BaseException | None, written: int = 0) -> None:
        self._window.release()
        with self._lock:
            self.remaining -= 1
            self.written += written
            if exc is not None:
                self.failed.update(skeys)
                self.error = exc
            if self._sealed and self.remaining == 0:
                self._complete()

    def _complete(self) -> None:
        self.elapsed_ms = int((time.monotonic() - self._started) * 1000)
        if self.error is not None:
            log.warning("writing %d tile(s) failed, retrying: %s", len(self.failed), self.error)
        self._done.set()


class _MapStateView:
    """A MutableMapping-like view of a Flink MapState[str, bytes] for ViewTiles.apply."""

    __slots__ = ("_state",)

    def __init__(self, state: Any) -> None:
        self._state = state

    def get(self, key: str) -> bytes | None:
        value = self._state.get(key)
        return None if value is None else value.encode("latin-1")

    get_packed = get

    def __setitem__(self, key: str, value: bytes) -> None:
        self._state.put(key, value.decode("latin-1"))


def run(config: JobConfig, job_name: str = "fstore-features") -> int:
    """Run the job to completion (bounded) or until stopped; returns its net runtime in ms."""
    result = build(config).execute(job_name)
    return int(result.get_net_runtime())
