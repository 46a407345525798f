"""The Flink batch engine's dataflow (reading, bucketing, the keyed replay, assembly) without
Flink: the shuffle done in-process gives the local engine's file, whatever the bucketing.

The same dataflow on PyFlink's MiniCluster: tests/integration/test_export_flink.py.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from feature_store.export.engine import ExportOptions, export, prepare
from feature_store.export.flink_batch import FlinkExportOptions, execute_in_process, run_flink_export
from tests.unit.export import flink_support


@pytest.mark.parametrize("seed", [1, 2])
def test_the_dataflow_gives_the_local_engines_file(tmp_path: Path, seed: int) -> None:
    case = flink_support.build(tmp_path, seed)
    options = ExportOptions(full_names=True, event_times=True)
    local = tmp_path / "local.parquet"
    export(case.registry, flink_support.SERVICE, case.spine, case.archive, local, options)
    expected = pq.read_table(local)
    statuses = {
        s for name in expected.column_names if name.endswith("__status") for s in expected[name].to_pylist()
    }
    assert {"PRESENT", "NOT_FOUND", "NULL_VALUE", "OUTSIDE_MAX_AGE"} <= statuses

    for buckets, rows_per_record in ((1, 65_536), (7, 13)):
        out = tmp_path / f"flink-{buckets}.parquet"
        prepared = prepare(case.registry, flink_support.SERVICE, case.spine, case.archive, options)
        summary = run_flink_export(
            prepared,
            out,
            options,
            FlinkExportOptions(buckets=buckets, rows_per_record=rows_per_record),
            executor=execute_in_process,
        )
        assert pq.read_table(out).equals(expected, check_metadata=True), buckets
        assert summary.rows == expected.num_rows
        assert {v.buckets for v in summary.views.values()} == {buckets}
        assert summary.views["v_peer"].events > 0


def test_an_empty_spine_needs_no_job(tmp_path: Path) -> None:
    case = flink_support.build(tmp_path, 3, n_events=50, spine_rows=0)
    options = ExportOptions()

    def no_job(*args: object) -> None:
        raise AssertionError("no job for an empty spine")

    prepared = prepare(case.registry, "all_user", case.spine, case.archive, options)
    run_flink_export(prepared, tmp_path / "flink.parquet", options, executor=no_job)  # type: ignore[arg-type]
    export(case.registry, "all_user", case.spine, case.archive, tmp_path / "local.parquet", options)
    assert pq.read_table(tmp_path / "flink.parquet").equals(pq.read_table(tmp_path / "local.parquet"))
