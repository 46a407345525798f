"""The keyed tile merger (jobs/jvm TileMerger) against the SQL merge it replaced: the same events
through each, every stored tile equal byte for byte, write timestamp included."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from tests.integration.conftest import Stack
from tests.integration.feature_job_support import Isolated, isolated_registry, produce, run_bounded

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

    assert len(by_sql) > 5_000
    views = {key[2] for key in by_sql}
    assert views == {view.name for view in iso.registry.views if view.source in sources}
    dense = [v for k, v in by_sql.items() if k[1] == b"heavy" and k[2] == "user_match_requests"]
    assert any(len(payload) > 4096 for payload, _ in dense)  # a dense sketch
    assert by_operator == by_sql
