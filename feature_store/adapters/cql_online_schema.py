"""Online-store tables: one per entity, created (never dropped) by `fstore apply`.

A partition is one entity instance (its encoded join keys) and holds the tiles of every view of
that entity, clustered by view, granularity and tile start (newest first): a look-up of any set
of the entity's views is one single-partition read (``feature_view IN ?``).

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
        " entity_key blob, feature_view text, granularity_ms bigint, tile_start_ms bigint, payload blob,"
        " PRIMARY KEY ((entity_key), feature_view, granularity_ms, tile_start_ms))"
        " WITH CLUSTERING ORDER BY (feature_view ASC, granularity_ms ASC, tile_start_ms DESC)"
        " AND compaction = {'class': 'LeveledCompactionStrategy'}"
        # every cell carries a TTL and overwrites are idempotent: tombstones can go early
        " AND gc_grace_seconds = 10800"
    )


class CqlOnlineSchema:
    """An ApplyTarget: makes sure the entity of every online feature view has its table."""

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
        wanted: dict[str, list[str]] = {}
        for v in new.views:
            if v.online:
                wanted.setdefault(v.table, []).append(v.name)
        changes = [
            f"create table {self._config.keyspace}.{table} for feature view(s) {', '.join(views)}"
            for table, views in wanted.items()
            if table not in existing
        ]
        kept = {v.table for v in (old.views if old else ()) if v.table in existing} - set(wanted)
        changes += [
            f"keep table {self._config.keyspace}.{t} of an entity no online view uses (drop it by hand)"
            for t in sorted(kept)
        ]
        return changes

    def apply(self, old: Registry | None, new: Registry) -> None:
        ensure_keyspace(self._session, self._config)
        for table in sorted({view.table for view in new.views if view.online}):
            self._session.execute(table_ddl(self._config.keyspace, table))
