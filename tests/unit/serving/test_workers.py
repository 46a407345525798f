"""The multi-process supervisor's pure parts: merged metrics, port reservation, settings."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from feature_store.serving.settings import ServeSettings
from feature_store.serving.workers import Supervisor, _reserve, _Worker, merge_worker_metrics


def _exposition(requests: int, latency_s: float) -> str:
    registry = CollectorRegistry()
    counter = Counter("fstore_serving_errors", "errors", ["code"], registry=registry)
    counter.labels("INVALID_ARGUMENT").inc(requests)
    histogram = Histogram("fstore_serving_request_duration_seconds", "latency", registry=registry)
    for _ in range(requests):
        histogram.observe(latency_s)
    return generate_latest(registry).decode()


def test_worker_metrics_merge_into_one_family_each_with_a_worker_label() -> None:
    families = merge_worker_metrics([("0", _exposition(2, 0.001)), ("1", _exposition(3, 0.2))])
    by_name = {f.name: f for f in families}
    assert set(by_name) >= {"fstore_serving_errors", "fstore_serving_request_duration_seconds"}
    errors = [s for s in by_name["fstore_serving_errors"].samples if s.name == "fstore_serving_errors_total"]
    assert {(s.labels["worker"], s.labels["code"], s.value) for s in errors} == {
        ("0", "INVALID_ARGUMENT", 2.0),
        ("1", "INVALID_ARGUMENT", 3.0),
    }
    counts = {
        s.labels["worker"]: s.value
        for s in by_name["fstore_serving_request_duration_seconds"].samples
        if s.name.endswith("_count")
    }
    assert counts == {"0": 2.0, "1": 3.0}

    # and the merged families expose again as valid text (one HELP/TYPE per family)
    registry = CollectorRegistry(auto_describe=False)

    class Fixed:
        def collect(self):  # type: ignore[no-untyped-def]
            return families

    registry.register(Fixed())
    text = generate_latest(registry).decode()
    assert text.count("# TYPE fstore_serving_request_duration_seconds histogram") == 1
    reparsed = {f.name for f in text_string_to_metric_families(text)}
    assert "fstore_serving_request_duration_seconds" in reparsed


def test_no_worker_answering_gives_no_series() -> None:
    assert merge_worker_metrics([]) == []


def test_the_reserved_port_can_be_bound_again_with_reuse_port() -> None:
    reserved, port = _reserve("127.0.0.1:0")
    try:
        assert port > 0
        other = socket.socket()
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", port))  # what each worker's gRPC server does
        other.listen()
        other.close()
    finally:
        reserved.close()


def test_a_port_taken_without_reuse_port_is_refused() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            _reserve(f"127.0.0.1:{taken.getsockname()[1]}")


def test_worker_settings() -> None:
    with pytest.raises(ValidationError):
        ServeSettings(workers=0)
    with pytest.raises(ValueError, match="2 or more"):
        Supervisor(ServeSettings(workers=1))
    supervisor = Supervisor(ServeSettings(workers=3, listen="0.0.0.0:7000", metrics_port=9464))
    supervisor.port = 7000
    child = supervisor.worker_settings()
    assert (child.workers, child.reuse_port, child.listen, child.metrics_port) == (1, True, "0.0.0.0:7000", 0)
    off = Supervisor(ServeSettings(workers=2, metrics_port=None))
    assert off.worker_settings().metrics_port is None


class _DeadProcess:
    """A worker process that has already exited with code 1."""

    pid = 0
    exitcode = 1

    def is_alive(self) -> bool:
        return False

    def join(self, timeout: float | None = None) -> None:
        return None


def test_a_worker_dying_right_after_each_start_stops_the_supervisor(monkeypatch: Any) -> None:
    supervisor = Supervisor(ServeSettings(workers=2, metrics_port=None))
    spawned: list[int] = []

    def spawn(index: int, settings: ServeSettings) -> _Worker:
        spawned.append(index)
        return _Worker(index, _DeadProcess(), time.monotonic())

    monkeypatch.setattr(supervisor, "_spawn", spawn)
    supervisor._workers = [spawn(0, supervisor.worker_settings()), spawn(1, supervisor.worker_settings())]
    assert supervisor.watch() == 1  # gave up instead of restarting forever
    assert spawned.count(0) == 3  # the first start and two restarts, then the third failure stops it
    assert supervisor._stop.is_set()


def test_a_worker_that_ran_a_while_is_restarted_without_counting_old_failures(monkeypatch: Any) -> None:
    supervisor = Supervisor(ServeSettings(workers=2, metrics_port=None))
    restarts: list[int] = []

    def spawn(index: int, settings: ServeSettings) -> _Worker:
        restarts.append(index)
        if len(restarts) >= 4:
            supervisor._stop.set()  # enough: end the watch loop
        return _Worker(index, _DeadProcess(), time.monotonic() - 60.0)  # ran for a minute

    monkeypatch.setattr(supervisor, "_spawn", spawn)
    supervisor._workers = [spawn(0, supervisor.worker_settings()), spawn(1, supervisor.worker_settings())]
    assert supervisor.watch() == 0
    assert restarts.count(0) >= 2  # restarted, never given up on
