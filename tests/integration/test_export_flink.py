"""`fstore export --engine flink`: the export as a PyFlink batch job on the local MiniCluster
gives the local engine's file (same rows, columns, types, values, statuses and event times).

Needs Flink only: no Kafka or Cassandra (the `stack` fixture is not used). The case
(tests/unit/export/flink_support.py) has every aggregation kind, a two-key entity and a key
mapping, dirty events, replayed duplicates, dead letters and files of an older schema version.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from feature_store.export.engine import ExportOptions, export
from tests.unit.export import flink_support

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_flink_batch_job_gives_the_local_engines_file(tmp_path: Path) -> None:
    case = flink_support.build(tmp_path, seed=5)
    local = tmp_path / "local.parquet"
    export(
        case.registry,
        flink_support.SERVICE,
        case.spine,
        case.archive,
        local,
        ExportOptions(full_names=True, event_times=True),
    )

    started = time.monotonic()
    out = tmp_path / "flink.parquet"
    # in a child process, as a user runs it (the PyFlink gateway JVM outlives its Popen handle)
    proc = subprocess.run(
        [
            sys.executable, "-m", "feature_store.cli.main", "export",
            "--registry", str(case.registry_dir), "--spine", str(case.spine),
            "--service", flink_support.SERVICE, "--archive", str(case.archive), "--out", str(out),
            "--full-names", "--event-times", "--engine", "flink", "--parallelism", "2", "--buckets", "5",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    print(f"flink engine: {time.monotonic() - started:.1f}s")

    expected = pq.read_table(local)
    got = pq.read_table(out)
    assert got.schema == expected.schema
    assert got.equals(expected, check_metadata=True)
    statuses = {s for name in got.column_names if name.endswith("__status") for s in got[name].to_pylist()}
    assert {"PRESENT", "NOT_FOUND", "NULL_VALUE", "OUTSIDE_MAX_AGE"} <= statuses
