"""Load N entities' tiles into a keyspace, written straight through the core (as the job would).

    .venv/bin/python -m benchmarks.serving.load_tiles --entities 1000 --keyspace bench_serving

Applies the benchmark registry (example + bench_views.yaml) to the keyspace's registry store
(tables only, no Kafka topics), folds random events of every source into tiles with
``ViewAggregator`` and inserts the ones the job would still hold, with the job's TTL. Events
span the last 7 days.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

from benchmarks.serving.common import ENTITY_PREFIX, bench_registry
from feature_store.adapters.cql import CqlConfig, make_cluster
from feature_store.adapters.cql_online_schema import CqlOnlineSchema
from feature_store.adapters.cql_registry_store import CqlRegistryStore
from feature_store.core.model import Registry
from feature_store.definitions.apply import apply_registry
from feature_store.serving.testing import random_events, tiles_from_events
from feature_store.stream.tile_writer import ViewTiles

DAY_MS = 86_400_000


def load(
    keyspace: str, entities: int, events_per_entity: int, *, port: int = 9042, seed: int = 1
) -> tuple[Registry, dict[str, Any]]:
    """Apply the benchmark registry to ``keyspace`` and write tiles; returns it and load stats."""
    from cassandra.concurrent import execute_concurrent_with_args  # noqa: PLC0415

    config = CqlConfig(port=port, keyspace=keyspace)
    cluster = make_cluster(config)
    session = cluster.connect()
    try:
        store = CqlRegistryStore(session, config, "default")
        registry = bench_registry()
        result = apply_registry(
            store,
            registry,
            [CqlOnlineSchema(session, config)],
            applied_by="bench",
            message="serving benchmark",
        )
        version = result.snapshot.version if result.snapshot else store.latest().version  # type: ignore[union-attr]
        registry = dataclasses.replace(registry, version=version)
        users = [f"{ENTITY_PREFIX}{i}" for i in range(entities)]
        now = int(time.time() * 1000)
        started = time.monotonic()
        rows = 0
        per_source = max(1, entities * events_per_entity // 4)  # each event feeds ~4 entity views
        for i, source in enumerate(registry.sources):
            events = random_events(source, per_source, users, now, 7 * DAY_MS, seed=seed + i)
            for view in registry.views_of_source(source.name):
                stmt = session.prepare(
                    f"INSERT INTO {keyspace}.{view.table}"
                    " (entity_key, feature_view, granularity_ms, tile_start_ms, payload)"
                    " VALUES (?, ?, ?, ?, ?) USING TTL ?"
                )
                # what the job leaves in the store: tiles past every window's retention are gone
                # (the job writes them with USING TTL and stops keeping them), the rest expire
                # when the job's would
                retention = ViewTiles(view, source)
                params = [
                    (key, view.name, g, start, payload, retention.ttl_seconds((g, start), now))
                    for key, tiles in tiles_from_events(registry, view.name, events).items()
                    for (g, start), payload in tiles.items()
                    if not retention.expired((g, start), now)
                ]
                execute_concurrent_with_args(session, stmt, params, concurrency=64, raise_on_first_error=True)
                rows += len(params)
        stats: dict[str, Any] = {"entities": entities, "events_per_source": per_source, "tile_rows": rows}
        stats["load_seconds"] = round(time.monotonic() - started, 1)
        return registry, stats
    finally:
        cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keyspace", default="bench_serving")
    parser.add_argument("--entities", type=int, default=1000)
    parser.add_argument("--events-per-entity", type=int, default=20)
    parser.add_argument("--port", type=int, default=9042)
    args = parser.parse_args()
    _, stats = load(args.keyspace, args.entities, args.events_per_entity, port=args.port)
    print(stats)


if __name__ == "__main__":
    main()
