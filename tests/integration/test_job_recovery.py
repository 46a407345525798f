"""kill -9 the feature job mid-stream, restart it from its last checkpoint: nothing lost, nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Stack
from tests.integration.feature_job_support import (
    Isolated,
    expected_tiles,
    isolated_registry,
    job_command,
    produce,
    stored_tiles,
    wait_for,
)
from tests.integration.test_feature_job import like_events

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def latest_checkpoint(root: Path) -> Path | None:
    done = sorted(
        (p.parent for p in root.glob("*/chk-*/_metadata")), key=lambda p: int(p.name.removeprefix("chk-"))
    )
    return done[-1] if done else None


def start_job(
    iso: Isolated,
    checkpoints: Path,
    log: Path,
    restore: Path | None = None,
    source: str = "like",
    state_backend: str = "hashmap",
) -> subprocess.Popen[bytes]:
    extra = ["--source", source, "--checkpoint-interval-ms", "1000", "--checkpoint-dir", str(checkpoints)]
    extra += ["--state-backend", state_backend]
    if restore is not None:
        extra += ["--restore-from", restore.resolve().as_uri()]
    # each run's Flink log in its own folder, quoted when the test fails
    env = {**os.environ, "FLINK_LOG_DIR": str(_flink_logs(log, restore is not None))}
    with log.open("ab") as sink:
        # its own process group: kill -9 takes the Python driver and the Flink JVM together
        return subprocess.Popen(
            job_command(iso, *extra), stdout=sink, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )


def _flink_logs(log: Path, restored: bool) -> Path:
    return log.parent / ("flink-restored" if restored else "flink-first")


def _flink_problems(folder: Path, limit: int = 20) -> str:
    """The last errors, failures and restarts of a run's Flink log (stack frames left out)."""
    wanted = (" ERROR ", "Exception", "to FAILED", "RESTARTING", "failed, retrying", "unanswered")
    lines = [
        line.rstrip()
        for path in sorted(folder.glob("*.log"))
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
        if any(w in line for w in wanted) and not line.startswith("\tat ")
    ]
    return "\n".join(lines[-limit:]) or "(no warnings or errors)"


def _difference(want: dict[bytes, dict[Any, Any]], got: dict[bytes, dict[Any, Any]]) -> str:
    """Which tiles differ from the ground truth, for a readable failure."""
    missing, extra, wrong = [], [], []
    for key, tiles in want.items():
        stored = got.get(key, {})
        missing += [(key, t) for t in tiles.keys() - stored.keys()]
        extra += [(key, t) for t in stored.keys() - tiles.keys()]
        both = tiles.keys() & stored.keys()
        wrong += [(key, t, tiles[t], stored[t]) for t in both if tiles[t] != stored[t]]
    total = sum(len(t) for t in want.values())
    return (
        f"of {total} tiles: {len(missing)} missing (e.g. {missing[:3]}), {len(extra)} extra (e.g. "
        f"{extra[:3]}), {len(wrong)} different (want, stored; e.g. {wrong[:3]})"
    )


def kill_9(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def like_scenario(now: int) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """likes (counts only): the second batch follows the first in event time."""
    twenty_minutes = 1_200_000
    first = like_events(3000, seed=7, now_ms=now - twenty_minutes, span_ms=twenty_minutes)
    # enough that they are still being produced when the job is killed
    second = like_events(40_000, seed=8, now_ms=now, span_ms=twenty_minutes)
    return "like", first, second


def video_call_scenario(now: int) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """video_call_end: lifetime windows, sums, avg, max, last, last_n and count_distinct, whose
    JVM accumulators (sketches, newest entries) must come back from the checkpoint intact."""
    from feature_store.core.model import Registry  # noqa: PLC0415
    from feature_store.definitions.compiler import load_registry  # noqa: PLC0415
    from feature_store.events.generator import EventKind, GeneratorConfig, generate  # noqa: PLC0415

    registry: Registry = load_registry(Path(__file__).resolve().parents[2] / "registry")
    # all in the past: the broker rejects records stamped more than an hour ahead
    config = GeneratorConfig(seed=5, rate=60.0, start_ms=now - 3_400_000, users=400)
    records = [
        ev.record
        for ev in generate(registry, config, max_events=200_000)
        if ev.kind is EventKind.VALID and ev.source == "video_call_end" and ev.record is not None
    ]
    return "video_call_end", records[:3000], records[3000:]


@pytest.mark.parametrize(
    ("scenario", "state_backend"),
    [(like_scenario, "hashmap"), (video_call_scenario, "hashmap"), (video_call_scenario, "rocksdb")],
    ids=["like", "video_call_end", "video_call_end-rocksdb"],
)
def test_restart_from_checkpoint_after_kill_9_stores_exactly_the_ground_truth(
    stack: Stack, tmp_path: Path, scenario: Any, state_backend: str
) -> None:
    """Killed mid-stream and restarted from the last checkpoint (on RocksDB: incremental), the
    job stores exactly the ground truth."""
    iso = isolated_registry(f"rec{uuid.uuid4().hex[:10]}", stack.kafka_bootstrap, stack.cassandra_port)
    name, first, second = scenario(int(time.time() * 1000))
    source = iso.source(name)
    views = [v.name for v in iso.registry.views_of_source(name)]
    want = {v: expected_tiles(iso.registry, v, first + second) for v in views}
    probe = next(iter(expected_tiles(iso.registry, views[0], first)))  # an entity of the first batch
    checkpoints, log = tmp_path / "checkpoints", tmp_path / "job.log"
    produce(iso.bootstrap, source, first, key_field="user_id")

    def stored() -> dict[str, Any]:
        return {v: stored_tiles(iso, v, want[v].keys()) for v in views}

    job = start_job(iso, checkpoints, log, source=name, state_backend=state_backend)
    try:
        wait_for(lambda: latest_checkpoint(checkpoints) is not None, 180, "a completed checkpoint")
        wait_for(
            lambda: any(stored_tiles(iso, views[0], [probe]).values()),
            120,
            "first tiles in the store",
        )
        # killed while the second batch is still being produced, so surely mid-stream
        producer = threading.Thread(
            target=produce, args=(iso.bootstrap, source, second), kwargs={"key_field": "user_id"}
        )
        producer.start()
        time.sleep(0.3)
    finally:
        kill_9(job)
    producer.join()
    # mid-stream: the store does not hold the final values yet (else a restart that ignored its
    # checkpoint could pass by leaving pre-crash cells alone)
    assert stored() != want
    restore = latest_checkpoint(checkpoints)
    assert restore is not None

    job = start_job(iso, checkpoints, log, restore=restore, source=name, state_backend=state_backend)
    try:
        try:
            wait_for(lambda: stored() == want, 180, "the stored tiles to equal the ground truth")
        except AssertionError:
            got = stored()
            diffs = "\n".join(f"{v}: {_difference(want[v], got[v])}" for v in views if got[v] != want[v])
            problems = _flink_problems(_flink_logs(log, restored=True))
            raise AssertionError(f"{diffs}\nrestored job's Flink log:\n{problems}") from None
    finally:
        kill_9(job)
