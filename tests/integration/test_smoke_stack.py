"""Each service of the local stack is real: Kafka, Cassandra and a PyFlink job through the connector."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from datetime import UTC, datetime

import fastavro
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from feature_store.adapters.cql import CqlConfig, make_cluster
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

SCHEMA = fastavro.parse_schema(
    {
        "type": "record",
        "name": "Like",
        "namespace": "smoke",
        "fields": [
            {"name": "user_id", "type": "string"},
            {"name": "target_id", "type": "string"},
            {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        ],
    }
)


def create_topics(stack: Stack, *names: str) -> None:
    admin = AdminClient({"bootstrap.servers": stack.kafka_bootstrap})
    for future in admin.create_topics([NewTopic(n, 1, 1) for n in names]).values():
        future.result(timeout=30)


def consume(stack: Stack, topic: str, expected: int, timeout_s: float = 60) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": stack.kafka_bootstrap,
            "group.id": f"reader-{topic}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(values) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            value = msg.value()
            assert value is not None
            values.append(value)
    finally:
        consumer.close()
    return values


def test_kafka_round_trips_an_avro_record(stack: Stack, unique_name: str) -> None:
    topic = f"smoke.avro.{unique_name}"
    create_topics(stack, topic)
    record = {"user_id": "u1", "target_id": "u2", "event_time": 1_700_000_000_000}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, SCHEMA, record)
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap})
    producer.produce(topic, value=buf.getvalue(), key=b"u1")
    assert producer.flush(30) == 0

    [raw] = consume(stack, topic, expected=1)

    decoded = fastavro.schemaless_reader(io.BytesIO(raw), SCHEMA, None)
    assert isinstance(decoded, dict)
    assert decoded["event_time"] == datetime.fromtimestamp(1_700_000_000, tz=UTC)
    assert {k: decoded[k] for k in ("user_id", "target_id")} == {"user_id": "u1", "target_id": "u2"}


def test_cassandra_writes_and_reads_with_a_prepared_statement(stack: Stack, unique_name: str) -> None:
    cluster = make_cluster(CqlConfig(port=stack.cassandra_port))
    try:
        session = cluster.connect()
        session.execute(
            f"CREATE KEYSPACE IF NOT EXISTS {unique_name} "
            "WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
        )
        session.execute(f"CREATE TABLE {unique_name}.kv (k text PRIMARY KEY, v blob, n bigint)")
        insert = session.prepare(f"INSERT INTO {unique_name}.kv (k, v, n) VALUES (?, ?, ?) USING TTL 600")
        select = session.prepare(f"SELECT v, n FROM {unique_name}.kv WHERE k = ?")
        session.execute(insert, ("user:1", b"\x01\x02", 42))

        row = session.execute(select, ("user:1",)).one()

        assert (row.v, row.n) == (b"\x01\x02", 42)
        session.execute(f"DROP KEYSPACE {unique_name}")
    finally:
        cluster.shutdown()


def test_pyflink_job_reads_kafka_through_the_connector(stack: Stack, unique_name: str) -> None:
    in_topic, out_topic = f"smoke.in.{unique_name}", f"smoke.out.{unique_name}"
    create_topics(stack, in_topic, out_topic)
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap})
    for i in range(20):
        producer.produce(in_topic, value=f"event-{i}".encode())
    assert producer.flush(30) == 0

    # The same entry point `fstore dev check` uses: a bounded job on the MiniCluster.
    proc = subprocess.run(
        [sys.executable, "-m", "feature_store.stream.passthrough", "--bootstrap", stack.kafka_bootstrap]
        + ["--in-topic", in_topic, "--out-topic", out_topic, "--group", unique_name],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    values = consume(stack, out_topic, expected=20)
    assert sorted(values) == sorted(f"seen-by-flink:event-{i}".encode() for i in range(20))
