from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from feature_store.core.model import Registry
from feature_store.events.generator import EventGenerator, EventKind, GeneratorConfig
from feature_store.events.producer import TokenBucket, generate_only, produce_events
from tests.unit.events.conftest import START_MS

CONFIG = GeneratorConfig(
    seed=1, rate=1000.0, users=500, start_ms=START_MS, late_fraction=0.1, malformed_fraction=0.1, warmup_s=5
)


class FakeError:
    def __str__(self) -> str:
        return "Broker: topic authorization failed"


class FakeProducer:
    """Delivers on poll/flush; refuses every 100th message once (queue full); fails one topic."""

    def __init__(self, config: dict[str, Any], failing_topic: str = "") -> None:
        self.config = config
        self.on_delivery: Callable[[Any, Any], None] = config["on_delivery"]
        self.pending: list[tuple[str, bytes, bytes | None]] = []
        self.sent: list[tuple[str, bytes, bytes | None]] = []
        self.failing_topic = failing_topic
        self.calls = 0
        self.polls = 0
        self.timestamps: list[int] = []

    def produce(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, *, timestamp: int = 0
    ) -> None:
        assert value is not None
        self.calls += 1
        if self.calls % 100 == 0:
            raise BufferError("Local: Queue full")
        self.timestamps.append(timestamp)
        self.pending.append((topic, value, key))

    def poll(self, timeout: float = 0) -> int:
        self.polls += 1
        done, self.pending = self.pending, []
        for msg in done:
            self.on_delivery(FakeError() if msg[0] == self.failing_topic else None, msg)
            self.sent.append(msg)
        return len(done)

    def flush(self, timeout: float = 0) -> int:
        self.poll()
        return 0


def test_produces_every_event_and_counts_by_source_and_kind(registry: Registry) -> None:
    events = list(EventGenerator(registry, CONFIG).events(max_events=2_000))
    made: list[FakeProducer] = []

    def factory(config: dict[str, Any]) -> FakeProducer:
        made.append(FakeProducer(config, failing_topic="events.like"))
        return made[0]

    progress: list[int] = []
    summary = produce_events(
        events, "kafka:9092", producer_factory=factory, progress=progress.append, progress_interval_s=0
    )

    producer = made[0]
    assert producer.config["bootstrap.servers"] == "kafka:9092"
    assert producer.config["enable.idempotence"] is True
    assert producer.sent == [(e.topic, e.value, e.key) for e in events]  # order kept across BufferError
    assert producer.timestamps == [e.event_time_ms for e in events]  # Kafka time = event time
    likes = sum(e.source == "like" for e in events)
    assert summary.produced == 2_000
    assert summary.delivery_errors == likes > 0
    assert summary.delivered == 2_000 - likes
    assert summary.error_samples[0] == "Broker: topic authorization failed"
    assert sum(summary.by_kind().values()) == 2_000
    assert summary.by_kind()["malformed"] == sum(e.kind is EventKind.MALFORMED for e in events)
    assert summary.by_source()["video_call_end"]["valid"] == sum(
        e.source == "video_call_end" and e.kind is EventKind.VALID for e in events
    )
    assert summary.topics["report"] == "events.report"
    assert progress[-1] == 2_000
    assert summary.to_json()["produced"] == 2_000


def test_the_rate_is_honoured(registry: Registry) -> None:
    events = list(EventGenerator(registry, CONFIG).events(max_events=600))

    started = time.monotonic()
    summary = produce_events(events, "x", rate=2_000.0, producer_factory=FakeProducer)
    elapsed = time.monotonic() - started

    assert elapsed >= 0.25  # 600 events at 2000/s: 0.3 s, less the first burst
    assert summary.achieved_rate == pytest.approx(2_000.0, rel=0.25)


def test_token_bucket_with_a_fake_clock() -> None:
    now = [0.0]
    waited: list[float] = []

    def wait(seconds: float) -> None:
        waited.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(100.0, capacity=10.0, clock=lambda: now[0], wait=wait)

    assert bucket.acquire(50) == 1  # starts with one token
    assert bucket.acquire(50) == 1  # then waits 10 ms for the next
    assert waited == [pytest.approx(0.01)]
    now[0] += 1.0  # idle for a second: only `capacity` tokens are banked
    assert bucket.acquire(50) == 10
    assert bucket.acquire(3) == 1
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(0.0)


def test_generate_only_counts_without_kafka(registry: Registry) -> None:
    summary = generate_only(EventGenerator(registry, CONFIG).events(max_events=1_000))

    assert summary.produced == 1_000
    assert summary.delivered == 0
    assert summary.achieved_rate > 0
