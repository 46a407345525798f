"""Reading tiles from the online store: one single-partition read per (view, entity).

Shared by the server (async) and by tests and tools (sync). Statements are
prepared once per view; rows come back newest tile first within a granularity.
"""

from __future__ import annotations

from typing import Any

from feature_store.core.model import FeatureView
from feature_store.core.tiles import TileKey

TileRows = list[tuple[TileKey, bytes]]


class CqlOnlineStore:
    def __init__(self, session: Any, keyspace: str) -> None:
        self._session = session
        self._keyspace = keyspace
        self._selects: dict[str, Any] = {}

    def _select(self, view: FeatureView) -> Any:
        stmt = self._selects.get(view.table)
        if stmt is None:
            stmt = self._selects[view.table] = self._session.prepare(
                f"SELECT granularity_ms, tile_start_ms, payload FROM {self._keyspace}.{view.table}"
                " WHERE entity_key = ?"
            )
        return stmt

    def prepare(self, views: tuple[FeatureView, ...]) -> None:
        for view in views:
            self._select(view)

    def read_tiles(self, view: FeatureView, entity_key: bytes) -> TileRows:
        rows = self._session.execute(self._select(view), (entity_key,))
        return [((r.granularity_ms, r.tile_start_ms), r.payload) for r in rows]

    def read_tiles_async(self, view: FeatureView, entity_key: bytes) -> Any:
        """A driver ResponseFuture; its rows are (granularity_ms, tile_start_ms, payload)."""
        return self._session.execute_async(self._select(view), (entity_key,))
