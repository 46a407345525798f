"""Content-keyed caches of the read path: never stale, because they are keyed by what the store returned.

Every request still reads the store; these caches only skip CPU work when the bytes read are
ones the server has already processed:

- **decoded tiles**, keyed by (aggregator, granularity, payload bytes): a tile's bytes fully
  determine its decoded state, and past tiles never change, so most of a long window's tiles
  decode once. Decoding (pure Python) is the largest cost of a look-up otherwise.
- **window reads**, keyed by (aggregator, the start of the current tile of each granularity,
  the rows read): ``ViewAggregator.read(tiles, t)`` depends on ``t`` only through those tile
  starts (see core.tiles), so entities looked up again within the same smallest tile with
  unchanged tiles reuse the merge work. TTL and statuses are still resolved per request.

Keys hold the aggregator object, so a new registry version never reuses an old layout. Decoded
states and reads are shared: ``ViewAggregator.read`` and ``resolve`` never mutate them.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from feature_store.core.lookup import newest_event_ms
from feature_store.core.model import LIFETIME_GRANULARITY_MS
from feature_store.core.tiles import TileKey, TileState, ViewAggregator, ViewRead

__all__ = ["ReadCache"]

CachedRead = tuple[ViewRead, int | None]  # the read and the newest event time in the tiles


class ReadCache:
    def __init__(self, max_tiles: int = 100_000, max_reads: int = 20_000) -> None:
        self._max_tiles = max_tiles
        self._max_reads = max_reads
        self._tiles: OrderedDict[tuple[Any, int, bytes], TileState] = OrderedDict()
        self._reads: OrderedDict[tuple[Any, ...], CachedRead] = OrderedDict()
        self.tile_hits = self.tile_misses = self.read_hits = self.read_misses = 0

    def read(
        self,
        agg: ViewAggregator,
        granularities: frozenset[int],
        rows: list[tuple[TileKey, bytes]],
        t_ms: int,
    ) -> CachedRead:
        """``(agg.read(decoded tiles, t_ms), newest event time)`` for the rows read from the store."""
        key: tuple[Any, ...] | None = None
        if self._max_reads:
            starts = tuple(
                0 if g == LIFETIME_GRANULARITY_MS else t_ms - t_ms % g for g in agg.granularities_ms
            )
            key = (agg, starts, tuple(rows))
            hit = self._reads.get(key)
            if hit is not None:
                self._reads.move_to_end(key)
                self.read_hits += 1
                return hit
            self.read_misses += 1
        tiles: dict[TileKey, TileState] = {}
        for tile_key, payload in rows:
            g = tile_key[0]
            if g in granularities:  # granularities another registry version used are skipped
                tiles[tile_key] = self._decode(agg, g, payload)
        result = (agg.read(tiles, t_ms), newest_event_ms(tiles.values()))
        if key is not None:
            self._reads[key] = result
            if len(self._reads) > self._max_reads:
                self._reads.popitem(last=False)
        return result

    def _decode(self, agg: ViewAggregator, g: int, payload: bytes) -> TileState:
        if not self._max_tiles:
            return agg.decode(g, payload)
        key = (agg, g, payload)
        state = self._tiles.get(key)
        if state is not None:
            self._tiles.move_to_end(key)
            self.tile_hits += 1
            return state
        self.tile_misses += 1
        state = self._tiles[key] = agg.decode(g, payload)
        if len(self._tiles) > self._max_tiles:
            self._tiles.popitem(last=False)
        return state

    def clear(self) -> None:
        self._tiles.clear()
        self._reads.clear()

    def __len__(self) -> int:
        return len(self._tiles) + len(self._reads)
