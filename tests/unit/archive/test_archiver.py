"""The archiver's buffering, file layout, commit order and replay behaviour, with a fake consumer."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest

from feature_store.adapters.avro_wire import (
    DeadLetterReason,
    dead_letter,
    encode,
    schema_id,
    strip_logical_types,
)
from feature_store.archive import layout
from feature_store.archive.archiver import ArchiveConfig, Archiver
from feature_store.archive.schema import EventSchema
from feature_store.core.model import Registry, Source
from tests.unit.export.support import HOUR, T0, make_registry

DAY = 24 * HOUR


class TopicPartition:
    def __init__(self, topic: str, partition: int, offset: int = -1001) -> None:
        self.topic, self.partition, self.offset = topic, partition, offset


class FakeKafkaModule:
    TopicPartition = TopicPartition


@dataclasses.dataclass
class Message:
    _topic: str
    _partition: int
    _offset: int
    _value: bytes
    _ts: int = T0

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return 1, self._ts


class Crash(Exception):
    pass


class FakeConsumer:
    """Enough of confluent_kafka.Consumer for a bounded archiver run."""

    kafka_module = FakeKafkaModule

    def __init__(
        self, log: dict[tuple[str, int], list[bytes]], committed: dict[tuple[str, int], int]
    ) -> None:
        self.log = log
        self.committed_offsets = committed
        self.positions: dict[tuple[str, int], int] = {}
        self.commits: list[list[tuple[str, int, int]]] = []
        self.crash_after: int | None = None  # consume() calls before raising Crash
        self.on_commit: Any = None

    def list_topics(self, timeout: float) -> Any:
        topics: dict[str, Any] = {}
        for topic, partition in self.log:
            topics.setdefault(topic, type("T", (), {"partitions": {}, "error": None})())
            topics[topic].partitions[partition] = None
        return type("M", (), {"topics": topics})()

    def committed(self, tps: Sequence[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [
            TopicPartition(
                tp.topic, tp.partition, self.committed_offsets.get((tp.topic, tp.partition), -1001)
            )
            for tp in tps
        ]

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        return 0, len(self.log[(tp.topic, tp.partition)])

    def assign(self, tps: Sequence[TopicPartition]) -> None:
        self.positions = {(tp.topic, tp.partition): tp.offset for tp in tps}

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        if self.crash_after is not None:
            if self.crash_after == 0:
                raise Crash
            self.crash_after -= 1
        out: list[Message] = []
        for key in sorted(self.positions):
            pos = self.positions[key]
            values = self.log[key]
            take = values[pos : pos + 3]  # a few per partition: interleaved like a real consumer
            out.extend(Message(key[0], key[1], pos + i, v) for i, v in enumerate(take))
            self.positions[key] = pos + len(take)
        return out[:num_messages]

    def commit(self, offsets: Sequence[TopicPartition], asynchronous: bool) -> None:
        assert not asynchronous
        if self.on_commit is not None:
            self.on_commit(offsets)
        for tp in offsets:
            self.committed_offsets[(tp.topic, tp.partition)] = tp.offset
        self.commits.append([(tp.topic, tp.partition, tp.offset) for tp in offsets])

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return make_registry(tmp_path_factory.mktemp("registry"))


def wire(source: Source, record: dict[str, Any]) -> bytes:
    schema = strip_logical_types(json.loads(source.schema_json))
    import fastavro  # noqa: PLC0415

    return encode(fastavro.parse_schema(schema), schema_id(source), record)


def event(i: int, t: int) -> dict[str, Any]:
    return {
        "event_time": t,
        "user_id": f"u{i % 3}",
        "peer_id": "p",
        "amount": None if i % 2 else 1.5,
        "n": i,
        "kind": "abc"[i % 3],
        "flag": bool(i % 2),
        "country": "FR",
    }


def make_log(source: Source, n: int) -> tuple[dict[tuple[str, int], list[bytes]], list[dict[str, Any]]]:
    log: dict[tuple[str, int], list[bytes]] = {(source.topic, 0): [], (source.topic, 1): []}
    events = []
    for i in range(n):
        e = event(i, T0 + (i % 4) * DAY // 2 + i)  # spans 2 dates
        events.append(e)
        log[(source.topic, i % 2)].append(wire(source, e))
    log[(source.topic, 0)].append(b"not avro")  # undecodable: skipped (the job dead-letters it)
    dl = dead_letter(DeadLetterReason.TOO_LATE, "late", wire(source, events[2]), source.topic, 0, 1)
    log[(source.dead_letter_topic, 0)] = [dl, b"{broken"]
    return log, events


def config(registry: Registry, out: Path, **kw: Any) -> ArchiveConfig:
    return ArchiveConfig(
        registry=registry, sources=("ev",), out=out, bounded=True, flush_interval_s=3600, **kw
    )


def read_events(root: Path) -> list[dict[str, Any]]:
    files = layout.list_files(layout.source_dir(root, "ev"))
    if not files:
        return []
    paths = "[" + ", ".join(f"'{p}'" for p in files) + "]"
    rows = (
        duckdb.connect()
        .execute(
            "SELECT DISTINCT ON (_partition, _offset) * "
            f"FROM read_parquet({paths}, hive_partitioning = false) "
            "ORDER BY _partition, _offset"
        )
        .fetchall()
    )
    names = pq.read_schema(files[0]).names
    return [dict(zip(names, r, strict=True)) for r in rows]


def test_bounded_run_archives_by_event_date_and_commits_the_end(registry: Registry, tmp_path: Path) -> None:
    source = registry.source("ev")
    log, events = make_log(source, 40)
    consumer = FakeConsumer(log, {})

    stats = Archiver(config(registry, tmp_path), lambda conf: consumer).run()

    assert (stats.events, stats.undecodable, stats.dead_letters, stats.bad_dead_letters) == (40, 1, 1, 1)
    rows = read_events(tmp_path)
    assert len(rows) == 40
    by_position = {(r["_partition"], r["_offset"]): r for r in rows}
    for i, e in enumerate(events):
        row = by_position[(i % 2, i // 2)]
        assert {k: row[k] for k in e} == e
    for path in layout.list_files(layout.source_dir(tmp_path, "ev")):
        date = path.parent.name.removeprefix("date=")
        partition, first, last = map(int, path.name.removesuffix(".parquet").split("-")[1:])
        table = pq.read_table(path)
        assert {layout.date_text(layout.day_of(t)) for t in table.column("event_time").to_pylist()} == {date}
        assert set(table.column("_partition").to_pylist()) == {partition}
        assert (min(table.column("_offset").to_pylist()), max(table.column("_offset").to_pylist())) == (
            first,
            last,
        )
    dead = pq.read_table(layout.list_files(layout.dead_letter_dir(tmp_path, "ev"))[0]).to_pylist()
    assert [(d["reason"], d["partition"], d["offset"], d["event_time"]) for d in dead] == [
        ("later_than_allowed_lateness", 0, 1, events[2]["event_time"])
    ]
    assert consumer.committed_offsets == {
        (source.topic, 0): 21,
        (source.topic, 1): 20,
        (source.dead_letter_topic, 0): 2,
    }
    assert not list(tmp_path.rglob(".*tmp*"))


def test_offsets_are_committed_only_after_their_rows_are_on_disk(registry: Registry, tmp_path: Path) -> None:
    source = registry.source("ev")
    log, _ = make_log(source, 60)
    consumer = FakeConsumer(log, {})

    def check(offsets: Sequence[TopicPartition]) -> None:
        on_disk = {(r["_partition"], r["_offset"]) for r in read_events(tmp_path)}
        for tp in offsets:
            if tp.topic == source.topic:
                decodable = [o for o in range(tp.offset) if log[(tp.topic, tp.partition)][o] != b"not avro"]
                assert {(tp.partition, o) for o in decodable} <= on_disk

    consumer.on_commit = check
    stats = Archiver(config(registry, tmp_path, max_rows=10), lambda conf: consumer).run()

    assert stats.files > 6  # flushed by size, several times
    assert len(consumer.commits) > 3


def test_a_crash_before_the_commit_replays_into_the_same_rows(registry: Registry, tmp_path: Path) -> None:
    source = registry.source("ev")
    log, events = make_log(source, 50)
    committed: dict[tuple[str, int], int] = {}
    crashing = FakeConsumer(log, committed)
    crashing.crash_after = 6
    with pytest.raises(Crash):
        Archiver(config(registry, tmp_path, max_rows=7), lambda conf: crashing).run()
    assert committed  # some flushes and commits happened before the crash
    files_before = set(layout.list_files(layout.source_dir(tmp_path, "ev")))

    Archiver(config(registry, tmp_path, max_rows=13), lambda conf: FakeConsumer(log, committed)).run()

    files_after = set(layout.list_files(layout.source_dir(tmp_path, "ev")))
    assert files_before <= files_after
    rows = read_events(tmp_path)
    assert len(rows) == len(events)  # duplicates across files collapse on (_partition, _offset)
    total = sum(pq.read_metadata(p).num_rows for p in files_after)
    assert total >= len(events)


def test_a_second_run_starts_at_the_committed_offsets(registry: Registry, tmp_path: Path) -> None:
    source = registry.source("ev")
    log, _ = make_log(source, 20)
    committed: dict[tuple[str, int], int] = {}
    Archiver(config(registry, tmp_path), lambda conf: FakeConsumer(log, committed)).run()
    first = set(layout.list_files(layout.source_dir(tmp_path, "ev")))
    log[(source.topic, 1)].append(wire(source, event(99, T0 + 5 * DAY)))

    stats = Archiver(config(registry, tmp_path), lambda conf: FakeConsumer(log, committed)).run()

    assert (stats.events, stats.dead_letters) == (1, 0)
    new = set(layout.list_files(layout.source_dir(tmp_path, "ev"))) - first
    assert [p.name for p in new] == [layout.part_name(1, 10, 10)]


def test_complex_avro_types_map_to_arrow(registry: Registry) -> None:
    schema = {
        "type": "record",
        "name": "R",
        "fields": [
            {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "tags", "type": {"type": "array", "items": "string"}},
            {"name": "attrs", "type": {"type": "map", "values": ["null", "long"]}},
            {
                "name": "inner",
                "type": {"type": "record", "name": "In", "fields": [{"name": "x", "type": "int"}]},
            },
            {"name": "again", "type": ["null", "In"]},
            {"name": "either", "type": ["null", "string", "long"]},
            {"name": "digest", "type": {"type": "fixed", "name": "D", "size": 2}},
            {
                "name": "price",
                "type": {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2},
            },
        ],
    }
    source = dataclasses.replace(registry.source("ev"), schema_json=json.dumps(schema))
    es = EventSchema(source)
    columns = es.new_columns()
    record = {
        "event_time": T0,
        "tags": ["a", "b"],
        "attrs": {"k": 1, "z": None},
        "inner": {"x": 3},
        "again": None,
        "either": 7,
        "digest": b"\x00\x01",
        "price": b"\x01",
    }
    es.append(columns, record, 1, 5)
    row = es.table(columns).to_pylist()[0]
    assert row["tags"] == ["a", "b"]
    assert row["attrs"] == [("k", 1), ("z", None)]
    assert row["inner"] == {"x": 3}
    assert row["either"] == "7"
    assert (row["digest"], row["price"], row["_partition"], row["_offset"]) == (b"\x00\x01", b"\x01", 1, 5)
