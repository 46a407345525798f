"""The keyed tile merger (jobs/jvm TileMerger) against the SQL merge it replaced: the same events
through each (and through the merger on RocksDB, which serializes its state on every access),
every stored tile equal byte for byte, write timestamp included."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from benchmarks.job.bench_job import flink_logs
from tests.integration.conftest import Stack
from tests.integration.feature_job_support import (
    Isolated,
    expected_tiles,
    isolated_registry,
    produce,
    run_bounded,
    stored_tiles,
)

pytestmark = pytest.mark.integration


def stored_rows(iso: Isolated) -> dict[tuple[str, bytes, str, int, int], tuple[bytes, int]]:
    """Every tile row of every view's table: key -> (payload, write timestamp)."""
    rows = {}
    for table in sorted({view.table for view in iso.registry.views}):
        for r in iso.session.execute(
            "SELECT entity_key, feature_view, granularity_ms, tile_start_ms, payload, "
            f"WRITETIME(payload) AS written FROM {iso.cql.keyspace}.{table}"
        ):
            key = (table, bytes(r.entity_key), r.feature_view, r.granularity_ms, r.tile_start_ms)
            rows[key] = (bytes(r.payload), r.written)
    return rows


def events(iso: Isolated, now: int) -> dict[str, list[dict[str, Any]]]:
    """Generated events of every source, plus what the generator does not make: one user asking
    1,200 different people in one tile (its sketch turns dense) and call durations whose sums
    pass 64 bits."""
    from feature_store.events.generator import EventKind, GeneratorConfig, generate  # noqa: PLC0415

    records: dict[str, list[dict[str, Any]]] = {s.name: [] for s in iso.registry.sources}
    config = GeneratorConfig(seed=11, rate=10.0, start_ms=now - 3_000_000, users=200)
    for ev in generate(iso.registry, config, max_events=20_000):
        if ev.kind is EventKind.VALID and ev.record is not None:
            records[ev.source].append(ev.record)
    request = records["match_request"][0]
    for i in range(1200):
        records["match_request"].append(
            {
                **request,
                "event_id": f"burst-{i}",
                "user_id": "heavy",
                "target_id": f"t{i}",
                "event_time": now - 600_000 + i,
            }
        )
    call = records["video_call_end"][0]
    for i in range(3):
        records["video_call_end"].append(
            {
                **call,
                "event_id": f"long-{i}",
                "user_id": "marathon",
                "duration_s": 2**62 + i,
                "event_time": now - 500_000 + i,
            }
        )
    return records


def test_the_keyed_merger_stores_the_sql_merges_tiles_byte_for_byte(stack: Stack) -> None:
    iso = isolated_registry(f"merge{uuid.uuid4().hex[:10]}", stack.kafka_bootstrap, stack.cassandra_port)
    records = events(iso, int(time.time() * 1000))
    sources = sorted(name for name, rs in records.items() if rs)
    for name in sources:
        produce(iso.bootstrap, iso.source(name), records[name], key_field="user_id")

    run_bounded(iso, *sources, extra=("--tile-merge", "sql", "--group-id", f"{iso.cql.keyspace}-sql"))
    by_sql = stored_rows(iso)
    for table in sorted({view.table for view in iso.registry.views}):
        iso.session.execute(f"TRUNCATE {iso.cql.keyspace}.{table}")
    assert stored_rows(iso) == {}
    run_bounded(iso, *sources, extra=("--tile-merge", "operator", "--group-id", f"{iso.cql.keyspace}-op"))
    by_operator = stored_rows(iso)
    for table in sorted({view.table for view in iso.registry.views}):
        iso.session.execute(f"TRUNCATE {iso.cql.keyspace}.{table}")
    # RocksDB keeps state serialized: every access goes through TileSetSerializer
    run_bounded(iso, *sources, extra=("--state-backend", "rocksdb", "--group-id", f"{iso.cql.keyspace}-rdb"))
    by_operator_on_rocksdb = stored_rows(iso)

    assert len(by_sql) > 5_000
    views = {key[2] for key in by_sql}
    assert views == {view.name for view in iso.registry.views if view.source in sources}
    dense = [v for k, v in by_sql.items() if k[1] == b"heavy" and k[2] == "user_match_requests"]
    assert any(len(payload) > 4096 for payload, _ in dense)  # a dense sketch
    assert by_operator == by_sql
    assert by_operator_on_rocksdb == by_sql


def merger_totals() -> tuple[int, int, int]:
    """(created, expired, emitted) tiles, from the tile merger's last closing line in the local
    MiniCluster's log."""
    lines = [
        line
        for path in flink_logs()
        for line in path.read_text(errors="replace").splitlines()
        if "tile merger closing:" in line
    ]
    words = lines[-1].split("closing:")[1].split()
    return int(words[0]), int(words[3]), int(words[5])


def test_tiles_past_their_retention_leave_the_mergers_state(stack: Stack) -> None:
    """Likes of ten days ago (tiles past every window's retention) are merged, then dropped by
    the entity's expiry timer (already due: an old tile can come and go more than once), while
    the likes of the last hour stay and are stored as the core says."""
    iso = isolated_registry(f"mexp{uuid.uuid4().hex[:10]}", stack.kafka_bootstrap, stack.cassandra_port)
    now = int(time.time() * 1000)
    old = [
        {
            "event_id": f"old-{i}",
            "event_time": now - 10 * 86_400_000 + i * 60_000,
            "user_id": f"u{i}",
            "target_id": "gone",
            "super_like": False,
        }
        for i in range(90)
    ]
    fresh = [
        {
            "event_id": f"new-{i}",
            "event_time": now - 3_000_000 + i * 1000,
            "user_id": f"u{i % 40}",
            "target_id": f"t{i % 25}",
            "super_like": i % 7 == 0,
        }
        for i in range(3000)
    ]
    produce(iso.bootstrap, iso.source("like"), [*old, *fresh], key_field="user_id")

    run_bounded(iso, "like")

    old_tiles = expected_tiles(iso.registry, "user_likes_received", old)
    new_tiles = expected_tiles(iso.registry, "user_likes_received", fresh)
    n_old = sum(len(tiles) for tiles in old_tiles.values())
    n_new = sum(len(tiles) for tiles in new_tiles.values())
    created, expired, emitted = merger_totals()
    assert expired >= n_old
    assert created - expired == n_new  # held at the end: the fresh tiles only
    assert emitted >= n_new
    assert stored_tiles(iso, "user_likes_received", new_tiles.keys()) == new_tiles


def test_while_catching_up_changed_tiles_wait_longer_and_store_the_same(stack: Stack) -> None:
    """Events of the last 50 minutes, read as a backlog: their newest event time is minutes
    behind the clock, so the merger holds changed tiles for --catch-up-flush-ms instead of the
    flush interval. Held for a minute, every tile goes out once (at the end of input); the stored
    tiles equal the core's either way."""
    iso = isolated_registry(f"mcat{uuid.uuid4().hex[:10]}", stack.kafka_bootstrap, stack.cassandra_port)
    now = int(time.time() * 1000)
    likes = [
        {
            "event_id": f"l-{i}",
            "event_time": now - 3_000_000 + i * 100,
            "user_id": f"u{i % 300}",
            "target_id": f"t{(i * 7) % 1000}",
            "super_like": i % 9 == 0,
        }
        for i in range(30_000)
    ]
    produce(iso.bootstrap, iso.source("like"), likes, key_field="user_id")
    want = expected_tiles(iso.registry, "user_likes_received", likes)
    n_tiles = sum(len(tiles) for tiles in want.values())

    run_bounded(iso, "like", extra=("--catch-up-flush-ms", "60000", "--group-id", f"{iso.cql.keyspace}-held"))
    created, expired, emitted = merger_totals()
    assert (created, expired, emitted) == (n_tiles, 0, n_tiles)
    assert stored_tiles(iso, "user_likes_received", want.keys()) == want

    run_bounded(iso, "like", extra=("--catch-up-flush-ms", "0", "--group-id", f"{iso.cql.keyspace}-plain"))
    created, _, emitted_plain = merger_totals()
    assert created == n_tiles
    assert emitted_plain >= n_tiles
    assert stored_tiles(iso, "user_likes_received", want.keys()) == want
