"""Archive + export against the real stack: online (tiles in Cassandra) and offline agree.

Kafka -> archiver (Parquet) and Kafka -> feature job (tiles in Cassandra) from the same events;
then, for sampled entities at t = now, the export's values and statuses must equal what the core
computes from the stored tiles (decode + read + resolve over every tile the store returns).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feature_store.adapters.cql_online_store import CqlOnlineStore
from feature_store.archive import layout
from feature_store.core.keys import entity_key_bytes
from feature_store.core.lookup import newest_event_ms, resolve
from feature_store.core.tiles import ViewAggregator
from feature_store.export.plan import STATUS_NAMES, plan_export
from tests.integration.conftest import Stack
from tests.integration.feature_job_support import (
    Isolated,
    isolated_registry,
    produce,
    produce_raw,
    run_bounded,
)

pytestmark = pytest.mark.integration

MINUTE = 60_000


@pytest.fixture(scope="module")
def iso(stack: Stack) -> Isolated:
    return isolated_registry(f"arch{uuid.uuid4().hex[:10]}", stack.kafka_bootstrap, stack.cassandra_port)


def call_events(n: int, now_ms: int, rng: random.Random) -> list[dict[str, Any]]:
    events = []
    for i in range(n):
        user = "" if i % 97 == 5 else f"u{rng.randrange(12)}"  # a few without key: dead-lettered
        events.append(
            {
                "event_id": f"call-{i}",
                # 50 minutes of history, in time order, then a straggler 20 minutes late
                "event_time": now_ms - 50 * MINUTE + i * (45 * MINUTE // n),
                "user_id": user,
                "partner_id": f"u{rng.randrange(12)}",
                "call_id": f"c{i // 2}",
                "duration_s": rng.randrange(0, 900),
                "ended_by": rng.choice(["self", "partner", "network", "moderation"]),
                "rating": rng.choice([None, 1, 3, 5]),
            }
        )
    straggler = dict(events[-1], event_id="late", event_time=now_ms - 25 * MINUTE, user_id="u1")
    return [*events, straggler]


def like_events(n: int, now_ms: int, rng: random.Random) -> list[dict[str, Any]]:
    return [
        {
            "event_id": f"like-{i}",
            "event_time": now_ms - 40 * MINUTE + i * (35 * MINUTE // n),
            "user_id": f"u{rng.randrange(12)}",
            "target_id": f"u{rng.randrange(12)}",
            "super_like": rng.random() < 0.2,
        }
        for i in range(n)
    ]


def fstore(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "feature_store.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def archive(iso: Isolated, out: Path) -> None:
    fstore(
        "archive", "run", "--store", iso.store_url, "--bootstrap", iso.bootstrap, "--out", str(out),
        "--group-id", f"{iso.cql.keyspace}-archive", "--bounded", "--source", "video_call_end",
        "--source", "like", "--flush-interval-s", "1",
    )  # fmt: skip


def online_values(iso: Isolated, service: str, spine: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What serving computes at each row's t: every stored tile of the entity through the core
    (as feature_store.serving does: decode, read, newest over the tiles returned, resolve)."""
    plan = plan_export(iso.registry, service)
    store = CqlOnlineStore(iso.session, iso.cql.keyspace)
    rows = []
    for row in spine:
        t = row["t_ms"]
        out: dict[str, Any] = {}
        for job in plan.views:
            agg = ViewAggregator(job.view, {f.name: f.type for f in job.source.fields})
            key = entity_key_bytes([row[k] for k, _ in job.entity.join_keys])
            stored = dict(store.read_tiles(job.view, key))
            tiles = {tk: agg.decode(tk[0], p) for tk, p in stored.items() if tk[0] in agg.granularities_ms}
            resolved = resolve(agg.read(tiles, t), newest_event_ms(tiles.values()), job.view.ttl_ms, t)
            for c in job.columns:
                out[c.name] = resolved.values[c.output_index]
                out[c.status_name] = STATUS_NAMES[resolved.statuses[c.output_index]]
        rows.append(out)
    return rows


def test_export_matches_the_tiles_the_job_stored(iso: Isolated, tmp_path: Path) -> None:
    rng = random.Random(11)
    start_ms = int(time.time() * 1000)
    calls = call_events(300, start_ms, rng)
    likes = like_events(200, start_ms, rng)
    produce(iso.bootstrap, iso.source("video_call_end"), calls, key_field="call_id")
    produce(iso.bootstrap, iso.source("like"), likes, key_field="user_id")
    produce_raw(iso.bootstrap, iso.source("like").topic, [b"garbage"])

    archive_dir = tmp_path / "archive"
    archive(iso, archive_dir)  # the events
    run_bounded(iso, "video_call_end", "like")
    archive(iso, archive_dir)  # the dead letters the job wrote meanwhile

    archived = sum(
        pq.read_metadata(p).num_rows
        for p in layout.list_files(layout.source_dir(archive_dir, "video_call_end"))
    )
    assert archived == len(calls)  # every decodable event, also those the job rejects
    dead = [
        row
        for p in layout.list_files(layout.dead_letter_dir(archive_dir, "video_call_end"))
        for row in pq.read_table(p).to_pylist()
    ]
    assert {"missing_entity_key"} <= {d["reason"] for d in dead}

    now_ms = int(time.time() * 1000)
    users = sorted({e["user_id"] for e in calls if e["user_id"]} | {e["target_id"] for e in likes}) + [
        "nobody"
    ]
    spine = [{"user_id": u, "peer_id": f"u{rng.randrange(12)}", "t_ms": now_ms} for u in users]
    spine += [{"user_id": "u1", "peer_id": "u2", "t_ms": now_ms - 10 * MINUTE}]  # in the past too
    spine_table = pa.Table.from_pylist(spine)
    spine_table = spine_table.append_column(
        "ts", pa.compute.cast(spine_table.column("t_ms"), pa.timestamp("ms", tz="UTC"))
    )
    pq.write_table(spine_table, tmp_path / "spine.parquet")

    for service in ("ranking_v1", "pair_v1", "abuse_v1"):
        out = tmp_path / f"{service}.parquet"
        fstore(
            "export", "--store", iso.store_url, "--spine", str(tmp_path / "spine.parquet"),
            "--service", service, "--archive", str(archive_dir), "--out", str(out),
        )  # fmt: skip
        offline = pq.read_table(out).to_pylist()
        plan = plan_export(iso.registry, service)
        names = [n for c in plan.columns for n in (c.name, c.status_name)]
        assert [row["user_id"] for row in offline] == [row["user_id"] for row in spine]
        # the past row (now - 10 min) can only be checked offline: stored tiles hold later events
        online = online_values(iso, service, spine[:-1])
        for want, got in zip(online, offline, strict=False):
            assert {n: got[n] for n in names} == want, (service, got["user_id"])
        statuses = {row[c.status_name] for row in offline for c in plan.columns}
        assert "PRESENT" in statuses
        assert "NOT_FOUND" in statuses
