"""Job benchmark helpers against the real stack: the consumer-lag probe, the JVM-only ceiling."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from benchmarks.job.bench_job import consumer_lag, drop_isolated, isolated
from tests.integration.conftest import Stack
from tests.integration.feature_job_support import isolated_registry

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_lag_counts_what_the_group_has_not_committed_per_source(stack: Stack, unique_name: str) -> None:
    iso = isolated_registry(unique_name, stack.kafka_bootstrap, stack.cassandra_port)
    like = iso.source("like")
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap})
    for i in range(3):
        producer.produce(like.topic, value=b"x", partition=0, key=str(i).encode())
    producer.flush(10)
    group = f"{unique_name}-job"
    committer = Consumer({"bootstrap.servers": stack.kafka_bootstrap, "group.id": f"{group}.like"})
    committer.commit(offsets=[TopicPartition(like.topic, 0, 1)], asynchronous=False)
    committer.close()

    lag = consumer_lag(iso.registry, group, stack.kafka_bootstrap)

    assert lag["like"] == 2  # three produced, the first committed
    assert all(n == 0 for name, n in lag.items() if name != "like")
    assert set(lag) == {s.name for s in iso.registry.sources if iso.registry.views_of_source(s.name)}


def test_a_benchmark_run_leaves_no_keyspace_or_topic_behind(stack: Stack, unique_name: str) -> None:
    if (stack.kafka_bootstrap, stack.cassandra_port) != ("127.0.0.1:9092", 9042):
        pytest.skip("the benchmarks use the default ports")
    admin = AdminClient({"bootstrap.servers": stack.kafka_bootstrap})

    def topics() -> set[str]:
        return {t for t in admin.list_topics(timeout=10).topics if t.startswith(f"{unique_name}.")}

    _, _, session = isolated(unique_name)
    keyspaces = "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = %s"
    assert session.execute(keyspaces, (unique_name,)).one() is not None
    assert topics()

    drop_isolated(unique_name, session, stack.kafka_bootstrap)

    assert session.execute(keyspaces, (unique_name,)).one() is None
    deadline = time.monotonic() + 30  # a deleted topic leaves the metadata shortly after
    while topics() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not topics()


@pytest.mark.slow
def test_the_jvm_ceiling_reads_every_event_of_the_source_twice(stack: Stack) -> None:
    # its own process, as the other job runs: the Flink gateway outlives a test's process pipes
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.job.jvm_ceiling", "--events", "2000", "--source", "like"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    # the JSON result, then possibly Flink's shutdown log lines on the same stdout
    result, _ = json.JSONDecoder().raw_decode(done.stdout, done.stdout.rindex('{\n  "benchmark"'))
    assert result["events"] > 0
    assert [r["run"] for r in result["runs"]] == ["cold", "warm"]
    assert all(r["events_per_s"] > 0 for r in result["runs"])
