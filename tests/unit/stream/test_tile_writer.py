"""The feature job's per-event logic without Flink: routing, dead letters, write-through tiles."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import fastavro
import pytest

from feature_store.adapters.avro_wire import DeadLetterReason, encode, schema_id, strip_logical_types
from feature_store.core.model import Registry
from feature_store.core.tiles import TileKey, TileState, ViewAggregator
from feature_store.definitions.compiler import load_registry
from feature_store.stream.tile_writer import (
    DeadLetter,
    EventRouter,
    KeyTiles,
    ViewTiles,
    parse_tile_state_key,
    split_key,
    unpack,
    write_timestamp_us,
)

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry(ROOT / "registry")


def like_bytes(registry: Registry, record: dict[str, Any]) -> bytes:
    source = registry.source("like")
    schema = fastavro.parse_schema(strip_logical_types(json.loads(source.schema_json)))
    return encode(schema, schema_id(source), record)


def like(i: int, t: int) -> dict[str, Any]:
    return {
        "event_id": f"e{i}",
        "event_time": t,
        "user_id": f"u{i % 5}",
        "target_id": f"t{i % 3}",
        "super_like": i % 4 == 0,
    }


def test_router_keys_each_view_and_keeps_only_the_fields_it_reads(registry: Registry) -> None:
    router = EventRouter(registry, "like")

    routed = router.route(like_bytes(registry, like(1, 1000)), partition=1, offset=7)

    assert not isinstance(routed, DeadLetter)
    [one] = routed
    assert split_key(one.key) == (0, "t1")
    assert one.event_time_ms == 1000
    assert set(one.fields) <= {"super_like", "target_id"}


def test_router_dead_letters_a_too_late_event_once_with_its_origin(registry: Registry) -> None:
    router = EventRouter(registry, "like")
    lateness = registry.source("like").allowed_lateness_ms
    newer = 1000 + lateness + 1
    assert not isinstance(router.route(like_bytes(registry, like(1, newer)), 1, 6, newer), DeadLetter)
    payload = like_bytes(registry, like(1, 1000))

    dead = router.route(payload, partition=1, offset=7, watermark_ms=newer)
    on_time = router.route(payload, partition=1, offset=8, watermark_ms=1000 + lateness)

    assert isinstance(dead, DeadLetter)
    assert dead.reason is DeadLetterReason.TOO_LATE
    assert (dead.payload, dead.partition, dead.offset) == (payload, 1, 7)
    assert "behind the watermark" in dead.message
    assert not isinstance(on_time, DeadLetter)


def test_the_watermark_is_asked_for_only_when_an_event_may_be_too_late(registry: Registry) -> None:
    """In the job the watermark is a call into the JVM: in-order events must not pay for it."""
    router = EventRouter(registry, "like")
    lateness = registry.source("like").allowed_lateness_ms
    asked: list[int] = []

    def watermark() -> int:
        asked.append(1)
        return 10 * lateness

    for offset, t in enumerate([1000, 2000, 1500, 2000 + lateness, 2000]):  # within the lateness
        assert not isinstance(
            router.route(like_bytes(registry, like(1, t)), 1, offset, watermark), DeadLetter
        )
    assert asked == []

    late = router.route(like_bytes(registry, like(1, 1000)), 1, 9, watermark)

    assert isinstance(late, DeadLetter)
    assert late.reason is DeadLetterReason.TOO_LATE
    assert asked == [1]
    assert str(10 * lateness) in late.message


def test_in_order_events_are_never_late_even_when_another_partition_ran_the_watermark_ahead(
    registry: Registry,
) -> None:
    """Flink's Kafka source counts a partition in the watermark only once it fetched records of
    it: partition 0 read to its end can push the watermark past partition 1's in-order records."""
    router = EventRouter(registry, "like")
    lateness = registry.source("like").allowed_lateness_ms
    ahead = 10 * lateness  # what partition 0's records made of the watermark
    for offset, t in enumerate(range(1000, 1000 + 5 * lateness, lateness // 2)):
        routed = router.route(
            like_bytes(registry, like(1, t)), partition=1, offset=offset, watermark_ms=ahead
        )
        assert not isinstance(routed, DeadLetter), (offset, routed)
    # but an event behind both the watermark and its own partition's newest one is late
    late = router.route(like_bytes(registry, like(1, 1000)), partition=1, offset=99, watermark_ms=ahead)
    assert isinstance(late, DeadLetter)
    assert late.reason is DeadLetterReason.TOO_LATE
    # and the first event of a partition is judged against nothing older: not late
    first = router.route(like_bytes(registry, like(1, 1000)), partition=2, offset=0, watermark_ms=ahead)
    assert not isinstance(first, DeadLetter)


def test_router_dead_letters_bad_bytes_with_their_origin(registry: Registry) -> None:
    dead = EventRouter(registry, "like").route(b"\x00junk", partition=0, offset=3)

    assert isinstance(dead, DeadLetter)
    assert dead.reason is DeadLetterReason.UNKNOWN_SCHEMA
    assert (dead.payload, dead.offset) == (b"\x00junk", 3)


def test_missing_entity_key_is_a_dead_letter(registry: Registry) -> None:
    record = like(2, 5) | {"target_id": ""}

    dead = EventRouter(registry, "like").route(like_bytes(registry, record), 0, 0)

    assert isinstance(dead, DeadLetter)
    assert dead.reason is DeadLetterReason.MISSING_ENTITY_KEY


def decoded(view_tiles: ViewTiles, backing: dict[str, bytes]) -> dict[TileKey, TileState]:
    agg = view_tiles.aggregator
    return {
        parse_tile_state_key(k): agg.decode(parse_tile_state_key(k)[0], unpack(v)[1])
        for k, v in backing.items()
    }


def test_write_through_tiles_equal_the_core_and_survive_losing_memory(registry: Registry) -> None:
    view = registry.view("user_likes_received")
    view_tiles = ViewTiles(view, registry.source("like"))
    rng = random.Random(3)
    events = [like(i, 1_700_000_000_000 + rng.randrange(7_200_000)) for i in range(400)]
    backing: dict[str, bytes] = {}
    memory = KeyTiles(backing)

    for n, event in enumerate(events):
        if n == 200:
            memory = KeyTiles(backing)  # a restore: memory lost, state kept
        if event["target_id"] == "t0":
            view_tiles.apply(memory, event["event_time"], event)

    want: dict[TileKey, TileState] = {}
    agg = ViewAggregator(view, {f.name: f.type for f in registry.source("like").fields})
    for event in events:
        if event["target_id"] == "t0":
            agg.update(want, event, event["event_time"])
    assert decoded(view_tiles, backing) == want


def test_versions_count_updates_so_write_timestamps_only_grow(registry: Registry) -> None:
    view_tiles = ViewTiles(registry.view("user_likes_received"), registry.source("like"))
    backing: dict[str, bytes] = {}
    memory = KeyTiles(backing)
    seen: dict[str, int] = {}
    for i in range(20):
        for skey in view_tiles.apply(memory, 1_700_000_000_000 + i, like(3 * i, 0)):
            version = unpack(backing[skey])[0]
            stamp = write_timestamp_us(parse_tile_state_key(skey), version)
            assert stamp > seen.get(skey, -1)
            seen[skey] = stamp


class _CountingBacking(dict[str, bytes]):
    def __init__(self) -> None:
        super().__init__()
        self.gets = 0

    def get(self, key: str, default: Any = None) -> Any:
        self.gets += 1
        return super().get(key, default)


def test_a_flush_reads_packed_tiles_from_memory_equal_to_the_state(registry: Registry) -> None:
    view_tiles = ViewTiles(registry.view("user_likes_received"), registry.source("like"))
    backing = _CountingBacking()
    memory = KeyTiles(backing)
    changed: set[str] = set()
    for i in range(30):
        changed.update(view_tiles.apply(memory, 1_700_000_000_000 + i * 600_000, like(i, 0)))
    gets = backing.gets
    for skey in changed:
        assert memory.get_packed(skey) == backing[skey]
    assert backing.gets == gets  # no state read for what this copy wrote

    restored = KeyTiles(backing)  # after a restore: nothing in memory, the state answers
    for skey in changed:
        assert restored.get_packed(skey) == backing[skey]
    assert backing.gets == gets + len(changed)

    # an expired tile is forgotten from memory too
    skey = next(iter(changed))
    del backing[skey]
    memory.forget(parse_tile_state_key(skey))
    assert memory.get_packed(skey) is None
