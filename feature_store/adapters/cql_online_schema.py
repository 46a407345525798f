"""Online-store tables: one per feature view, created (never dropped) by `fstore apply`.

CQL kept to what ScyllaDB and Cassandra 5.0 both accept: no SAI, vector type,
counters or LWT. See docs/architecture.md for the layout.
"""

from __future__ import annotations

from typing import Any

from feature_store.adapters.cql import CqlConfig
from feature_store.adapters.cql_registry_store import ensure_keyspace
from feature_store.core.model import Registry


def table_ddl(keyspace: str, table: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {keyspace}.{table} ("
        " entity_key blob, granularity_ms bigint, tile_start_ms bigint, payload blob,"
        " PRIMARY KEY ((entity_key), granularity_ms, tile_start_ms))"
        " WITH CLUSTERING ORDER BY (granularity_ms ASC, tile_start_ms DESC)"
        " AND compaction = {'class': 'LeveledCompactionStrategy'}"
        # every cell carries a TTL and overwrites are idempotent: tombstones can go early
        " AND gc_grace_seconds = 10800"
    )


class CqlOnlineSchema:
    """An ApplyTarget: makes sure every online feature view has its table."""

    name = "online store"

    def __init__(self, session: Any, config: CqlConfig) -> None:
        self._session = session
        self._config = config

    def _existing_tables(self) -> set[str]:
        rows = self._session.execute(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", (self._config.keyspace,)
        )
        return {r.table_name for r in rows}

    def plan_changes(self, old: Registry | None, new: Registry) -> list[str]:
        existing = self._existing_tables()
        changes = [
            f"create table {self._config.keyspace}.{v.table} for feature view {v.name}"
            for v in new.views
            if v.online and v.table not in existing
        ]
        kept = {v.table for v in (old.views if old else ()) if v.table in existing} - {
            v.table for v in new.views
        }
        changes += [
            f"keep table {self._config.keyspace}.{t} of a removed view (drop it by hand)" for t in kept
        ]
        return changes

    def apply(self, old: Registry | None, new: Registry) -> None:
        ensure_keyspace(self._session, self._config)
        for view in new.views:
            if view.online:
                self._session.execute(table_ddl(self._config.keyspace, view.table))
