"""Helpers of the job benchmark."""

from __future__ import annotations

import os
import time
from pathlib import Path

from benchmarks.job.bench_job import pregenerate, proc_cpu_s
from feature_store.definitions.compiler import load_registry

ROOT = Path(__file__).resolve().parents[3]


def test_a_processs_cpu_grows_while_it_works() -> None:
    before = proc_cpu_s(os.getpid())
    total = 0
    while proc_cpu_s(os.getpid()) - before < 0.05:  # ticks are 10 ms: wait for a few
        total += sum(range(10_000))
    assert total > 0
    assert proc_cpu_s(os.getpid()) > before


def test_pregenerated_load_starts_in_the_future_and_keeps_its_rate() -> None:
    registry = load_registry(ROOT / "registry")
    events = pregenerate(registry, rate=2000, seconds=3, users=500)
    times = [at for _, _, _, at in events]
    # timed ahead: no event is due before its generation ended
    assert min(times) > time.time() * 1000
    span_s = (max(times) - min(times)) / 1000
    assert 2.5 <= span_s <= 4.0  # (and its out-of-order events)
    assert 0.8 * 2000 * 3 <= len(events) <= 2000 * 3
    assert {topic for topic, *_ in events} <= {s.topic for s in registry.sources}
