"""`fstore dev check`: prove the running stack end to end in a few seconds.

Kafka -> PyFlink job (through the Kafka connector) -> Kafka, and a prepared
write/read on the CQL store. Also the first steps of `fstore demo`.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from feature_store.adapters.cql import CqlConfig, make_cluster
from feature_store.stack.layout import Ports


class CheckFailed(RuntimeError):
    pass


def check_flink_kafka(ports: Ports, say: Callable[[str], None], events: int = 100) -> float:
    bootstrap = f"127.0.0.1:{ports.kafka}"
    run_id = uuid.uuid4().hex[:8]
    in_topic, out_topic = f"fstore.check.in.{run_id}", f"fstore.check.out.{run_id}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(in_topic, 1, 1), NewTopic(out_topic, 1, 1)]).values():
        future.result(timeout=30)
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(events):
        producer.produce(in_topic, value=f"check-{i}".encode())
    producer.flush(30)
    say(f"produced {events} records to {in_topic}; running a PyFlink job on the MiniCluster…")
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "feature_store.stream.passthrough", "--bootstrap", bootstrap]
        + ["--in-topic", in_topic, "--out-topic", out_topic, "--group", f"check-{run_id}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise CheckFailed(f"the PyFlink job failed:\n{proc.stderr[-2000:]}")
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"check-{run_id}-r", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([out_topic])
    got = 0
    deadline = time.monotonic() + 30
    while got < events and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            got += 1
    consumer.close()
    admin.delete_topics([in_topic, out_topic])
    if got != events:
        raise CheckFailed(f"the job wrote {got} of {events} records to {out_topic}")
    elapsed = time.monotonic() - started
    say(f"Flink read {events} records through the Kafka connector and wrote them back ({elapsed:.1f}s)")
    return elapsed


def check_cql(ports: Ports, say: Callable[[str], None]) -> None:
    cluster = make_cluster(CqlConfig(port=ports.cassandra))
    try:
        session = cluster.connect()
        version = session.execute("SELECT release_version FROM system.local").one()
        session.execute(
            "CREATE KEYSPACE IF NOT EXISTS fstore_check "
            "WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
        )
        session.execute("CREATE TABLE IF NOT EXISTS fstore_check.kv (k text PRIMARY KEY, v bigint)")
        put = session.prepare("INSERT INTO fstore_check.kv (k, v) VALUES (?, ?) USING TTL 60")
        get = session.prepare("SELECT v FROM fstore_check.kv WHERE k = ?")
        session.execute(put, ("check", 42))
        row = session.execute(get, ("check",)).one()
        if row is None or row.v != 42:
            raise CheckFailed("the CQL store did not return the row just written")
        say(f"CQL store (Cassandra {version.release_version}) wrote and read a row with prepared statements")
    finally:
        cluster.shutdown()
