"""Send generated events to Kafka at a target rate, and say what happened.

Events arrive already in the Confluent wire format (the generator's encoder writes the bytes
``avro_wire.encode`` writes, with ``schema_id(source)``), keyed by the acting user so a
user's events keep their order within a partition (the producer is idempotent, so retries
do not reorder). A token bucket paces ``produce`` calls; while it waits, the producer
serves delivery reports. Delivery errors are counted, not raised: a summary reports them.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import KafkaError, Message, Producer

from feature_store.adapters.kafka_topics import KafkaTopics
from feature_store.core.model import Registry
from feature_store.events.generator import EventKind, GeneratedEvent

DEFAULT_PRODUCER_CONFIG: dict[str, Any] = {
    "linger.ms": 20,  # batch for up to 20 ms...
    "batch.size": 1_000_000,  # ...or 1 MB per partition
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 500_000,
    "compression.type": "lz4",
    "acks": "all",
    "enable.idempotence": True,  # retries keep per-partition (per-user) order
    "client.id": "fstore-events",
}
_PROGRESS_EVERY = 512  # produce calls between clock checks for progress reports


class KafkaProducer(Protocol):
    """What is used of ``confluent_kafka.Producer`` (tests pass a fake)."""

    def produce(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, *, timestamp: int = 0
    ) -> None: ...

    def poll(self, timeout: float = -1) -> int: ...

    def flush(self, timeout: float = -1) -> int: ...


class TokenBucket:
    """``rate`` tokens per second, at most ``capacity`` banked; ``acquire`` waits for at least one."""

    def __init__(
        self,
        rate: float,
        capacity: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], object] = time.sleep,
    ) -> None:
        if not rate > 0:
            raise ValueError("rate must be > 0")
        self.rate = rate
        self.capacity = max(1.0, capacity if capacity is not None else rate / 20.0)  # 50 ms of burst
        self._clock = clock
        self._wait = wait
        self._tokens = 1.0
        self._last = clock()

    def acquire(self, most: int) -> int:
        """Block until a token is available; take and return as many as are (at most ``most``)."""
        while True:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1.0:
                n = max(1, min(int(self._tokens), most))
                self._tokens -= n
                return n
            self._wait((1.0 - self._tokens) / self.rate)


@dataclass(slots=True)
class ProduceSummary:
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (source, kind) -> produced
    topics: dict[str, str] = field(default_factory=dict)  # source -> topic
    produced: int = 0
    delivered: int = 0
    delivery_errors: int = 0
    undelivered_after_flush: int = 0
    error_samples: list[str] = field(default_factory=list)
    target_rate: float | None = None
    produce_seconds: float = 0.0  # first to last produce call
    total_seconds: float = 0.0  # including the final flush
    interrupted: bool = False

    @property
    def achieved_rate(self) -> float:
        """Events handed to the producer per second."""
        return self.produced / self.produce_seconds if self.produce_seconds > 0 else 0.0

    @property
    def delivered_rate(self) -> float:
        """Events acknowledged by the broker per second, flush included."""
        return self.delivered / self.total_seconds if self.total_seconds > 0 else 0.0

    def by_source(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for (source, kind), n in sorted(self.counts.items()):
            out.setdefault(source, {k.value: 0 for k in EventKind})[str(kind)] = n
        return out

    def by_kind(self) -> dict[str, int]:
        totals = {k.value: 0 for k in EventKind}
        for (_, kind), n in self.counts.items():
            totals[str(kind)] += n
        return totals

    def to_json(self) -> dict[str, Any]:
        return {
            "produced": self.produced,
            "delivered": self.delivered,
            "delivery_errors": self.delivery_errors,
            "undelivered_after_flush": self.undelivered_after_flush,
            "error_samples": self.error_samples,
            "by_kind": self.by_kind(),
            "by_source": self.by_source(),
            "topics": dict(sorted(self.topics.items())),
            "target_rate": self.target_rate,
            "achieved_rate": round(self.achieved_rate, 1),
            "delivered_rate": round(self.delivered_rate, 1),
            "produce_seconds": round(self.produce_seconds, 3),
            "total_seconds": round(self.total_seconds, 3),
            "interrupted": self.interrupted,
        }


def create_topics(registry: Registry, bootstrap: str, partitions: int = 2) -> None:
    """Create the registry's missing source and dead-letter topics (auto-creation is off locally)."""
    KafkaTopics(bootstrap, partitions=partitions).apply(None, registry)


def produce_events(
    events: Iterable[GeneratedEvent],
    bootstrap: str,
    *,
    rate: float | None = None,
    producer_config: Mapping[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
    progress_interval_s: float = 0.1,
    flush_timeout_s: float = 60.0,
    producer_factory: Callable[[dict[str, Any]], KafkaProducer] = Producer,
) -> ProduceSummary:
    """Produce ``events`` (at most ``rate`` per second; ``None``: as fast as possible), then flush.

    ``progress(produced)`` is called about every ``progress_interval_s``. Ctrl-C stops
    producing, still flushes, and marks the summary ``interrupted``.
    """
    summary = ProduceSummary(target_rate=rate)

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            summary.delivered += 1
            return
        summary.delivery_errors += 1
        if len(summary.error_samples) < 5:
            summary.error_samples.append(str(err))

    config = {"bootstrap.servers": bootstrap, **DEFAULT_PRODUCER_CONFIG, **(producer_config or {})}
    config["on_delivery"] = delivered
    producer = producer_factory(config)
    bucket = TokenBucket(rate, wait=producer.poll) if rate else None
    counts = summary.counts
    topics = summary.topics
    produce, poll = producer.produce, producer.poll
    start = last_report = time.monotonic()
    allowance = 0
    n = 0
    try:
        for ev in events:
            if bucket is not None and allowance <= 0:
                allowance = bucket.acquire(_PROGRESS_EVERY)
            allowance -= 1
            while True:
                try:
                    # the Kafka timestamp is the event time: the feature job derives its
                    # per-partition watermarks from it
                    produce(ev.topic, ev.value, ev.key, timestamp=ev.event_time_ms)
                    break
                except BufferError:  # the local queue is full: let librdkafka send
                    poll(0.05)
            counts[ev.source, ev.kind] += 1
            if ev.source not in topics:
                topics[ev.source] = ev.topic
            n += 1
            if n % _PROGRESS_EVERY == 0:
                poll(0)
                now = time.monotonic()
                if progress is not None and now - last_report >= progress_interval_s:
                    last_report = now
                    progress(n)
    except KeyboardInterrupt:
        summary.interrupted = True
    summary.produced = n
    summary.produce_seconds = time.monotonic() - start
    if progress is not None:
        progress(n)
    summary.undelivered_after_flush = producer.flush(flush_timeout_s)
    summary.total_seconds = time.monotonic() - start
    return summary


def generate_only(
    events: Iterable[GeneratedEvent],
    *,
    progress: Callable[[int], None] | None = None,
    progress_interval_s: float = 0.1,
) -> ProduceSummary:
    """Count ``events`` without Kafka: the dry run, and the generator's speed (``achieved_rate``)."""
    summary = ProduceSummary()
    counts, topics = summary.counts, summary.topics
    start = last_report = time.monotonic()
    n = 0
    try:
        for ev in events:
            counts[ev.source, ev.kind] += 1
            if ev.source not in topics:
                topics[ev.source] = ev.topic
            n += 1
            if progress is not None and n % _PROGRESS_EVERY == 0:
                now = time.monotonic()
                if now - last_report >= progress_interval_s:
                    last_report = now
                    progress(n)
    except KeyboardInterrupt:
        summary.interrupted = True
    summary.produced = n
    summary.produce_seconds = summary.total_seconds = time.monotonic() - start
    if progress is not None:
        progress(n)
    return summary
