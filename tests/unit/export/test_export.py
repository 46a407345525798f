"""The export end to end on a hand-written archive, against a brute-force recompute with the core."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feature_store.core.lookup import FieldStatus
from feature_store.core.model import Registry
from feature_store.core.tiles import ViewAggregator
from feature_store.export.engine import ExportError, ExportOptions, export, output_fields
from feature_store.export.plan import STATUS_NAMES, plan_export
from feature_store.export.replay import brute_force
from tests.unit.export.support import (
    HOUR,
    MINUTE,
    SCHEMA,
    T0,
    job_accepts,
    key_of,
    locate,
    make_registry,
    random_events,
    write_archive,
    write_dead_letters,
)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return make_registry(tmp_path_factory.mktemp("registry"))


def build_case(
    root: Path, registry: Registry, seed: int, n_events: int = 1500, late_share: float = 0.05
) -> list[dict[str, Any]]:
    """Archive random events (with replayed duplicates and dead-lettered ones); return the events
    the job folded, i.e. the ground truth."""
    source = registry.source("ev")
    rng = random.Random(seed)
    located = locate(random_events(rng, n_events))
    replayed = located[: n_events // 10]  # the archiver re-wrote these after a crash
    write_archive(root, source, located + replayed, rows_per_file=rng.choice([17, 64, 500]))
    late = {(p, o) for _, p, o in located if rng.random() < late_share}
    write_dead_letters(root, source, [("later_than_allowed_lateness", p, o) for p, o in sorted(late)])
    return [e for e, p, o in located if (p, o) not in late and job_accepts(registry, source, e)]


def user_spine(rng: random.Random, rows: int, users: int = 8) -> list[dict[str, Any]]:
    spine = []
    for i in range(rows):
        t = T0 + rng.randrange(-HOUR, 9 * HOUR)
        if rng.random() < 0.2:
            t -= t % (5 * MINUTE)  # exactly on tile boundaries
        if rng.random() < 0.1:
            t -= 1
        spine.append({"row": i, "user_id": f"u{rng.randrange(users)}", "ts": t})
    return spine


def check_against_brute_force(
    registry: Registry, service: str, events: list[dict[str, Any]], out: Path
) -> int:
    plan = plan_export(registry, service)
    by_key: dict[tuple[str, str], list[tuple[dict[str, Any], int]]] = {}
    for job in plan.views:
        for e in events:
            by_key.setdefault((job.view.name, key_of(registry, job.view.name, e)), []).append(
                (e, e["event_time"])
            )
    rows = pq.read_table(out).to_pylist()
    checked = 0
    for row in rows:
        t = row["ts"]
        by_view = {}
        for job in plan.views:
            key = "\x1f".join(str(row[k]) for k, _ in job.entity.join_keys)
            by_view[job.view.name] = brute_force(
                job.view, job.source, by_key.get((job.view.name, key), []), t
            )
        for column in plan.columns:
            value, status = by_view[column.view][column.output_index]
            assert (row[column.name], row[column.status_name]) == (value, STATUS_NAMES[status]), (
                column.ref,
                row,
            )
            checked += 1
    return checked


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_export_equals_a_brute_force_recompute(registry: Registry, tmp_path: Path, seed: int) -> None:
    events = build_case(tmp_path / "archive", registry, seed)
    rng = random.Random(seed)
    pq.write_table(pa.Table.from_pylist(user_spine(rng, 300)), tmp_path / "spine.parquet")

    summary = export(
        registry,
        "all_user",
        tmp_path / "spine.parquet",
        tmp_path / "archive",
        tmp_path / "out.parquet",
        ExportOptions(bucket_spine_rows=rng.choice([40, 1000])),
    )

    assert summary.rows == 300
    assert check_against_brute_force(registry, "all_user", events, tmp_path / "out.parquet") == 300 * 14
    statuses = set(pq.read_table(tmp_path / "out.parquet").column("events_1h__status").to_pylist())
    assert {"PRESENT", "NOT_FOUND", "OUTSIDE_MAX_AGE"} <= statuses  # TTL expiry and unknown times


@pytest.mark.parametrize(
    ("seed", "service", "path", "columns"),
    [
        (11, "simple", "vector+replay", 16),
        (12, "simple", "vector+replay", 16),
        (13, "simple_vector", "vector", 9),
    ],
)
def test_the_vectorised_path_equals_the_replay_and_the_definition(
    registry: Registry, tmp_path: Path, seed: int, service: str, path: str, columns: int
) -> None:
    events = build_case(tmp_path / "archive", registry, seed)
    rng = random.Random(seed)
    pq.write_table(pa.Table.from_pylist(user_spine(rng, 300)), tmp_path / "spine.parquet")
    outputs = {}
    for engine in ("auto", "replay"):
        out = tmp_path / f"{engine}.parquet"
        summary = export(
            registry,
            service,
            tmp_path / "spine.parquet",
            tmp_path / "archive",
            out,
            ExportOptions(engine=engine, event_times=True, bucket_spine_rows=100),
        )
        assert summary.views["v_simple"].path == (path if engine == "auto" else "replay")
        outputs[engine] = pq.read_table(out)
    assert outputs["auto"].equals(outputs["replay"])
    assert check_against_brute_force(registry, service, events, tmp_path / "auto.parquet") == 300 * columns


def test_views_of_several_entities_and_key_mappings(registry: Registry, tmp_path: Path) -> None:
    events = build_case(tmp_path / "archive", registry, 7)
    rng = random.Random(7)
    spine = [dict(r, peer_id=f"p{rng.randrange(5)}") for r in user_spine(rng, 250)]
    spine_path = tmp_path / "spine.csv"
    pa.csv.write_csv(pa.Table.from_pylist(spine), spine_path)

    export(registry, "mixed", spine_path, tmp_path / "archive", tmp_path / "out.parquet")

    assert check_against_brute_force(registry, "mixed", events, tmp_path / "out.parquet") == 250 * 5


def test_spine_columns_pass_through_in_order(registry: Registry, tmp_path: Path) -> None:
    build_case(tmp_path / "archive", registry, 4)
    times = pa.array([T0 + 3 * HOUR, T0 + HOUR, T0 + 3 * HOUR], type=pa.int64())
    spine = pa.table(
        {
            "label": pa.array([1.5, None, -2.0]),
            "user_id": pa.array(["u1", "u2", "u1"]).dictionary_encode(),
            "ts": pa.compute.cast(pa.compute.multiply(times, 1000), pa.timestamp("us", tz="Europe/Paris")),
            "tags": pa.array([["a"], [], None], type=pa.list_(pa.string())),
        }
    )
    pq.write_table(spine, tmp_path / "spine.parquet")

    export(registry, "all_user", tmp_path / "spine.parquet", tmp_path / "archive", tmp_path / "out.parquet")

    out = pq.read_table(tmp_path / "out.parquet")
    assert out.schema.names[:4] == spine.schema.names
    assert out.select(spine.schema.names).equals(spine)
    assert out.column("events_1h").to_pylist()[0] == out.column("events_1h").to_pylist()[2]


def test_empty_spine_gives_an_empty_output_with_the_full_schema(registry: Registry, tmp_path: Path) -> None:
    build_case(tmp_path / "archive", registry, 5)
    schema = pa.schema([("user_id", pa.string()), ("ts", pa.timestamp("ms", tz="UTC")), ("y", pa.int8())])
    pq.write_table(schema.empty_table(), tmp_path / "spine.parquet")
    (tmp_path / "spine.csv").write_text("user_id,ts\n")

    export(registry, "all_user", tmp_path / "spine.parquet", tmp_path / "archive", tmp_path / "out.parquet")
    export(registry, "all_user", tmp_path / "spine.csv", tmp_path / "archive", tmp_path / "out_csv.parquet")

    out = pq.read_table(tmp_path / "out.parquet")
    plan = plan_export(registry, "all_user")
    assert out.num_rows == 0
    assert out.schema == pa.schema(list(schema) + output_fields(plan))
    assert out.schema.field("recent_peers").type == pa.list_(pa.string())
    assert out.schema.field("n_avg_2h").type == pa.float64()
    assert pq.read_table(tmp_path / "out_csv.parquet").schema.names == [
        "user_id",
        "ts",
        *out.schema.names[3:],
    ]


def test_export_is_deterministic_whatever_the_bucketing(registry: Registry, tmp_path: Path) -> None:
    build_case(tmp_path / "archive", registry, 6)
    rng = random.Random(6)
    pq.write_table(pa.Table.from_pylist(user_spine(rng, 200)), tmp_path / "spine.parquet")
    outputs = []
    variants = [
        ExportOptions(),
        ExportOptions(bucket_spine_rows=7, bucket_events=50),
        ExportOptions(threads=1),
        # buckets replayed in worker processes, for the vector+replay and the all-replay paths
        ExportOptions(bucket_spine_rows=7, bucket_events=50, processes=2),
        ExportOptions(bucket_spine_rows=7, bucket_events=50, processes=2, engine="replay"),
    ]
    for i, options in enumerate(variants):
        out = tmp_path / f"out{i}.parquet"
        summary = export(registry, "all_user", tmp_path / "spine.parquet", tmp_path / "archive", out, options)
        if options.processes == 2:
            assert max(v.buckets for v in summary.views.values()) > 2  # really several buckets
        outputs.append(pq.read_table(out))
    for other in outputs[1:]:
        assert outputs[0].equals(other)


def test_no_archived_events_means_not_found(registry: Registry, tmp_path: Path) -> None:
    (tmp_path / "archive").mkdir()
    pq.write_table(pa.table({"user_id": ["u1"], "ts": [T0]}), tmp_path / "spine.parquet")

    summary = export(
        registry, "all_user", tmp_path / "spine.parquet", tmp_path / "archive", tmp_path / "out.parquet"
    )

    row = pq.read_table(tmp_path / "out.parquet").to_pylist()[0]
    assert row["events_1h__status"] == "NOT_FOUND"
    assert row["events_1h"] is None
    assert any("no events of source 'ev'" in w for w in summary.warnings)


def test_event_times_columns(registry: Registry, tmp_path: Path) -> None:
    events = build_case(tmp_path / "archive", registry, 8)
    t = T0 + 5 * HOUR
    pq.write_table(pa.table({"user_id": ["u1"], "ts": [t]}), tmp_path / "spine.parquet")

    export(
        registry,
        "all_user",
        tmp_path / "spine.parquet",
        tmp_path / "archive",
        tmp_path / "out.parquet",
        ExportOptions(event_times=True),
    )

    row = pq.read_table(tmp_path / "out.parquet").to_pylist()[0]
    newest = max(
        e["event_time"]
        for e in events
        if e["user_id"] == "u1" and e["event_time"] <= t and e["country"] != "XX"
    )
    assert row["last_kind__event_time_ms"] == newest


def test_int64_overflow_is_an_error_status(registry: Registry, tmp_path: Path) -> None:
    source = registry.source("ev")
    big = {"user_id": "u1", "peer_id": "p1", "amount": 2.0, "kind": "a", "flag": False, "country": "FR"}
    events = [dict(big, event_time=T0 + i, n=(1 << 62)) for i in range(4)]
    write_archive(tmp_path / "archive", source, locate(events))
    pq.write_table(pa.table({"user_id": ["u1"], "ts": [T0 + 10]}), tmp_path / "spine.parquet")

    export(registry, "all_user", tmp_path / "spine.parquet", tmp_path / "archive", tmp_path / "out.parquet")

    row = pq.read_table(tmp_path / "out.parquet").to_pylist()[0]
    assert (row["big_n_1d"], row["big_n_1d__status"]) == (None, FieldStatus.ERROR.name)
    assert row["n_max_30m"] == 1 << 62


def test_unknown_service_is_an_error_before_any_work(registry: Registry, tmp_path: Path) -> None:
    pq.write_table(pa.table({"user_id": ["u1"], "ts": [T0]}), tmp_path / "spine.parquet")
    with pytest.raises(ExportError, match=r"unknown feature service 'nope'; defined: all_user, mixed"):
        export(registry, "nope", tmp_path / "spine.parquet", tmp_path, tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()


def test_missing_archive_is_an_error(registry: Registry, tmp_path: Path) -> None:
    pq.write_table(pa.table({"user_id": ["u1"], "ts": [T0]}), tmp_path / "spine.parquet")
    with pytest.raises(ExportError, match="no archive at"):
        export(registry, "all_user", tmp_path / "spine.parquet", tmp_path / "nope", tmp_path / "out.parquet")


def test_output_names_clashing_with_the_spine_are_an_error(registry: Registry, tmp_path: Path) -> None:
    pq.write_table(pa.table({"user_id": ["u1"], "ts": [T0], "events_1h": [1]}), tmp_path / "spine.parquet")
    with pytest.raises(ExportError, match=r"clashes with a spine column.*--full-names"):
        export(registry, "all_user", tmp_path / "spine.parquet", tmp_path, tmp_path / "out.parquet")
    (tmp_path / "archive").mkdir()
    export(
        registry,
        "all_user",
        tmp_path / "spine.parquet",
        tmp_path / "archive",
        tmp_path / "out.parquet",
        ExportOptions(full_names=True),
    )
    assert "v_user__events_1h__status" in pq.read_schema(tmp_path / "out.parquet").names


def test_served_names_follow_the_aggregator(registry: Registry) -> None:
    view = registry.view("v_user")
    agg = ViewAggregator(view, {f.name: f.type for f in registry.source("ev").fields})
    assert [c.feature for c in plan_export(registry, "all_user").columns] == list(agg.served_names)


def test_files_of_an_older_schema_without_a_field(registry: Registry, tmp_path: Path) -> None:
    """A field added by a later schema version is null in older files (union_by_name), and a
    field no file has yet reads as a typed null."""
    source = registry.source("ev")
    fields = cast(list[dict[str, Any]], SCHEMA["fields"])
    old_schema = dict(SCHEMA, fields=[f for f in fields if f["name"] not in ("flag", "country")])
    old = dataclasses.replace(source, schema_json=json.dumps(old_schema))
    events = random_events(random.Random(9), 300, dirty=False)
    write_archive(tmp_path / "archive", old, locate(events))
    rng = random.Random(9)
    pq.write_table(pa.Table.from_pylist(user_spine(rng, 50)), tmp_path / "spine.parquet")
    outputs = []
    for engine in ("auto", "replay"):
        out = tmp_path / f"{engine}.parquet"
        export(
            registry,
            "simple",
            tmp_path / "spine.parquet",
            tmp_path / "archive",
            out,
            ExportOptions(engine=engine),
        )
        outputs.append(pq.read_table(out))
    assert outputs[0].equals(outputs[1])
    stripped = [{k: v for k, v in e.items() if k not in ("flag", "country")} for e in events]
    assert check_against_brute_force(registry, "simple", stripped, tmp_path / "auto.parquet") == 50 * 16
