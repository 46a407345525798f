"""Time tiles and window reads: the one place that decides which events a window contains.

Tiles
    Events are pre-aggregated per entity into tiles keyed ``(granularity_ms, tile_start_ms)``
    with ``tile_start = floor(event_time / granularity) * granularity``. Lifetime aggregates use
    a single tile keyed ``(0, 0)`` (``LIFETIME_GRANULARITY_MS``). A tile holds one IR per *slot*,
    a slot being one distinct feature definition (aggregation, input field, ``where``, N) at that
    granularity; features that only differ by name share a slot.

Window rule
    A window of length ``W`` and granularity ``g`` read at time ``t`` (ms) is exact at the
    declared granularity. With ``c = floor(t / g) * g`` (the start of the current tile), it
    contains the events of the tiles whose start ``s`` satisfies::

        c - W + g <= s <= c        (W / g tiles when g divides W)

    restricted to events with ``event_time <= t``. So the window covers ``[c - W + g, t]``: it
    slides one tile at a time, and a 1h count falls back to 0 two hours after a user goes
    quiet, without any new event. A lifetime window contains every event with
    ``event_time <= t``.

Read contract
    :meth:`ViewAggregator.read` takes the tiles and ``t`` and does not look at raw events: tiles
    strictly before the current one are complete by construction, and tiles after it are never
    read, but the caller must make sure that the *current* tile of each granularity and the
    lifetime tile only contain events with ``event_time <= t``. The server reading at "now"
    satisfies this (modulo producer clock skew, which ``last_event_ms > t`` reveals); the offline
    export satisfies it by replaying each entity's events in event-time order and reading at each
    request time ``t`` once every event ``<= t``, and no later event, has been added.

Tile expiry
    A tile of granularity ``g`` is last read when ``t`` reaches ``s + W - 1`` for the longest
    window ``W`` at that granularity, so storing it for ``W + g`` after it was written (written
    no earlier than ``s``) is always enough: :func:`tile_retention_ms`. Lifetime tiles never
    expire.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any, Final, NamedTuple

from feature_store.core import codec
from feature_store.core.aggregators import Aggregator, feature_aggregator
from feature_store.core.model import LIFETIME_GRANULARITY_MS, Feature, FeatureView, ValueType, Window
from feature_store.core.predicates import Predicate, canonical_predicate, compile_predicate

__all__ = [
    "NO_EVENT",
    "Definition",
    "TileKey",
    "TileState",
    "ViewAggregator",
    "ViewRead",
    "served_windows",
    "slot_id",
    "tile_retention_ms",
    "tile_start",
    "window_tile_count",
    "window_tile_starts",
]

TileKey = tuple[int, int]  # (granularity_ms, tile_start_ms); (0, 0) for lifetime
NO_EVENT: Final = -(1 << 63)  # last_ms of a slot no event has reached


def tile_start(event_time_ms: int, granularity_ms: int) -> int:
    """Floor of ``event_time_ms`` to its tile (also for negative times); 0 for lifetime."""
    if granularity_ms == LIFETIME_GRANULARITY_MS:
        return 0
    return event_time_ms - event_time_ms % granularity_ms


def window_tile_count(window: Window) -> int | None:
    """How many tiles a window spans (``None`` for lifetime): the ``k >= 0`` with ``k*g <= W - g``."""
    if window.length_ms is None:
        return None
    g = window.granularity_ms
    return max(0, (window.length_ms - g) // g + 1)


def window_tile_starts(window: Window, t_ms: int) -> range:
    """The tile starts the window read at ``t_ms`` includes, newest first (lifetime: ``[0]``)."""
    count = window_tile_count(window)
    if count is None:
        return range(1)
    g = window.granularity_ms
    current = t_ms - t_ms % g
    return range(current, current - count * g, -g)


def tile_retention_ms(granularity_ms: int, view: FeatureView) -> int | None:
    """How long a stored tile of this granularity stays useful: longest window + ``g``."""
    if granularity_ms == LIFETIME_GRANULARITY_MS:
        return None
    lengths = [
        w.length_ms
        for f in view.features
        for w in f.windows
        if w.length_ms is not None and w.granularity_ms == granularity_ms
    ]
    if not lengths:
        raise ValueError(f"view {view.name!r} has no window with granularity {granularity_ms} ms")
    return max(lengths) + granularity_ms


def _granularity(window: Window) -> int:
    return LIFETIME_GRANULARITY_MS if window.is_lifetime else window.granularity_ms


def _definition_key(feature: Feature) -> str:
    where = canonical_predicate(feature.where) if feature.where else ""
    parts = (
        feature.aggregation.value,
        feature.input_field or "",
        feature.input_type.value if feature.input_type else "",
        where,
        "" if feature.last_n is None else str(feature.last_n),
    )
    return "\x1f".join(parts)


def slot_id(feature: Feature, granularity_ms: int) -> int:
    """A stable 32-bit id for a feature's slot, stored with each IR in encoded tiles.

    It covers everything that shapes the IR (aggregation, input field and type, canonical
    ``where``, N) but not the feature's name, so a registry change that adds, removes or
    reorders features keeps every other slot's data, a renamed feature keeps its data, and a
    redefined one starts empty instead of misreading old IRs.
    """
    key = f"{_definition_key(feature)}\x1f{granularity_ms}"
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=4).digest(), "big")


class TileState:
    """The mutable aggregate state of one tile: one IR per slot and the newest event time in it.

    ``last_ms[i]`` is ``NO_EVENT`` exactly when no event has reached slot ``i`` (its IR is
    then the empty IR).
    """

    __slots__ = ("irs", "last_ms")

    def __init__(self, irs: list[Any], last_ms: list[int]) -> None:
        self.irs = irs
        self.last_ms = last_ms

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TileState):
            return NotImplemented
        return self.irs == other.irs and self.last_ms == other.last_ms

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"TileState(irs={self.irs!r}, last_ms={self.last_ms!r})"


class ViewRead(NamedTuple):
    """Values of every served feature of a view, in ``served_names`` order.

    ``last_event_ms[i]`` is the newest event time that contributed to ``values[i]`` (``None``
    when no event did), for the caller's TTL / OUTSIDE_MAX_AGE decision.
    """

    values: list[Any]
    last_event_ms: list[int | None]


class Definition(NamedTuple):
    """One distinct feature definition of a view: what it reads and which slots it feeds.

    ``targets`` are ``(granularity index, slot index)`` pairs, the granularity index into
    :attr:`ViewAggregator.granularities_ms`.
    """

    predicate: Predicate | None
    field: str | None
    aggregator: Aggregator[Any]
    targets: tuple[tuple[int, int], ...]
    where: str | None = None  # the predicate's text


class _Layout:
    """The slots of one granularity."""

    __slots__ = ("aggregators", "granularity_ms", "index_of", "slot_ids")

    def __init__(self, granularity_ms: int) -> None:
        self.granularity_ms = granularity_ms
        self.aggregators: list[Aggregator[Any]] = []
        self.slot_ids: list[int] = []
        self.index_of: dict[int, int] = {}


class ViewAggregator:
    """Compiled once per FeatureView: folds events into tiles and reads windows from them.

    ``field_types`` are the source's field types, used to type-check ``where`` predicates. The
    source-level filter is the caller's job (it is shared by every view of the source). A
    ``tiles`` mapping holds the tiles of *one* entity.
    """

    __slots__ = (
        "_defs",
        "_granularities",
        "_layouts",
        "_n_out",
        "_plans",
        "_tile_counts",
        "definitions",
        "served_names",
        "value_types",
        "view",
    )

    def __init__(self, view: FeatureView, field_types: Mapping[str, ValueType]) -> None:
        self.view = view
        self._granularities: tuple[int, ...] = view.granularities_ms
        gindex = {g: i for i, g in enumerate(self._granularities)}
        self._layouts = [_Layout(g) for g in self._granularities]
        keys_by_id: dict[tuple[int, int], str] = {}
        predicates: dict[str, Predicate] = {}
        # definition key -> (predicate, field, aggregator, targets, where)
        defs: dict[
            str, tuple[Predicate | None, str | None, Aggregator[Any], list[tuple[int, int]], str | None]
        ] = {}
        # (granularity index, slot index) -> [(tile count or -1 for lifetime, output index)]
        steps: dict[tuple[int, int], list[tuple[int, int]]] = {}
        served: list[str] = []
        types: list[ValueType] = []
        max_tiles = [0] * len(self._granularities)
        for feature in view.features:
            dkey = _definition_key(feature)
            if dkey not in defs:
                predicate = None
                if feature.where:
                    predicate = predicates.get(feature.where)
                    if predicate is None:
                        predicate = predicates[feature.where] = compile_predicate(feature.where, field_types)
                defs[dkey] = (predicate, feature.input_field, feature_aggregator(feature), [], feature.where)
            _, _, aggregator, targets, _ = defs[dkey]
            for window in feature.windows:
                g = _granularity(window)
                gi = gindex[g]
                layout = self._layouts[gi]
                sid = slot_id(feature, g)
                seen = keys_by_id.setdefault((g, sid), dkey)
                if seen != dkey:  # two different definitions hashed to the same 32 bits
                    raise ValueError(
                        f"slot id collision in view {view.name!r} (32-bit hash); change a where text"
                    )
                si = layout.index_of.get(sid)
                if si is None:
                    si = layout.index_of[sid] = len(layout.slot_ids)
                    layout.slot_ids.append(sid)
                    layout.aggregators.append(aggregator)
                    targets.append((gi, si))
                count = window_tile_count(window)
                if count is not None:
                    max_tiles[gi] = max(max_tiles[gi], count)
                steps.setdefault((gi, si), []).append((-1 if count is None else count, len(served)))
                served.append(feature.served_name(window))
                types.append(feature.value_type)
        self.definitions: tuple[Definition, ...] = tuple(
            Definition(p, f, a, tuple(t), w) for p, f, a, t, w in defs.values()
        )
        # the per-event view of the same: ``add`` bound once
        self._defs = tuple((d.predicate, d.field, d.aggregator.add, d.targets) for d in self.definitions)
        self._plans = tuple(
            (self._granularities[gi], si, self._layouts[gi].aggregators[si], tuple(sorted(st)))
            for (gi, si), st in steps.items()
        )
        self._tile_counts = tuple(
            1 if g == LIFETIME_GRANULARITY_MS else max_tiles[i] for i, g in enumerate(self._granularities)
        )
        self._n_out = len(served)
        self.served_names: tuple[str, ...] = tuple(served)
        self.value_types: tuple[ValueType, ...] = tuple(types)

    @property
    def granularities_ms(self) -> tuple[int, ...]:
        return self._granularities

    def slot_ids(self, granularity_ms: int) -> tuple[int, ...]:
        return tuple(self._layout(granularity_ms).slot_ids)

    def _layout(self, granularity_ms: int) -> _Layout:
        for layout in self._layouts:
            if layout.granularity_ms == granularity_ms:
                return layout
        raise KeyError(f"view {self.view.name!r} has no tiles of granularity {granularity_ms} ms")

    def new_tile(self, granularity_ms: int) -> TileState:
        aggs = self._layout(granularity_ms).aggregators
        return TileState([a.init() for a in aggs], [NO_EVENT] * len(aggs))

    # --- write path --------------------------------------------------------------------------

    def update(
        self, tiles: MutableMapping[TileKey, TileState], event: Mapping[str, object], event_time_ms: int
    ) -> list[TileKey]:
        """Fold one event into ``tiles`` (created on demand); return the keys of changed tiles.

        Each feature's ``where`` is evaluated once per event, whatever its number of windows; null
        inputs are skipped, and a tile no feature accepted the event for is not touched.
        """
        granularities = self._granularities
        states: list[TileState | None] = [None] * len(granularities)
        touched: list[TileKey] = []
        for predicate, field, add, targets in self._defs:
            if predicate is not None and not predicate(event):
                continue
            if field is None:
                value: object = None
            else:
                value = event.get(field)
                if value is None:
                    continue
            for gi, si in targets:
                state = states[gi]
                if state is None:
                    g = granularities[gi]
                    key = (g, event_time_ms - event_time_ms % g) if g else (0, 0)
                    state = tiles.get(key)
                    if state is None:
                        state = tiles[key] = self.new_tile(g)
                    states[gi] = state
                    touched.append(key)
                state.irs[si] = add(state.irs[si], value, event_time_ms)
                if event_time_ms > state.last_ms[si]:  # noqa: PLR1730 -- per-event path
                    state.last_ms[si] = event_time_ms
        return touched

    def merge_tiles(self, granularity_ms: int, a: TileState, b: TileState) -> TileState:
        """A new tile holding both tiles' events (for pre-aggregation and parallel backfills)."""
        aggs = self._layout(granularity_ms).aggregators
        return TileState(
            [agg.merge(x, y) for agg, x, y in zip(aggs, a.irs, b.irs, strict=True)],
            [max(x, y) for x, y in zip(a.last_ms, b.last_ms, strict=True)],
        )

    # --- read path ---------------------------------------------------------------------------

    def tile_keys(self, t_ms: int) -> list[TileKey]:
        """Every tile key a read at ``t_ms`` may look at (what to fetch from the store)."""
        keys: list[TileKey] = []
        for g, count in zip(self._granularities, self._tile_counts, strict=True):
            if g == LIFETIME_GRANULARITY_MS:
                keys.append((0, 0))
            else:
                current = t_ms - t_ms % g
                keys.extend((g, current - k * g) for k in range(count))
        return keys

    def read(self, tiles: Mapping[TileKey, TileState], t_ms: int) -> ViewRead:
        """Finalized values of every served feature at ``t_ms`` (see the module's read contract).

        Windows of one slot nest (1h within 1d within 7d at the same granularity), so each slot
        walks the tiles present, newest first, finalizing as each window's oldest tile start is
        passed. Only tiles that exist are visited (a 7d window of 1h tiles is 168 possible
        tiles, of which a store typically holds a few), never the empty positions between them.
        """
        values: list[Any] = [None] * self._n_out
        last_event: list[int | None] = [None] * self._n_out
        present = _newest_first(tiles, t_ms)
        for g, si, agg, steps in self._plans:
            acc: Any = None
            newest = NO_EVENT
            if g == LIFETIME_GRANULARITY_MS:
                state = tiles.get((0, 0))
                if state is not None and state.last_ms[si] != NO_EVENT:
                    acc, newest = state.irs[si], state.last_ms[si]
                for _, out in steps:
                    values[out] = agg.finalize(agg.init() if newest == NO_EVENT else acc)
                    last_event[out] = None if newest == NO_EVENT else newest
                continue
            current = t_ms - t_ms % g
            entries = present.get(g, _NO_TILES)
            i, n = 0, len(entries)
            for count, out in steps:
                oldest = current - (count - 1) * g  # the window's tiles: oldest <= start <= current
                while i < n and entries[i][0] >= oldest:
                    state = entries[i][1]
                    i += 1
                    tile_last = state.last_ms[si]
                    if tile_last == NO_EVENT:
                        continue
                    # merge is pure and finalize does not mutate, so stored IRs can be used as is
                    acc = state.irs[si] if newest == NO_EVENT else agg.merge(acc, state.irs[si])
                    newest = max(newest, tile_last)
                if newest == NO_EVENT:
                    values[out] = agg.finalize(agg.init())
                else:
                    values[out] = agg.finalize(acc)
                    last_event[out] = newest
        return ViewRead(values, last_event)

    # --- storage -----------------------------------------------------------------------------

    def encode(self, granularity_ms: int, state: TileState) -> bytes:
        """Bytes for the store; empty slots are omitted, so equal tiles give equal bytes."""
        layout = self._layout(granularity_ms)
        return codec.encode_tile(
            (sid, last, ir)
            for sid, last, ir in zip(layout.slot_ids, state.last_ms, state.irs, strict=True)
            if last != NO_EVENT
        )

    def decode(self, granularity_ms: int, data: bytes) -> TileState:
        """Inverse of :meth:`encode`. Entries whose slot id this registry version does not define
        (a feature removed or redefined since the tile was written) are dropped; slots the tile
        lacks start empty.
        """
        layout = self._layout(granularity_ms)
        state = self.new_tile(granularity_ms)
        for sid, last, ir in codec.decode_tile(data):
            si = layout.index_of.get(sid)
            if si is not None:
                state.irs[si] = ir
                state.last_ms[si] = last
        return state


_NO_TILES: Final[list[tuple[int, TileState]]] = []


def _tile_start(entry: tuple[int, TileState]) -> int:
    return entry[0]


def _newest_first(tiles: Mapping[TileKey, TileState], t_ms: int) -> dict[int, list[tuple[int, TileState]]]:
    """(tile start, tile) per granularity, newest first, without lifetime tiles and tiles after
    the current one at ``t_ms`` (they hold events later than ``t``)."""
    present: dict[int, list[tuple[int, TileState]]] = {}
    for (g, start), tile in tiles.items():
        if g != LIFETIME_GRANULARITY_MS and start <= t_ms - t_ms % g:
            present.setdefault(g, []).append((start, tile))
    for entries in present.values():
        if len(entries) > 1:
            entries.sort(key=_tile_start, reverse=True)
    return present


def served_windows(view: FeatureView) -> Sequence[tuple[Feature, Window]]:
    """``(feature, window)`` per served feature, in ``ViewAggregator.served_names`` order."""
    return [(f, w) for f in view.features for w in f.windows]
