"""The generic feature job against the real stack: Kafka -> PyFlink -> Cassandra."""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

import pytest

from feature_store.adapters.avro_wire import read_dead_letter
from tests.integration.conftest import Stack
from tests.integration.feature_job_support import (
    Isolated,
    expected_tiles,
    isolated_registry,
    produce,
    produce_raw,
    run_bounded,
    stored_tiles,
)
from tests.integration.test_smoke_stack import consume

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def iso(stack: Stack) -> Isolated:
    return isolated_registry(f"job{uuid.uuid4().hex[:10]}", stack.kafka_bootstrap, stack.cassandra_port)


def like_events(n: int, seed: int, now_ms: int, span_ms: int = 3000_000) -> list[dict[str, Any]]:
    """``n`` likes spread evenly over ``[now_ms - span_ms, now_ms)``, in event-time order."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        events.append(
            {
                "event_id": f"like-{seed}-{i}",
                # at most 50 minutes of history: every tile is still inside its retention, so
                # none has expired from the store (tiles past every window get a TTL of seconds)
                "event_time": now_ms - span_ms + (i * span_ms) // n,
                "user_id": f"u{rng.randrange(50)}",
                "target_id": f"t{rng.randrange(8)}",
                "super_like": rng.random() < 0.2,
            }
        )
    return events


def test_bounded_run_stores_tiles_equal_to_a_recompute_and_dead_letters_bad_bytes(iso: Isolated) -> None:
    source = iso.source("like")
    events = like_events(600, seed=1, now_ms=int(time.time() * 1000))
    produce(iso.bootstrap, source, events, key_field="user_id")
    produce_raw(iso.bootstrap, source.topic, [b"not avro", b"\x00\xff\xff\xff\xfe\x00"])

    run_bounded(iso, "like")

    want = expected_tiles(iso.registry, "user_likes_received", events)
    got = stored_tiles(iso, "user_likes_received", want.keys())
    assert got == want
    dead = [read_dead_letter(v) for v in consume_all(iso, source.dead_letter_topic, 2)]
    assert sorted(d["reason"] for d in dead) == ["not_confluent_framed", "unknown_schema_id"]
    assert {d["payload"] for d in dead} == {b"not avro", b"\x00\xff\xff\xff\xfe\x00"}
    assert all(d["topic"] == source.topic and d["offset"] >= 0 for d in dead)


def consume_all(iso: Isolated, topic: str, expected: int) -> list[bytes]:
    class _S:
        kafka_bootstrap = iso.bootstrap

    return consume(_S(), topic, expected)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "extra",
    [(), ("--write-batching", "partition", "--write-batch-bytes", "600"), ("--no-sql-tiles",)],
    ids=["sql-path", "sql-path-small-partition-batches", "python-path"],
)
def test_every_view_of_two_sources_stores_the_recomputed_tiles(stack: Stack, extra: tuple[str, ...]) -> None:
    """match_request (counts, count_distinct) and video_call_end (lifetime windows, int sums,
    min/max/avg, last, last_n, count_distinct): one bounded job, every tile equal to the core's
    recompute, whether the views merge in SQL (the default; writes batched by replica set, or per
    entity in batches of a few tiles) or fold in the Python keyed path."""
    from feature_store.events.generator import EventKind, GeneratorConfig, generate  # noqa: PLC0415
    from feature_store.stream.feature_job import sql_view_indices  # noqa: PLC0415

    iso = isolated_registry(f"jobp{uuid.uuid4().hex[:10]}", stack.kafka_bootstrap, stack.cassandra_port)
    sources = ("match_request", "video_call_end")
    assert all(sql_view_indices(iso.registry, s) == [0, 1] for s in sources)
    now = int(time.time() * 1000)
    config = GeneratorConfig(seed=3, rate=8.0, start_ms=now - 3_000_000, users=300)
    records: dict[str, list[dict[str, Any]]] = {s: [] for s in sources}
    for ev in generate(iso.registry, config, max_events=30_000):
        if ev.kind is EventKind.VALID and ev.source in records and ev.record is not None:
            records[ev.source].append(ev.record)
    for name in sources:
        produce(iso.bootstrap, iso.source(name), records[name], key_field="user_id")

    run_bounded(iso, *sources, extra=extra)

    for name in sources:
        for view in iso.registry.views_of_source(name):
            want = expected_tiles(iso.registry, view.name, records[name])
            assert len(want) > 20
            assert stored_tiles(iso, view.name, want.keys()) == want, view.name
