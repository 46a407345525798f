"""The JVM-only ceiling: how fast Flink alone reads a source's Kafka events and groups them by a
key per hour, with no Python per event, on this machine.

    python -m benchmarks.job.jvm_ceiling --events 2000000 --source match_request

Not a feature job: the key is a slice of the raw bytes (no Avro decode) and the sink discards
the aggregates. It bounds what a job whose Python no longer sees every event can reach here
(docs/benchmarks.md, "Streaming job: where an event's time goes"). The same bounded query runs
twice on one MiniCluster: the first run includes the cluster's start-up, the second is warm.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from typing import Any

from benchmarks.job.bench_job import BOOTSTRAP, OUT, isolated, produce_generated, setup_text
from feature_store.stream.environment import FlinkSettings, create_environment

# mini-batch as a pre-aggregating job would use it: one update per key per batch downstream
MINI_BATCH = {
    "table.exec.mini-batch.enabled": "true",
    "table.exec.mini-batch.allow-latency": "1 s",
    "table.exec.mini-batch.size": "10000",
}


def query(topic: str, group: str, table: str) -> tuple[str, str]:
    source = f"""CREATE TEMPORARY TABLE {table} (
          `value` BYTES,
          `kafka_ts` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL
        ) WITH (
          'connector' = 'kafka', 'topic' = '{topic}', 'format' = 'raw',
          'properties.bootstrap.servers' = '{BOOTSTRAP}', 'properties.group.id' = '{group}',
          'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset'
        )"""
    insert = f"""INSERT INTO sink_{table} SELECT k, g, COUNT(*), MAX(kafka_ts) FROM (
          SELECT SUBSTRING(CAST(`value` AS STRING), 6, 10) AS k,
                 CAST(HOUR(CAST(kafka_ts AS TIMESTAMP(3))) AS BIGINT) AS g, kafka_ts
          FROM {table}
        ) GROUP BY k, g"""
    return source, insert


def run(events: int, source: str) -> dict[str, Any]:
    from pyflink.table import StreamTableEnvironment  # noqa: PLC0415

    name = f"jc{uuid.uuid4().hex[:8]}"
    registry, _, _ = isolated(name)
    now = int(time.time() * 1000)
    sent = produce_generated(registry, events, now - 3_000_000, rate=events / 3000, sources=[source])
    t_env = StreamTableEnvironment.create(create_environment(FlinkSettings()))
    for key, value in MINI_BATCH.items():
        t_env.get_config().set(key, value)
    runs = []
    for attempt in ("cold", "warm"):
        table = f"src_{attempt}"
        create, insert = query(registry.source(source).topic, f"{name}-{attempt}", table)
        t_env.execute_sql(create)
        t_env.execute_sql(
            f"CREATE TEMPORARY TABLE sink_{table} (k STRING, g BIGINT, c BIGINT, m TIMESTAMP_LTZ(3))"
            " WITH ('connector' = 'blackhole')"
        )
        started = time.monotonic()
        t_env.execute_sql(insert).wait()
        took = time.monotonic() - started
        runs.append({"run": attempt, "seconds": round(took, 2), "events_per_s": round(sent / took)})
    return {
        "benchmark": "job_jvm_ceiling",
        "setup": setup_text() | {"query": "raw Kafka -> GROUP BY (key, hour), mini-batch 1 s -> blackhole"},
        "source": source,
        "events": sent,
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=2_000_000, help="generator events (all sources)")
    parser.add_argument("--source", default="match_request", help="the source whose events are read")
    args = parser.parse_args()
    result = run(args.events, args.source)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"job_jvm_ceiling-{int(time.time())}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
