"""Point-in-time values by replaying events through the core: the export's per-event path.

Pure Python over plain sequences (no pandas/pyarrow/DuckDB), so it is easy to test against a
brute-force recompute. For each entity, events (sorted by event time) and spine times (sorted)
are interleaved: before reading at ``t`` every event with ``event_time <= t`` and no later one
has been folded in with :meth:`ViewAggregator.update`, which is exactly the read contract of
:mod:`feature_store.core.tiles`. Statuses come from :func:`feature_store.core.lookup.resolve`.

Reading
    The replay reads with :meth:`ViewAggregator.read`, the server's very read, which visits only
    the tiles the entity holds.

Which tiles exist at ``t``
    :func:`feature_store.core.lookup.resolve` needs the newest event time over "the tiles found".
    The server passes every tile the store returns for the entity; the store keeps a tile of
    granularity ``g`` until ``tile_start + tile_retention_ms(g)`` (the job's CQL TTL: the longest
    window at ``g`` plus ``g``) and lifetime tiles forever. The export uses exactly that set
    (:func:`stored_newest`), holding only events ``<= t``: NOT_FOUND means that the store would
    hold no tile of the entity at ``t``. (The TTL is set in whole seconds from the write time, so
    the store may keep a tile up to a second longer: rows within that second of a tile's end can
    differ, and nothing offline can know the write times.)

The job's key rules and its dead letters are applied by the caller's event selection; the
source filter runs here with the core's predicate compiler, the job's very code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from feature_store.core.lookup import FieldStatus, newest_event_ms, resolve
from feature_store.core.model import LIFETIME_GRANULARITY_MS, FeatureView, Source
from feature_store.core.predicates import Predicate, compile_predicate, predicate_fields
from feature_store.core.tiles import (
    TileKey,
    TileState,
    ViewAggregator,
    ViewRead,
    tile_retention_ms,
    window_tile_count,
)
from feature_store.stream.tile_writer import view_fields

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
_PRUNE_AT = 24  # tiles per entity before tiles no later read can see are dropped


def tile_spans(view: FeatureView) -> dict[int, int]:
    """Per non-lifetime granularity ``g``: the longest window's tile count ``K`` at ``g``."""
    spans: dict[int, int] = {}
    for feature in view.features:
        for window in feature.windows:
            count = window_tile_count(window)
            if count is not None:
                spans[window.granularity_ms] = max(spans.get(window.granularity_ms, 0), count)
    return spans


def history_ms(view: FeatureView) -> int | None:
    """How far before ``t`` an event can still matter at ``t``, to a value or, through a tile the
    store still holds, to a status (None: forever)."""
    if any(w.is_lifetime for f in view.features for w in f.windows):
        return None
    return max((tile_retention_ms(g, view) or 0 for g in tile_spans(view)), default=0)


def stored_newest(view: FeatureView, tiles: Mapping[TileKey, TileState], t_ms: int) -> int | None:
    """The newest event time over the tiles the store still holds at ``t_ms`` (the definition):
    lifetime tiles, and tiles with ``start + tile_retention_ms(g) > t_ms``."""
    return newest_event_ms(
        st
        for (g, start), st in tiles.items()
        if g == LIFETIME_GRANULARITY_MS or start + (tile_retention_ms(g, view) or 0) > t_ms
    )


@dataclass(slots=True)
class ReplayOutput:
    """Per requested feature (in ``outputs`` order): one entry per spine row given."""

    values: list[list[Any]]
    statuses: list[list[int]]
    event_times: list[list[int]]


class ViewReplay:
    """Replays one view's events for sorted (entity, time) spine rows."""

    def __init__(self, view: FeatureView, source: Source, outputs: Sequence[int]) -> None:
        types = {f.name: f.type for f in source.fields}
        self.view = view
        self.aggregator = ViewAggregator(view, types)
        self.outputs = tuple(outputs)
        self.ttl_ms = view.ttl_ms
        self.filter: Predicate | None = compile_predicate(source.filter, types) if source.filter else None
        needed = set(view_fields(view, source))
        if source.filter:
            needed |= {f for f in predicate_fields(source.filter) if f in types}
        self.fields: tuple[str, ...] = tuple(sorted(needed))
        spans = tile_spans(view)
        # (granularity, K * g): the store holds a tile (g, s) at t iff s + K * g + g > t, that is
        # (s and c = floor(t / g) * g being multiples of g) iff s >= c - K * g
        self._ranges = tuple((g, spans[g] * g) for g in sorted(spans) if spans[g] > 0)
        self._empty_read = self.aggregator.read({}, 0)  # no tile: independent of t

    def _lows(self, cs: tuple[int, ...]) -> dict[int, int]:
        return {g: c - back for (g, back), c in zip(self._ranges, cs, strict=True)}

    def _newest(self, tiles: dict[TileKey, TileState], cs: tuple[int, ...]) -> int | None:
        """:func:`stored_newest` with the bounds precomputed per granularity."""
        low = self._lows(cs)
        return newest_event_ms(
            st for (g, s), st in tiles.items() if g == LIFETIME_GRANULARITY_MS or s >= low.get(g, s + 1)
        )

    def _prune(self, tiles: dict[TileKey, TileState], cs: tuple[int, ...]) -> None:
        """Drop tiles the store no longer holds at ``t`` (spine times only grow per entity)."""
        low = self._lows(cs)
        for key in [k for k in tiles if k[0] != LIFETIME_GRANULARITY_MS and k[1] < low.get(k[0], k[1] + 1)]:
            del tiles[key]

    def _read(self, tiles: dict[TileKey, TileState], t: int) -> ViewRead:
        return self.aggregator.read(tiles, t)

    def run(
        self,
        event_entity: Sequence[Any],
        event_time: Sequence[int],
        event_columns: Sequence[Sequence[Any]],
        spine_entity: Sequence[Any],
        spine_time: Sequence[int],
        *,
        raw: bool = False,
    ) -> ReplayOutput:
        """``event_columns`` are the values of :attr:`fields`, in that order. Events and spine rows
        must be sorted by (entity, time); entities are any sortable ids shared by both.

        ``raw``: the read's values and newest event times, without statuses (left 0) or TTL: for
        a caller that resolves the view's statuses itself (the vectorised path)."""
        n = len(spine_entity)
        k = len(self.outputs)
        values: list[list[Any]] = [[None] * n for _ in range(k)]
        statuses: list[list[int]] = [[0] * n for _ in range(k)]
        times: list[list[int]] = [[0] * n for _ in range(k)]
        update = self.aggregator.update
        fields, ttl, keep, outputs = self.fields, self.ttl_ms, self.filter, self.outputs
        grans = tuple(g for g, _ in self._ranges)
        n_events = len(event_entity)
        i = 0
        current: Any = None
        tiles: dict[TileKey, TileState] = {}
        cached: tuple[ViewRead, int | None] | None = None
        cached_cs: tuple[int, ...] | None = None
        for j in range(n):
            entity, t = spine_entity[j], spine_time[j]
            if j == 0 or entity != current:
                current, tiles, cached, cached_cs = entity, {}, None, None
                while i < n_events and event_entity[i] < entity:
                    i += 1
            changed = False
            while i < n_events and event_entity[i] == entity and event_time[i] <= t:
                event = {f: col[i] for f, col in zip(fields, event_columns, strict=True)}
                if keep is None or keep(event):
                    update(tiles, event, event_time[i])
                    changed = True
                i += 1
            cs = tuple(t - t % g for g in grans)
            if changed or cs != cached_cs or cached is None:
                # the read depends on t only through each granularity's current tile start
                if cs != cached_cs and len(tiles) > _PRUNE_AT:
                    self._prune(tiles, cs)
                newest = self._newest(tiles, cs) if tiles else None
                cached = (self._read(tiles, t) if newest is not None else self._empty_read, newest)
                cached_cs = cs
            the_read, newest = cached
            if raw:
                for out, index in enumerate(outputs):
                    values[out][j] = the_read.values[index]
                    times[out][j] = the_read.last_event_ms[index] or 0
                continue
            resolved = resolve(the_read, newest, ttl, t)
            for out, index in enumerate(outputs):
                values[out][j] = resolved.values[index]
                statuses[out][j] = resolved.statuses[index]
                times[out][j] = resolved.event_times_ms[index]
        return ReplayOutput(values, statuses, times)


def clamp_int64(values: list[Any], statuses: list[int]) -> None:
    """Integers outside int64 cannot be served (the API is int64): ERROR and no value, in place."""
    for j, v in enumerate(values):
        if isinstance(v, int) and not INT64_MIN <= v <= INT64_MAX:
            values[j] = None
            statuses[j] = FieldStatus.ERROR


def brute_force(
    view: FeatureView,
    source: Source,
    events: Iterable[tuple[Mapping[str, Any], int]],
    t_ms: int,
) -> list[tuple[Any, int]]:
    """(value, status) of every served feature at ``t_ms`` from all events ``<= t_ms``: the
    definition the export is tested against (fold every event, read once, resolve)."""
    types = {f.name: f.type for f in source.fields}
    aggregator = ViewAggregator(view, types)
    keep = compile_predicate(source.filter, types) if source.filter else None
    tiles: dict[TileKey, TileState] = {}
    for event, et in events:
        if et <= t_ms and (keep is None or keep(event)):
            aggregator.update(tiles, event, et)
    newest = stored_newest(view, tiles, t_ms)
    resolved = resolve(aggregator.read(tiles, t_ms), newest, view.ttl_ms, t_ms)
    return list(zip(resolved.values, [int(s) for s in resolved.statuses], strict=True))
