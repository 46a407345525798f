"""`fstore events produce` against the real broker: every event arrives, in per-user order."""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient
from typer.testing import CliRunner

from feature_store.adapters.avro_wire import DeadLetterReason, DecodeError, WireDecoder
from feature_store.cli import events_cmds
from feature_store.core.model import Registry
from feature_store.definitions.compiler import load_registry
from feature_store.events.generator import EventGenerator, EventKind, GeneratorConfig, with_topic_prefix
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

N = 2_000
START = "2026-01-01T00:00:00Z"
START_MS = 1_767_225_600_000


def consume_all(
    stack: Stack, topics: list[str], expected: int, timeout_s: float = 90
) -> list[tuple[str, int, bytes | None, bytes]]:
    consumer = Consumer(
        {
            "bootstrap.servers": stack.kafka_bootstrap,
            "group.id": f"reader-{topics[0]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe(topics)
    got: list[tuple[str, int, bytes | None, bytes]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                if msg.error():
                    continue
                topic, partition, value = msg.topic(), msg.partition(), msg.value()
                assert topic is not None
                assert partition is not None
                assert value is not None
                got.append((topic, partition, msg.key(), value))
        time.sleep(1.0)  # anything beyond the expected count would be a duplicate
        got.extend(
            (m.topic() or "", m.partition() or 0, m.key(), m.value() or b"")
            for m in consumer.consume(num_messages=1000, timeout=1.0)
            if not m.error()
        )
    finally:
        consumer.close()
    return got


def test_produce_then_consume_every_event_back(
    stack: Stack, unique_name: str, example_registry_dir: Path
) -> None:
    prefix = f"{unique_name}."
    args = ["produce", "--json", "--registry", str(example_registry_dir)]
    args += ["--bootstrap", stack.kafka_bootstrap, "--topic-prefix", prefix, "--start-time", START]
    args += ["--rate", "2000", "--max-events", str(N), "--seed", "21", "--users", "500"]
    args += ["--late-fraction", "0.05", "--malformed-fraction", "0.05"]
    result = CliRunner().invoke(events_cmds.app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["produced"] == summary["delivered"] == N
    assert summary["delivery_errors"] == summary["undelivered_after_flush"] == 0
    assert summary["achieved_rate"] == pytest.approx(2000, rel=0.3)

    # the same command line regenerates the same events: the expectation
    registry: Registry = with_topic_prefix(load_registry(example_registry_dir), prefix)
    config = GeneratorConfig(
        seed=21, rate=2000.0, users=500, start_ms=START_MS, late_fraction=0.05, malformed_fraction=0.05
    )
    expected = list(EventGenerator(registry, config).events(max_events=N))
    assert Counter(str(e.kind) for e in expected) == {k: n for k, n in summary["by_kind"].items() if n}

    topics = sorted({s.topic for s in registry.sources})
    dead_letter_topics = {s.dead_letter_topic for s in registry.sources if s.dead_letter_topic}
    existing = set(AdminClient({"bootstrap.servers": stack.kafka_bootstrap}).list_topics(timeout=30).topics)
    assert set(topics) | dead_letter_topics <= existing

    consumed = consume_all(stack, topics, N)

    assert len(consumed) == N
    assert Counter((t, k, v) for t, _, k, v in consumed) == Counter(
        (e.topic, e.key, e.value) for e in expected
    )
    # per user (key) and topic, the order of production is the order of consumption
    sent_order: dict[tuple[str, bytes | None], list[bytes]] = defaultdict(list)
    for e in expected:
        sent_order[e.topic, e.key].append(e.value)
    read_order: dict[tuple[str, bytes | None], list[bytes]] = defaultdict(list)
    partitions: dict[tuple[str, bytes | None], set[int]] = defaultdict(set)
    for topic, partition, key, value in consumed:
        read_order[topic, key].append(value)
        partitions[topic, key].add(partition)
    assert read_order == sent_order
    assert all(len(p) == 1 for p in partitions.values())

    # what the job will see: valid and late events decode, malformed ones fail as predicted
    by_topic = {s.topic: WireDecoder(s, registry.sources) for s in registry.sources}
    kind_of = {(e.topic, e.value): e for e in expected}
    outcomes: Counter[str] = Counter()
    for topic, _, _, value in consumed:
        event = kind_of[topic, value]
        if event.kind is EventKind.MALFORMED:
            assert event.defect is not None
            with pytest.raises(DecodeError) as info:
                by_topic[topic].decode(value)
            assert info.value.reason is DeadLetterReason(event.defect.reason)
            outcomes[info.value.reason.value] += 1
        else:
            assert by_topic[topic].decode(value) == event.record
            outcomes[str(event.kind)] += 1
    assert outcomes["valid"] == summary["by_kind"]["valid"]
    assert outcomes["late"] == summary["by_kind"]["late"]
    assert {DeadLetterReason(r) for r in outcomes if r not in ("valid", "late")} == {
        DeadLetterReason.NOT_FRAMED,
        DeadLetterReason.UNKNOWN_SCHEMA,
        DeadLetterReason.UNDECODABLE,
        DeadLetterReason.SCHEMA_MISMATCH,
    }
