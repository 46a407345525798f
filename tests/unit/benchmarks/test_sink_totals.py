"""The throughput benchmark reads the tile sink's totals from the Flink log of its own run."""

from __future__ import annotations

from pathlib import Path

from benchmarks.job.bench_job import sink_totals

LINE = (
    "2026-12-05 03:24:43,205 INFO  io.featurestore.flink.CqlTileSink [] - "
    "tile writer closing: {} tiles written in {} requests, 0 failed\n"
)


def test_totals_count_only_the_lines_of_this_run(tmp_path: Path) -> None:
    log = tmp_path / "flink.log"
    log.write_text(LINE.format(999, 999))
    offsets = {log: log.stat().st_size}
    with log.open("a") as f:
        f.write("other line\n" + LINE.format(300, 100) + LINE.format(100, 100))
    assert sink_totals(offsets, 200, [log]) == {"tiles_per_event": 2.0, "write_requests_per_event": 1.0}


def test_a_log_started_anew_is_read_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "flink.log"
    log.write_text(LINE.format(50, 25))
    want = {"tiles_per_event": 0.5, "write_requests_per_event": 0.25}
    assert sink_totals({log: 10_000}, 100, [log]) == want
    assert sink_totals({log: 0}, 100, []) == {}
