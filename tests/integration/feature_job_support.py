"""Helpers for the feature-job tests: an isolated applied registry, event production, ground truth."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka import Producer

from feature_store.adapters.avro_wire import encode, schema_id, strip_logical_types
from feature_store.adapters.cql import CqlConfig, make_cluster
from feature_store.adapters.cql_online_schema import CqlOnlineSchema
from feature_store.adapters.cql_online_store import CqlOnlineStore
from feature_store.adapters.cql_registry_store import CqlRegistryStore
from feature_store.adapters.kafka_topics import KafkaTopics
from feature_store.core.keys import entity_key_bytes
from feature_store.core.model import Registry, Source
from feature_store.core.tiles import TileKey, TileState, ViewAggregator
from feature_store.definitions.apply import apply_registry
from feature_store.definitions.compiler import load_registry

ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class Isolated:
    """The example registry with its own topics and keyspace, applied to the real stack."""

    registry: Registry
    cql: CqlConfig
    bootstrap: str
    store_url: str
    session: Any

    def source(self, name: str) -> Source:
        return self.registry.source(name)


_CLUSTERS: list[Any] = []  # every driver cluster the helpers opened, shut down after the session


def shutdown_clusters() -> None:
    """Close what :func:`isolated_registry` opened (a driver's scheduler thread left running
    at interpreter exit reports an error)."""
    while _CLUSTERS:
        _CLUSTERS.pop().shutdown()


def isolated_registry(unique: str, bootstrap: str, cql_port: int) -> Isolated:
    base = load_registry(ROOT / "registry")
    sources = tuple(
        dataclasses.replace(
            s, topic=f"{unique}.{s.topic}", dead_letter_topic=f"{unique}.{s.dead_letter_topic}"
        )
        for s in base.sources
    )
    registry = dataclasses.replace(base, sources=sources)
    cql = CqlConfig(port=cql_port, keyspace=unique)
    cluster = make_cluster(cql)
    _CLUSTERS.append(cluster)
    session = cluster.connect()
    store = CqlRegistryStore(session, cql, "default")
    result = apply_registry(
        store,
        registry,
        [CqlOnlineSchema(session, cql), KafkaTopics(bootstrap)],
        applied_by="tests",
        message="isolated",
    )
    assert result.snapshot is not None
    applied = dataclasses.replace(registry, version=result.snapshot.version)
    return Isolated(applied, cql, bootstrap, f"cql://127.0.0.1:{cql_port}/{unique}", session)


def avro_schema(source: Source) -> Any:
    return fastavro.parse_schema(strip_logical_types(json.loads(source.schema_json)))


def produce(bootstrap: str, source: Source, records: Iterable[Mapping[str, Any]], key_field: str) -> int:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    schema, sid = avro_schema(source), schema_id(source)
    failed: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:  # e.g. a timestamp too far ahead for the broker
            failed.append(str(err))

    n = 0
    for record in records:
        while True:
            try:
                producer.produce(
                    source.topic,
                    key=str(record[key_field]).encode(),
                    value=encode(schema, sid, record),
                    timestamp=int(record[source.event_time_field]),
                    on_delivery=delivered,
                )
                break
            except BufferError:
                producer.poll(0.05)
        n += 1
    assert producer.flush(30) == 0
    assert not failed, f"{len(failed)} records not delivered, e.g. {failed[:3]}"
    return n


def produce_raw(bootstrap: str, topic: str, values: Iterable[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for value in values:
        producer.produce(topic, value=value)
    assert producer.flush(30) == 0


def expected_tiles(
    registry: Registry, view_name: str, records: Iterable[Mapping[str, Any]]
) -> dict[bytes, dict[TileKey, TileState]]:
    """Ground truth from the pure core, computed independently of the job's state and writes."""
    view = registry.view(view_name)
    source = registry.source(view.source)
    agg = ViewAggregator(view, {f.name: f.type for f in source.fields})
    out: dict[bytes, dict[TileKey, TileState]] = {}
    for record in records:
        key = entity_key_bytes([record[k] for k in view.entity_key_fields])
        agg.update(out.setdefault(key, {}), record, int(record[source.event_time_field]))
    return out


def stored_tiles(
    iso: Isolated, view_name: str, entity_keys: Iterable[bytes]
) -> dict[bytes, dict[TileKey, TileState]]:
    view = iso.registry.view(view_name)
    source = iso.registry.source(view.source)
    agg = ViewAggregator(view, {f.name: f.type for f in source.fields})
    store = CqlOnlineStore(iso.session, iso.cql.keyspace)
    return {
        key: {tk: agg.decode(tk[0], payload) for tk, payload in store.read_tiles(view, key)}
        for key in entity_keys
    }


def job_command(iso: Isolated, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "feature_store.cli.main",
        "job",
        "run",
        "--store",
        iso.store_url,
        "--bootstrap",
        iso.bootstrap,
        "--group-id",
        iso.cql.keyspace,
        "--flush-interval-ms",
        "100",
        *extra,
    ]


def run_bounded(iso: Isolated, *sources: str, extra: tuple[str, ...] = ()) -> None:
    args = [*extra, *(a for s in sources for a in ("--source", s))]
    proc = subprocess.run(
        [*job_command(iso, *args), "--bounded", "--checkpoint-interval-ms", "0"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
