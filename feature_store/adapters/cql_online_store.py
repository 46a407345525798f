"""Reading and writing tiles of the online store (layout: docs/architecture.md).

One table per entity; a row is one tile of one view: ``(entity_key, feature_view,
granularity_ms, tile_start_ms) -> payload``. Reads are single-partition: one view
(``read_tiles``) or several views of the same entity at once (``read_views_async``); rows come
back per view, granularity ascending, newest tile first. Shared by the job (``insert_cql``), the
server (async) and tests and tools (sync).
"""

from __future__ import annotations

from typing import Any

from feature_store.core.model import FeatureView
from feature_store.core.tiles import TileKey

TileRows = list[tuple[TileKey, bytes]]


def insert_cql(keyspace: str, view: FeatureView) -> str:
    """The job's tile write (bind: entity_key, feature_view, granularity_ms, tile_start_ms,
    payload, ttl seconds, write timestamp µs)."""
    return (
        f"INSERT INTO {keyspace}.{view.table}"
        " (entity_key, feature_view, granularity_ms, tile_start_ms, payload)"
        " VALUES (?, ?, ?, ?, ?) USING TTL ? AND TIMESTAMP ?"
    )


class CqlOnlineStore:
    def __init__(self, session: Any, keyspace: str) -> None:
        self._session = session
        self._keyspace = keyspace
        self._one: dict[str, Any] = {}
        self._many: dict[str, Any] = {}

    def _select_one(self, table: str) -> Any:
        stmt = self._one.get(table)
        if stmt is None:
            stmt = self._one[table] = self._session.prepare(
                f"SELECT granularity_ms, tile_start_ms, payload FROM {self._keyspace}.{table}"
                " WHERE entity_key = ? AND feature_view = ?"
            )
        return stmt

    def _select_many(self, table: str) -> Any:
        stmt = self._many.get(table)
        if stmt is None:
            stmt = self._many[table] = self._session.prepare(
                f"SELECT feature_view, granularity_ms, tile_start_ms, payload FROM {self._keyspace}.{table}"
                " WHERE entity_key = ? AND feature_view IN ?"
            )
        return stmt

    def prepare(self, views: tuple[FeatureView, ...]) -> None:
        for table in {view.table for view in views}:
            self._select_one(table)
            self._select_many(table)

    def read_tiles(self, view: FeatureView, entity_key: bytes) -> TileRows:
        rows = self._session.execute(self._select_one(view.table), (entity_key, view.name))
        return [((r.granularity_ms, r.tile_start_ms), r.payload) for r in rows]

    def read_views_async(self, table: str, view_names: list[str], entity_key: bytes) -> Any:
        """One partition read for several views of an entity (``view_names`` sorted, distinct):
        a driver ResponseFuture whose rows are (feature_view, granularity_ms, tile_start_ms,
        payload), grouped by view."""
        return self._session.execute_async(self._select_many(table), (entity_key, view_names))
