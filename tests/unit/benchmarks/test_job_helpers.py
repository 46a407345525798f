"""Helpers of the job benchmark."""

from __future__ import annotations

import os

from benchmarks.job.bench_job import proc_cpu_s


def test_a_processs_cpu_grows_while_it_works() -> None:
    before = proc_cpu_s(os.getpid())
    total = 0
    while proc_cpu_s(os.getpid()) - before < 0.05:  # ticks are 10 ms: wait for a few
        total += sum(range(10_000))
    assert total > 0
    assert proc_cpu_s(os.getpid()) > before
