"""Spine validation: every problem is reported before any feature is computed, with what to do."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feature_store.core.model import Registry, ValueType
from feature_store.export.engine import ExportOptions, export
from feature_store.export.spine import SpineError, compact, open_spine, timestamps_ms
from tests.unit.export.support import T0, make_registry

USER = (("user_id", ValueType.STRING),)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return make_registry(tmp_path_factory.mktemp("registry"))


def write(tmp_path: Path, table: pa.Table, name: str = "spine.parquet") -> Path:
    path = tmp_path / name
    pq.write_table(table, path)
    return path


def test_missing_columns_are_all_listed(tmp_path: Path) -> None:
    path = write(tmp_path, pa.table({"uid": ["a"], "time": [T0]}))
    with pytest.raises(SpineError) as info:
        open_spine(path, "ts", USER)
    message = str(info.value)
    assert "no timestamp column 'ts' (columns: uid, time); name it with --timestamp-column" in message
    assert "no column 'user_id': the join key of the service's entities (string)" in message


def test_join_key_of_the_wrong_type(tmp_path: Path) -> None:
    path = write(tmp_path, pa.table({"user_id": [1, 2], "ts": [T0, T0]}))
    with pytest.raises(
        SpineError, match=r"column 'user_id' is int64 but the join key 'user_id' is string; cast"
    ):
        open_spine(path, "ts", USER)


def test_naive_timestamps_are_rejected_with_a_fix(tmp_path: Path) -> None:
    path = write(tmp_path, pa.table({"user_id": ["a"], "ts": pa.array([T0], type=pa.timestamp("ms"))}))
    with pytest.raises(SpineError, match=r"column 'ts' holds timestamps without a time zone .*tz_localize"):
        open_spine(path, "ts", USER)
    csv = tmp_path / "spine.csv"
    csv.write_text("user_id,ts\na,2024-05-01T12:00:00\n")
    with pytest.raises(SpineError, match=r"without a time zone .*2024-05-01T12:00:00Z"):
        open_spine(csv, "ts", USER)


@pytest.mark.parametrize(
    "column",
    [pa.array(["2024-05-01"]), pa.array([1.5]), pa.array([19_844], type=pa.date32())],
)
def test_other_timestamp_types_are_rejected(tmp_path: Path, column: pa.Array) -> None:
    path = write(tmp_path, pa.table({"user_id": ["a"], "ts": column}))
    with pytest.raises(SpineError, match=r"timezone-aware timestamp or integer epoch milliseconds"):
        open_spine(path, "ts", USER)


def test_unsupported_file_type(tmp_path: Path) -> None:
    path = tmp_path / "spine.json"
    path.write_text("{}")
    with pytest.raises(SpineError, match=r"unsupported file type '.json'; use .parquet or .csv"):
        open_spine(path, "ts", USER)


def test_nulls_are_reported_with_their_first_row(tmp_path: Path) -> None:
    path = write(tmp_path, pa.table({"user_id": ["a", None, "b", None], "ts": [T0, T0, None, T0]}))
    spine = open_spine(path, "ts", USER)
    with pytest.raises(SpineError) as info:
        compact(spine, tmp_path / "compact.parquet")
    assert "column 'ts' has 1 null value(s), the first in row 2" in str(info.value)
    assert "column 'user_id' has 2 null value(s), the first in row 1" in str(info.value)


def test_export_fails_before_writing_anything(registry: Registry, tmp_path: Path) -> None:
    path = write(tmp_path, pa.table({"user_id": ["a", None], "ts": [T0, T0]}))
    (tmp_path / "archive").mkdir()
    with pytest.raises(SpineError, match="null value"):
        export(registry, "all_user", path, tmp_path / "archive", tmp_path / "out.parquet", ExportOptions())
    assert not (tmp_path / "out.parquet").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # work folder removed


def test_timestamps_of_every_unit_and_zone_floor_to_ms() -> None:
    cases = {
        "s": ([0, 1, -1], [0, 1000, -1000]),
        "ms": ([0, 1, -1], [0, 1, -1]),
        "us": ([0, 999, 1000, -1, -1000, -1001], [0, 0, 1, -1, -1, -2]),
        "ns": ([999_999, 1_000_000, -1], [0, 1, -1]),
    }
    for unit, (raw, want) in cases.items():
        array = pa.array(raw, type=pa.timestamp(unit, tz="America/New_York"))
        assert timestamps_ms(array).tolist() == want, unit
    assert timestamps_ms(pa.array([5, -3], type=pa.int32())).tolist() == [5, -3]


def test_csv_ids_that_look_numeric_stay_strings(tmp_path: Path) -> None:
    csv = tmp_path / "spine.csv"
    csv.write_text("user_id,ts,label\n007,1700000000000,1\n42,2023-11-14T22:13:20+00:00,0\n")
    with pytest.raises(SpineError, match="timezone-aware timestamp or integer"):
        open_spine(csv, "ts", USER)  # mixed ints and times: a string column
    csv.write_text("user_id,ts,label\n007,1700000000000,1\n42,1700000000001,0\n")
    spine = open_spine(csv, "ts", USER)
    result = compact(spine, tmp_path / "compact.parquet")
    table = pq.read_table(result.path)
    assert table.column("k_user_id").to_pylist() == ["007", "42"]
    assert (result.min_t, result.max_t, result.rows) == (1_700_000_000_000, 1_700_000_000_001, 2)
