"""The archiver: Kafka source topics (and their dead-letter topics) -> Parquet files by event date.

One consumer (group ``fstore-archive`` by default, independent of the feature job) reads every
selected source topic and dead-letter topic. Records are decoded with the job's
:class:`~feature_store.adapters.avro_wire.WireDecoder`; undecodable ones and events without an
event time are skipped (the job dead-letters them, and their dead letters are archived). Rows are
buffered per (source, partition, event date); a flush writes one file per buffer atomically
(temporary file, fsync, rename) and only then commits the consumed offsets, synchronously. A crash
between the two re-reads from the last commit and rewrites the same rows, possibly with other
file boundaries, so readers deduplicate on ``(_partition, _offset)``.

Memory is bounded by ``max_rows`` buffered rows; ``flush_interval_s`` bounds how stale the archive
gets. ``bounded`` runs stop at the end offsets found at start (tests, backfills, cron).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feature_store.adapters.avro_wire import DecodeError, WireDecoder, read_dead_letter
from feature_store.adapters.schema_registry import SchemaRegistryClient, SchemaRegistryConfig
from feature_store.archive import layout
from feature_store.archive.schema import DEAD_LETTER_SCHEMA, EventSchema, dead_letter_table
from feature_store.core.model import Registry, Source

log = logging.getLogger(__name__)

ConsumerFactory = Callable[[dict[str, Any]], Any]
_PARTITION_EOF = -191  # confluent_kafka.KafkaError._PARTITION_EOF


@dataclass(frozen=True, slots=True)
class ArchiveConfig:
    registry: Registry
    sources: tuple[str, ...]
    out: Path
    bootstrap: str = "127.0.0.1:9092"
    group_id: str = "fstore-archive"
    bounded: bool = False
    max_rows: int = 200_000  # buffered rows (events + dead letters) that trigger a flush
    flush_interval_s: float = 30.0
    dead_letters: bool = True
    poll_batch: int = 2000
    poll_timeout_s: float = 0.5
    metadata_timeout_s: float = 15.0
    schema_registry: SchemaRegistryConfig | None = None  # for ids the applied registry lacks


@dataclass(slots=True)
class ArchiveStats:
    events: int = 0
    dead_letters: int = 0
    undecodable: int = 0
    no_event_time: int = 0
    bad_dead_letters: int = 0
    files: int = 0
    commits: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(slots=True)
class _Buffer:
    columns: list[list[Any]]
    first: int
    last: int
    rows: int = 0


@dataclass(slots=True)
class _Role:
    """What a consumed topic is for one source: its events, or its dead letters."""

    source: Source
    dead_letters: bool
    decoder: WireDecoder
    schema: EventSchema
    buffers: dict[tuple[int, int], _Buffer] = field(default_factory=dict)  # (partition, day)


def _kafka() -> Any:
    import confluent_kafka  # noqa: PLC0415 - only the archiver process needs the client

    return confluent_kafka


def default_consumer(conf: dict[str, Any]) -> Any:
    return _kafka().Consumer(conf)


class Archiver:
    def __init__(self, config: ArchiveConfig, consumer_factory: ConsumerFactory = default_consumer) -> None:
        self.config = config
        self.stats = ArchiveStats()
        self._factory = consumer_factory
        self._roles: dict[str, list[_Role]] = {}
        registry = config.registry
        schemas = SchemaRegistryClient(config.schema_registry) if config.schema_registry else None
        for name in config.sources:
            source = registry.source(name)
            decoder = WireDecoder(source, registry.sources, schemas)
            schema = EventSchema(source)
            self._roles.setdefault(source.topic, []).append(_Role(source, False, decoder, schema))
            if config.dead_letters and source.dead_letter_topic:
                self._roles.setdefault(source.dead_letter_topic, []).append(
                    _Role(source, True, decoder, schema)
                )
        self._pending: dict[tuple[str, int], int] = {}  # (topic, partition) -> next offset to commit
        self._buffered = 0
        self._ends: dict[tuple[str, int], int] = {}  # bounded: end offset per partition still open
        self._consumer: Any = None

    @property
    def topics(self) -> list[str]:
        return list(self._roles)

    # --- consuming ---------------------------------------------------------------------------

    def _conf(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.config.bootstrap,
            "group.id": self.config.group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": self.config.bounded,
        }

    def run(self, stop: threading.Event | None = None) -> ArchiveStats:
        """Consume until ``stop`` is set (or, when bounded, until the start-time end offsets)."""
        consumer = self._consumer = self._factory(self._conf())
        try:
            if self.config.bounded:
                self._assign_bounded(consumer)
            else:
                consumer.subscribe(self.topics, on_revoke=self._on_revoke)
            last_flush = time.monotonic()
            while not (stop is not None and stop.is_set()):
                if self.config.bounded and not self._ends:
                    break
                for message in consumer.consume(
                    num_messages=self.config.poll_batch, timeout=self.config.poll_timeout_s
                ):
                    self._handle(message)
                due = time.monotonic() - last_flush >= self.config.flush_interval_s
                if self._buffered >= self.config.max_rows or (due and (self._buffered or self._pending)):
                    self.flush()
                    last_flush = time.monotonic()
            self.flush()
        finally:
            consumer.close()
            self._consumer = None
        return self.stats

    def _assign_bounded(self, consumer: Any) -> None:
        kafka = _kafka_module_or_fake(consumer)
        timeout = self.config.metadata_timeout_s
        metadata = consumer.list_topics(timeout=timeout)
        wanted: list[Any] = []
        for topic in self.topics:
            meta = metadata.topics.get(topic)
            if meta is None or meta.error is not None:
                log.warning("topic %s does not exist; nothing to archive from it", topic)
                continue
            wanted.extend(kafka.TopicPartition(topic, p) for p in sorted(meta.partitions))
        if not wanted:
            return
        assign = []
        for tp in _committed(consumer, wanted, timeout):
            low, high = consumer.get_watermark_offsets(
                kafka.TopicPartition(tp.topic, tp.partition), timeout=timeout
            )
            start = max(tp.offset, low) if tp.offset >= 0 else low
            if start < high:
                self._ends[(tp.topic, tp.partition)] = high
                assign.append(kafka.TopicPartition(tp.topic, tp.partition, start))
        consumer.assign(assign)

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        self.flush()

    def _handle(self, message: Any) -> None:
        error = message.error()
        topic, partition = message.topic(), message.partition()
        if error is not None:
            if _is_partition_eof(error):
                self._ends.pop((topic, partition), None)
                return
            if getattr(error, "fatal", lambda: False)():
                raise RuntimeError(f"Kafka consumer failed: {error}")
            log.warning("Kafka: %s", error)
            return
        offset = message.offset()
        key = (topic, partition)
        if self.config.bounded:
            end = self._ends.get(key)
            if end is None or offset >= end:
                self._ends.pop(key, None)
                return
            if offset >= end - 1:
                self._ends.pop(key, None)
        value = message.value() or b""
        for role in self._roles.get(topic, ()):
            if role.dead_letters:
                self._dead_letter(role, partition, offset, value, message)
            else:
                self._event(role, partition, offset, value)
        self._pending[key] = offset + 1

    def _buffer(self, role: _Role, partition: int, day: int, offset: int) -> _Buffer:
        buf = role.buffers.get((partition, day))
        if buf is None:
            columns = [[] for _ in DEAD_LETTER_SCHEMA] if role.dead_letters else role.schema.new_columns()
            buf = role.buffers[(partition, day)] = _Buffer(columns, offset, offset)
        buf.last = offset
        buf.rows += 1
        self._buffered += 1
        return buf

    def _event(self, role: _Role, partition: int, offset: int, value: bytes) -> None:
        try:
            record = role.decoder.decode(value)
        except DecodeError:
            self.stats.undecodable += 1
            return
        event_time = record.get(role.source.event_time_field)
        if not isinstance(event_time, int) or isinstance(event_time, bool):
            self.stats.no_event_time += 1
            return
        day = layout.day_of(event_time)
        if layout.date_text(day) is None:
            self.stats.no_event_time += 1
            return
        buf = self._buffer(role, partition, day, offset)
        role.schema.append(buf.columns, record, partition, offset)
        self.stats.events += 1

    def _dead_letter(self, role: _Role, partition: int, offset: int, value: bytes, message: Any) -> None:
        try:
            record = read_dead_letter(value)
            origin_partition, origin_offset = record["partition"], record["offset"]
            if not isinstance(origin_partition, int) or not isinstance(origin_offset, int):
                raise TypeError("partition/offset are not integers")
        except Exception:  # anything unreadable on a DLQ is counted and skipped
            self.stats.bad_dead_letters += 1
            return
        event_time = None
        try:
            decoded = role.decoder.decode(record["payload"]).get(role.source.event_time_field)
            if isinstance(decoded, int) and not isinstance(decoded, bool):
                event_time = decoded
        except DecodeError:
            pass
        ts_type, ts = message.timestamp()
        ts_ms = ts if ts_type and ts is not None and ts >= 0 else int(time.time() * 1000)
        buf = self._buffer(role, partition, layout.day_of(ts_ms), offset)
        row = (
            str(record.get("reason", "")),
            str(record.get("message", "")),
            str(record.get("topic", "")),
            origin_partition,
            origin_offset,
            event_time,
            record["payload"],
            ts_ms,
            partition,
            offset,
        )
        for column, item in zip(buf.columns, row, strict=True):
            column.append(item)
        self.stats.dead_letters += 1

    # --- writing -----------------------------------------------------------------------------

    def flush(self) -> None:
        """Write every buffer as one file each, then commit the consumed offsets."""
        out = self.config.out
        for roles in self._roles.values():
            for role in roles:
                base = (
                    layout.dead_letter_dir(out, role.source.name)
                    if role.dead_letters
                    else layout.source_dir(out, role.source.name)
                )
                for (partition, day), buf in sorted(role.buffers.items()):
                    table = (
                        dead_letter_table(buf.columns)
                        if role.dead_letters
                        else role.schema.table(buf.columns)
                    )
                    date = layout.date_text(day)
                    assert date is not None
                    layout.write_atomic(table, layout.file_path(base, date, partition, buf.first, buf.last))
                    self.stats.files += 1
                role.buffers.clear()
        self._buffered = 0
        self._commit()

    def _commit(self) -> None:
        if not self._pending or self._consumer is None:
            return
        kafka = _kafka_module_or_fake(self._consumer)
        offsets = [kafka.TopicPartition(t, p, o) for (t, p), o in sorted(self._pending.items())]
        self._consumer.commit(offsets=offsets, asynchronous=False)
        self._pending.clear()
        self.stats.commits += 1


def _kafka_module_or_fake(consumer: Any) -> Any:
    """The module providing TopicPartition: a test double may bring its own."""
    fake = getattr(consumer, "kafka_module", None)
    return fake if fake is not None else _kafka()


def _is_partition_eof(error: Any) -> bool:
    return bool(error.code() == _PARTITION_EOF)


def _committed(consumer: Any, partitions: list[Any], timeout: float, attempts: int = 30) -> list[Any]:
    """Committed offsets, retried while the group coordinator is not ready.

    A fresh broker creates __consumer_offsets on the first group request and answers
    NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS meanwhile; coordinators also move in real
    clusters. Both are retriable.
    """
    for attempt in range(attempts):
        try:
            result: list[Any] = consumer.committed(partitions, timeout=timeout)
            return result
        except _kafka().KafkaException as exc:
            error = exc.args[0] if exc.args else None
            retriable = getattr(error, "retriable", lambda: False)() or "COORDINATOR" in str(exc)
            if not retriable or attempt == attempts - 1:
                raise
            log.info("group coordinator not ready (%s); retrying", exc)
            time.sleep(1.0)
    raise AssertionError("unreachable")
