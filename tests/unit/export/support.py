"""A small registry covering every aggregation kind, and helpers that write an archive by hand."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from feature_store.archive import layout
from feature_store.archive.schema import DEAD_LETTER_SCHEMA, EventSchema, dead_letter_table
from feature_store.core.keys import entity_key_text
from feature_store.core.model import Registry, Source
from feature_store.definitions.compiler import load_registry

MINUTE = 60_000
HOUR = 60 * MINUTE
T0 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR  # on a tile boundary of every granularity

SCHEMA = {
    "type": "record",
    "name": "Ev",
    "fields": [
        {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "user_id", "type": ["null", "string"], "default": None},
        {"name": "peer_id", "type": "string"},
        {"name": "amount", "type": ["null", "double"], "default": None},
        {"name": "n", "type": "long"},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["a", "b", "c"]}},
        {"name": "flag", "type": "boolean"},
        {"name": "country", "type": "string"},
    ],
}

PROJECT = "project: exporttest\n"
ENTITIES = """
entities:
  - name: user
    join_keys: [{name: user_id, type: string}]
  - name: pair
    join_keys: [{name: user_id, type: string}, {name: peer_id, type: string}]
"""
SOURCES = """
sources:
  - name: ev
    topic: test.ev
    schema: ev.avsc
    event_time: event_time
    filter: country != "XX"
feature_views:
  - name: v_user
    entity: user
    source: ev
    ttl: 2h
    features:
      - name: events
        aggregation: count
        windows: [{length: 1h, granularity: 5m}, {length: 1d, granularity: 1h}]
      - {name: amount_sum, aggregation: sum, field: amount, windows: [{length: 1h, granularity: 10m}]}
      - {name: n_avg, aggregation: avg, field: n, windows: [{length: 2h, granularity: 1h}]}
      - {name: amount_avg, aggregation: avg, field: amount, windows: [{length: 2h, granularity: 1h}]}
      - {name: amount_min, aggregation: min, field: amount, windows: [{length: 1h, granularity: 10m}]}
      - {name: kind_max, aggregation: max, field: kind, windows: [{length: 1d, granularity: 1h}]}
      - {name: n_max, aggregation: max, field: n, windows: [{length: 30m, granularity: 5m}]}
      - {name: last_kind, aggregation: last, field: kind}
      - {name: last_amount, aggregation: last, field: amount}
      - {name: recent_peers, aggregation: last_n, n: 3, field: peer_id}
      - {name: peers, aggregation: count_distinct, field: peer_id, windows: [{length: 1d, granularity: 1h}]}
      - {name: flagged, aggregation: count, where: flag, windows: [{length: 1h, granularity: 5m}]}
      - name: big_n
        aggregation: sum
        field: n
        where: "amount > 1.5"
        windows: [{length: 1d, granularity: 1h}]
  - name: v_pair
    entity: pair
    source: ev
    features:
      - {name: pair_events, aggregation: count}
      - {name: pair_n, aggregation: sum, field: n, windows: [{length: 30m, granularity: 5m}]}
  - name: v_peer
    entity: user
    source: ev
    entity_keys: {user_id: peer_id}
    ttl: 10m
    features:
      - {name: peer_events, aggregation: count, windows: [{length: 30m, granularity: 5m}]}
  - name: v_simple
    entity: user
    source: ev
    ttl: 3h
    features:
      - name: cnt
        aggregation: count
        windows: [{length: 1h, granularity: 5m}, {length: 1d, granularity: 1h}, {length: 5m, granularity: 5m}]
      - {name: cnt_all, aggregation: count}
      - {name: amounts, aggregation: count, field: amount, windows: [{length: 1h, granularity: 10m}]}
      - {name: n_sum, aggregation: sum, field: n, windows: [{length: 2h, granularity: 1h}]}
      - {name: n_avg, aggregation: avg, field: n, windows: [{length: 30m, granularity: 5m}]}
      - {name: n_avg_all, aggregation: avg, field: n}
      - {name: last_kind, aggregation: last, field: kind, windows: [{length: 1h, granularity: 5m}]}
      - {name: last_n, aggregation: last, field: n}
      - {name: last_flag, aggregation: last, field: flag}
      - name: big
        aggregation: count
        where: "n > 2.5 and kind in ['a', 'b']"
        windows: [{length: 1d, granularity: 1h}]
      - name: odd
        aggregation: count
        where: "kind != 'a' or flag"
        windows: [{length: 1h, granularity: 10m}]
      - {name: n_max, aggregation: max, field: n, windows: [{length: 1h, granularity: 5m}]}
      - {name: kinds, aggregation: count_distinct, field: kind, windows: [{length: 1d, granularity: 1h}]}
      - {name: amount_total, aggregation: sum, field: amount}
feature_services:
  - name: simple
    features: ["v_simple:*"]
  - name: simple_vector
    features: ["v_simple:cnt_1h", "v_simple:cnt_all", "v_simple:n_avg_30m", "v_simple:last_kind_1h",
               "v_simple:last_flag", "v_simple:big_1d", "v_simple:n_sum_2h", "v_simple:amounts_1h",
               "v_simple:n_max_1h"]
  - name: all_user
    features: ["v_user:*"]
  - name: mixed
    features: ["v_user:events_1h", "v_user:amount_sum_1h", "v_pair:*", "v_peer:peer_events_30m"]
"""


def make_registry(root: Path) -> Registry:
    root.mkdir(parents=True, exist_ok=True)
    (root / "feature_store.yaml").write_text(PROJECT)
    (root / "entities.yaml").write_text(ENTITIES)
    (root / "ev.yaml").write_text(SOURCES)
    (root / "ev.avsc").write_text(json.dumps(SCHEMA))
    return load_registry(root)


Located = tuple[dict[str, Any], int, int]  # (event, partition, offset)


def random_events(
    rng: random.Random, n: int, users: int = 6, span_ms: int = 6 * HOUR, *, dirty: bool = True
) -> list[dict[str, Any]]:
    """Events in random (so out-of-order) time order, with nulls, filtered ones and ties."""
    events = []
    for _ in range(n):
        t = T0 + rng.randrange(span_ms)
        if rng.random() < 0.1:
            t -= t % (5 * MINUTE)  # ties on tile boundaries
        amount: float | None = rng.choice([None, 0.5, 1.25, 2.0, 3.75, -1.0, 1e-3])
        events.append(
            {
                "event_time": t,
                "user_id": None if dirty and rng.random() < 0.03 else f"u{rng.randrange(users)}",
                "peer_id": "" if dirty and rng.random() < 0.03 else f"p{rng.randrange(4)}",
                "amount": amount,
                "n": rng.randrange(-5, 50),
                "kind": rng.choice("abc"),
                "flag": rng.random() < 0.4,
                "country": "XX" if dirty and rng.random() < 0.1 else "FR",
            }
        )
    return events


def locate(events: Sequence[dict[str, Any]], partitions: int = 2) -> list[Located]:
    """Kafka positions: round-robin partitions, offsets in production order."""
    next_offset = [0] * partitions
    located = []
    for i, event in enumerate(events):
        p = i % partitions
        located.append((event, p, next_offset[p]))
        next_offset[p] += 1
    return located


def write_archive(root: Path, source: Source, located: Iterable[Located], rows_per_file: int = 50) -> int:
    """Archive files as the archiver lays them out; returns the number of files."""
    schema = EventSchema(source)
    groups: dict[tuple[int, int], list[tuple[dict[str, Any], int]]] = {}
    for event, partition, offset in located:
        groups.setdefault((partition, layout.day_of(event[source.event_time_field])), []).append(
            (event, offset)
        )
    files = 0
    for (partition, day), items in sorted(groups.items()):
        for start in range(0, len(items), rows_per_file):
            chunk = items[start : start + rows_per_file]
            columns = schema.new_columns()
            for event, offset in chunk:
                schema.append(columns, event, partition, offset)
            date = layout.date_text(day)
            assert date is not None
            path = layout.file_path(
                layout.source_dir(root, source.name), date, partition, chunk[0][1], chunk[-1][1]
            )
            layout.write_atomic(schema.table(columns), path)
            files += 1
    return files


def write_dead_letters(root: Path, source: Source, rejected: Iterable[tuple[str, int, int]]) -> None:
    columns: list[list[Any]] = [[] for _ in DEAD_LETTER_SCHEMA]
    for i, (reason, partition, offset) in enumerate(rejected):
        row = (reason, "test", source.topic, partition, offset, None, b"", T0, 0, i)
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    if columns[0]:
        date = layout.date_text(layout.day_of(T0))
        assert date is not None
        path = layout.file_path(layout.dead_letter_dir(root, source.name), date, 0, 0, len(columns[0]) - 1)
        layout.write_atomic(dead_letter_table(columns), path)


def job_accepts(registry: Registry, source: Source, event: Mapping[str, Any]) -> bool:
    """The job's key rule (EventRouter): every view's entity key fields present and not ""."""
    for view in registry.views_of_source(source.name):
        if any(event.get(k) is None or event.get(k) == "" for k in view.entity_key_fields):
            return False
    return True


def key_of(registry: Registry, view_name: str, event: Mapping[str, Any]) -> str:
    view = registry.view(view_name)
    return entity_key_text([event.get(k) for k in view.entity_key_fields])
