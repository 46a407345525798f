"""The export benchmark's hand-written query and Feast tables, on a small generated stream."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from benchmarks.export import bench_export, handwritten
from feature_store.core.model import Registry
from feature_store.definitions.compiler import load_registry
from feature_store.export.engine import ExportOptions, export
from feature_store.export.plan import plan_export


@pytest.fixture(scope="module")
def registry(example_registry_dir: Path) -> Registry:
    return load_registry(example_registry_dir)


@pytest.fixture(scope="module")
def data(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> bench_export.Data:
    work = tmp_path_factory.mktemp("bench")
    return bench_export.prepare_data(registry, work / "data", events=6_000, spine_rows=600, seed=3)


def test_hand_query_covers_the_service_as_registered(registry: Registry) -> None:
    plan = plan_export(registry, bench_export.SERVICE)
    assert list(handwritten.FEATURES) == [c.feature for c in plan.columns]
    assert list(handwritten.VIEWS) == [job.view.name for job in plan.views]
    for job in plan.views:
        assert handwritten.view_features(job.view.name) == [c.feature for c in job.columns]
        source, events = handwritten.view_events(job.view.name)
        assert source == job.source.name
        for field in job.source_key_fields:  # the job's key rule, repeated by hand
            assert f"{field} <> ''" in events


def test_spine_rows_are_unique_and_cached(registry: Registry, data: bench_export.Data) -> None:
    spine = pq.read_table(data.spine)
    assert spine.num_rows == 600
    keys = set(zip(spine.column("user_id").to_pylist(), spine.column("ts").to_pylist(), strict=True))
    assert len(keys) == 600
    again = bench_export.prepare_data(registry, data.work, events=6_000, spine_rows=600, seed=3)
    assert again.info["cached"] is True


def test_ours_and_hand_agree(registry: Registry, data: bench_export.Data, tmp_path: Path) -> None:
    ours, hand = tmp_path / "ours.parquet", tmp_path / "hand.parquet"
    export(registry, bench_export.SERVICE, data.spine, data.archive, ours, ExportOptions())
    query = handwritten.training_set_query(data.archive, data.spine)
    duckdb.connect().execute(f"COPY ({query}) TO '{hand}' (FORMAT PARQUET)")
    checks = bench_export.compare(ours, hand, None)["ours_vs_hand"]
    assert checks["rows"] == 600
    assert {f: c["differ"] for f, c in checks["features"].items() if c["differ"]} == {}
    # statuses other than PRESENT occur, so the "0 or null" rule is exercised
    assert sum(c["not_present"] for c in checks["features"].values()) > 0


def test_feast_tables_hold_the_hand_values_at_spine_times(
    registry: Registry, data: bench_export.Data
) -> None:
    """A point-in-time join (ASOF, as Feast's) on the Feast tables gives the hand query's values."""
    views, _ = bench_export.feast_tables(registry, data, None)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    hand = handwritten.training_set_query(data.archive, data.spine)
    for view in views:
        names = ", ".join(f"f.{n}" for n, _ in view["features"])
        joined = con.sql(
            f"SELECT {names} FROM (SELECT *, file_row_number AS r FROM read_parquet('{data.spine}', "
            f"file_row_number = true)) s ASOF JOIN read_parquet('{view['path']}') f "
            f"ON s.user_id = f.user_id AND s.ts >= f.event_timestamp ORDER BY s.r"
        ).fetchall()
        expected = con.sql(f"SELECT {names.replace('f.', '')} FROM ({hand})").fetchall()
        assert joined == expected, view["name"]
