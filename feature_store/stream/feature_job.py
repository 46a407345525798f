"""The generic feature job: Kafka events of one or more sources -> tiles in the online store.

Per source::

    Kafka (raw bytes + partition/offset, Table API source)
      -> RouteEvents   decode (Confluent wire format), filter, fan out per view  --> dead letters
      -> watermarks    bounded out-of-orderness, idleness
      -> key_by (view, entity)
      -> WriteTiles    fold into tiles in keyed MapState; too-late events          --> dead letters
                       every flush interval: write dirty tiles (absolute state, USING TIMESTAMP/TTL)
    dead letters -> Kafka <source>.dlq (JSON with reason, origin and original bytes)

Everything the job stores is absolute and versioned per tile, and dirty flags live in
checkpointed state, so a restart from the last checkpoint rewrites identical cells.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from feature_store.adapters.avro_wire import DeadLetterReason, dead_letter
from feature_store.adapters.cql import CqlConfig
from feature_store.core.model import Registry
from feature_store.stream.environment import FlinkSettings, create_environment
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


@dataclass(frozen=True, slots=True)
class JobConfig:
    registry: Registry
    sources: tuple[str, ...]
    bootstrap: str = "127.0.0.1:9092"
    cql: CqlConfig = field(default_factory=CqlConfig)
    group_id: str = "fstore-features"
    flush_interval_ms: int = 250
    cached_keys: int = 100_000  # decoded tiles kept in memory per operator (write-through)
    # 0 = no idleness: a partition without data holds the watermark back (so nothing is judged
    # late). Idleness is opt-in because under backpressure (catching up after a restore) Flink can
    # mark a busy partition idle, let the watermark run ahead and dead-letter in-order events.
    idleness_ms: int = 0
    write_concurrency: int = 64
    bounded: bool = False  # stop at the offsets that exist at start (tests, backfills)
    flink: FlinkSettings = field(default_factory=FlinkSettings)


def _dlq_bytes(dl: DeadLetter, topic: str) -> bytes:
    return dead_letter(dl.reason, dl.message, dl.payload, topic, dl.partition, dl.offset)


def build(config: JobConfig) -> Any:
    """Build the job graph on a new environment; returns the environment (call ``execute``)."""
    from pyflink.common import Types  # noqa: PLC0415
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

    class RouteEvents(ProcessFunction):  # type: ignore[misc]
        def __init__(self, source_name: str) -> None:
            self.source_name = source_name
            self.router: EventRouter | None = None

        def open(self, runtime_context: Any) -> None:
            self.router = EventRouter(registry, self.source_name)
            group = runtime_context.get_metrics_group().add_group("source", self.source_name)
            self.dlq_counters = {r: group.counter(f"dead_letters_{r.value}") for r in DeadLetterReason}
            self.events = group.counter("events_in")
            self.rate = group.meter("events_per_second", time_span_in_seconds=10)

        def process_element(self, row: Any, ctx: Any) -> Iterator[Any]:
            assert self.router is not None
            self.events.inc()
            self.rate.mark_event()
            result = self.router.route(bytes(row[0]), row[1], row[2])
            if isinstance(result, DeadLetter):
                self.dlq_counters[result.reason].inc()
                yield dlq_tag, _dlq_bytes(result, self.router.source.topic)
                return
            yield from result

    class WriteTiles(KeyedProcessFunction):  # type: ignore[misc]
        """Folds events into tiles (keyed state) and writes dirty tiles every flush interval.

        State: ``tiles`` (MapState tile key -> packed version + tile) and processing-time
        timers. Which tiles are dirty lives in memory only: a key whose timer fires with no
        dirty set in memory (after a restore) rewrites all its tiles, which is idempotent.
        """

        def __init__(self, source_name: str) -> None:
            self.source_name = source_name

        def open(self, runtime_context: Any) -> None:
            from feature_store.adapters.cql import make_cluster  # noqa: PLC0415

            source = registry.source(self.source_name)
            self.topic = source.topic
            self.allowed_lateness_ms = source.allowed_lateness_ms
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
            self.flushes = 0
            self.cluster = make_cluster(config.cql)
            self.session = self.cluster.connect(config.cql.keyspace)
            self.inserts = {
                v.name: self.session.prepare(
                    f"INSERT INTO {v.table} (entity_key, granularity_ms, tile_start_ms, payload)"  # noqa: S608
                    " VALUES (?, ?, ?, ?) USING TTL ? AND TIMESTAMP ?"
                )
                for v in views
            }
            group = runtime_context.get_metrics_group().add_group("source", self.source_name)
            self.too_late = group.counter(f"dead_letters_{DeadLetterReason.TOO_LATE.value}")
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

        def _schedule(self, ctx: Any) -> None:
            at = ctx.timer_service().current_processing_time() + config.flush_interval_ms
            ctx.timer_service().register_processing_time_timer(at)
            if config.bounded:
                # processing-time timers are dropped at the end of bounded input; the final
                # watermark (Long.MAX_VALUE) fires this one, so nothing stays unwritten
                ctx.timer_service().register_event_time_timer(_END_OF_INPUT)

        def process_element(self, value: Routed, ctx: Any) -> Iterator[Any]:
            watermark = ctx.timer_service().current_watermark()
            if value.event_time_ms < watermark - self.allowed_lateness_ms:
                self.too_late.inc()
                late = DeadLetter(
                    DeadLetterReason.TOO_LATE,
                    f"event time {value.event_time_ms} is more than {self.allowed_lateness_ms} ms "
                    f"behind the watermark {watermark}",
                    value.payload,
                    value.partition,
                    value.offset,
                )
                yield dlq_tag, _dlq_bytes(late, self.topic)
                return
            key = value.key
            index, _ = split_key(key)
            # first touch of a key in this operator's life (or since its eviction): its state may
            # hold tiles dirtied before a restore, so its next flush rewrites all of them
            fresh = key not in self.cache
            changed = self.tiles_of[index].apply(self._key_tiles(key), value.event_time_ms, value.fields)
            if not changed:
                return
            if key not in self.dirty:
                self._schedule(ctx)
                self.dirty[key] = None if fresh else set(changed)
            elif fresh:
                self.dirty[key] = None
            else:
                dirty = self.dirty[key]
                if dirty is not None:
                    dirty.update(changed)

        def on_timer(self, timestamp: int, ctx: Any) -> Iterable[Any]:
            key = ctx.get_current_key()
            dirty = self.dirty.pop(key, None)
            index, entity = split_key(key)
            view_tiles = self.tiles_of[index]
            # None: all tiles (a timer restored from a checkpoint, or a key fresh in memory)
            skeys = dirty if dirty is not None else set(self.tiles.keys())
            if not skeys:
                return []
            insert = self.inserts[view_tiles.view.name]
            entity_key = entity.encode()
            now_ms = int(time.time() * 1000)
            pending = []
            for skey in skeys:
                packed = self.backing.get(skey)
                if packed is None:
                    continue
                tile = parse_tile_state_key(skey)
                version, payload = unpack(packed)
                params = (
                    entity_key,
                    tile[0],
                    tile[1],
                    payload,
                    view_tiles.ttl_seconds(tile, now_ms),
                    write_timestamp_us(tile, version),
                )
                pending.append((skey, self.session.execute_async(insert, params)))
            failed: set[str] = set()
            started = time.monotonic()
            for skey, future in pending:
                try:
                    future.result()
                    self.tiles_written.inc()
                except Exception as exc:  # store outage: keep it dirty and retry later
                    failed.add(skey)
                    self.write_errors.inc()
                    log.warning("writing tile %s of %s failed: %s", skey, view_tiles.view.name, exc)
            if pending:
                self.write_ms.update(int((time.monotonic() - started) * 1000))
            watermark = ctx.timer_service().current_watermark()
            self.watermark_lag_ms = max(0, now_ms - watermark)
            self.flushes += 1
            if self.flushes % 16 == 0:  # drop tiles no window reads any more
                self._expire(key, view_tiles, watermark, failed)
            if failed:
                retry = self.dirty.setdefault(key, set())
                if retry is not None:
                    retry.update(failed)
                ctx.timer_service().register_processing_time_timer(
                    ctx.timer_service().current_processing_time() + max(1000, config.flush_interval_ms)
                )
            return []

        def _expire(self, key: str, view_tiles: ViewTiles, watermark: int, keep: set[str]) -> None:
            cached = self.cache.get(key)
            for skey in list(self.tiles.keys()):
                tile = parse_tile_state_key(skey)
                if skey not in keep and view_tiles.expired(tile, watermark):
                    self.tiles.remove(skey)
                    if cached is not None:
                        cached.states[tile] = None
                        cached.versions.pop(tile, None)

    for source_name in config.sources:
        source = registry.source(source_name)
        if not registry.views_of_source(source_name):
            continue
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
        routed = raw.process(RouteEvents(source_name), output_type=Types.PICKLED_BYTE_ARRAY()).name(
            f"route-{source_name}"
        )
        tiles = (
            routed.key_by(lambda r: r.key, key_type=Types.STRING())
            .process(WriteTiles(source_name), output_type=Types.PICKLED_BYTE_ARRAY())
            .name(f"tiles-{source_name}")
        )
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
        routed.get_side_output(dlq_tag).union(tiles.get_side_output(dlq_tag)).sink_to(dlq_sink).name(
            f"dlq-{source_name}"
        )
    return env


def _ByteArraySchema() -> Any:
    """Flink's byte[] serialization schema (PyFlink has no Python wrapper for it)."""
    from pyflink.common.serialization import SerializationSchema  # noqa: PLC0415
    from pyflink.java_gateway import get_gateway  # noqa: PLC0415

    gateway = get_gateway()
    j_schema = gateway.jvm.org.apache.flink.api.common.serialization.ByteArraySchema()
    return SerializationSchema(j_serialization_schema=j_schema)


class _MapStateView:
    """A MutableMapping-like view of a Flink MapState[str, bytes] for ViewTiles.apply."""

    __slots__ = ("_state",)

    def __init__(self, state: Any) -> None:
        self._state = state

    def get(self, key: str) -> bytes | None:
        value = self._state.get(key)
        return None if value is None else value.encode("latin-1")

    def __setitem__(self, key: str, value: bytes) -> None:
        self._state.put(key, value.decode("latin-1"))


def run(config: JobConfig, job_name: str = "fstore-features") -> int:
    """Run the job to completion (bounded) or until stopped; returns its net runtime in ms."""
    result = build(config).execute(job_name)
    return int(result.get_net_runtime())
