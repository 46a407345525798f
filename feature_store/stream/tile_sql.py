"""Tiles merged in the JVM: the feature views whose tiles Flink SQL can merge exactly.

The Python keyed operator that folds every event into keyed MapState is the job's bottleneck
(a state put and a timer per event, see docs/benchmarks.md). For views whose every slot has an
IR the JVM merges exactly (integers, distinct-count sketches), the per-event work splits instead:

* **Python, per event, stateless** (in the router): evaluate each definition's ``where`` and
  fold the event into a *one-event IR* with the core aggregator itself
  (``aggregator.add(aggregator.init(), value, t)``), emitted as BIGINT columns.
* **JVM, Flink SQL mini-batch GROUP BY (view, entity, granularity, tile start)**: merge the
  one-event IRs with the SQL aggregate that *is* the core ``merge`` for that IR (``SUM`` of
  counts and integer sums, ``MIN``/``MAX`` of integers, both for ``avg``'s ``(sum, count)``;
  for ``count_distinct`` the one-event sketch's single sparse entry, merged by jobs/jvm
  ``HllSketch``, the core sketch's merge and bytes), plus ``COUNT(*)`` as the tile's version
  and ``MAX(t)`` per slot as its newest event. Its state is checkpointed, so each update is the
  tile's absolute value.
* **JVM, per changed tile**: jobs/jvm ``TileEncoder`` writes the core codec's bytes for the
  tile (:meth:`SourceTilesSql.encode` is the Python reference, and tests hold the two
  byte-identical) and ``CqlTileSink`` writes it with ``USING TIMESTAMP`` (tile start, version)
  and ``USING TTL``, waiting for its writes before a checkpoint completes.

Views with a lifetime window (SQL state expires with the tiles' retention), or with float,
string, ``last`` or ``last_n`` slots, keep the Python keyed path.

Nothing here imports PyFlink: the per-event and per-tile steps are unit-tested against
:meth:`ViewAggregator.update` and ``encode``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from feature_store.adapters.cql_online_store import insert_cql
from feature_store.core.model import (
    LIFETIME_GRANULARITY_MS,
    AggregationKind,
    FeatureView,
    Registry,
    ValueType,
)
from feature_store.core.sketch import DEFAULT_PRECISION, HyperLogLog
from feature_store.core.tiles import NO_EVENT, Definition, TileState, ViewAggregator
from feature_store.stream.tile_writer import Routed, ViewTiles, split_key, write_timestamp_us

# the one-event IR's parts (BIGINT columns) and the SQL aggregate merging each part exactly
_SUM_EXACT: Final = "SUM(CAST({c} AS DECIMAL(38, 0)))"  # the core's int sums are unbounded
_PARTS: Final[dict[tuple[AggregationKind, ValueType | None], tuple[str, ...]]] = {
    (AggregationKind.SUM, ValueType.INT64): (_SUM_EXACT,),
    (AggregationKind.MIN, ValueType.INT64): ("MIN({c})",),
    (AggregationKind.MAX, ValueType.INT64): ("MAX({c})",),
    (AggregationKind.AVG, ValueType.INT64): (_SUM_EXACT, "SUM({c})"),
}
_COUNT_PARTS: Final = ("SUM({c})",)  # count of events or of non-null values: an int IR
# count_distinct: the one-event sketch's single sparse entry, merged by jobs/jvm HllSketch
_SKETCH: Final = "fstore_hll({c})"


def _parts(definition: Definition) -> tuple[str, ...] | None:
    agg = definition.aggregator
    if agg.kind is AggregationKind.COUNT:
        return _COUNT_PARTS
    if agg.kind is AggregationKind.COUNT_DISTINCT:
        # HllSketch is built for the default precision only
        return (_SKETCH,) if agg.init().p == DEFAULT_PRECISION else None
    return _PARTS.get((agg.kind, agg.input_type))


def sql_ineligible(view: FeatureView, aggregator: ViewAggregator) -> str | None:
    """Why the view's tiles cannot be merged in SQL, or ``None`` when they can."""
    if LIFETIME_GRANULARITY_MS in view.granularities_ms:
        return "it has a lifetime window"
    for d in aggregator.definitions:
        if _parts(d) is None:
            kind = d.aggregator.kind.value
            typed = f" of {d.aggregator.input_type.value}" if d.aggregator.input_type else ""
            return f"its {kind}{typed} IR is not an integer SQL can merge"
    return None


@dataclass(frozen=True, slots=True)
class _Def:
    definition: Definition
    first_column: int  # index of its first part among the part columns
    parts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _View:
    index: int  # the view's index among the source's views (the router's key prefix)
    tiles: ViewTiles
    defs: tuple[_Def, ...]
    insert: str  # the CQL the sink prepares


class SourceTilesSql:
    """The SQL-merged views of one source: the router's rows, the SQL, and the tile encoder."""

    ROUTED_FIXED: Final = ("vi", "entity", "t")
    TILE_FIXED: Final = ("vi", "entity", "g", "tile_start", "version")

    def __init__(
        self, registry: Registry, source_name: str, keyspace: str, view_indices: Sequence[int]
    ) -> None:
        source = registry.source(source_name)
        views = [v for v in registry.views if v.source == source_name]
        self._views: dict[int, _View] = {}
        column = 0
        for index in view_indices:
            tiles = ViewTiles(views[index], source)
            defs = []
            for d in tiles.aggregator.definitions:
                parts = _parts(d)
                if parts is None:
                    raise ValueError(
                        f"view {views[index].name!r}: {sql_ineligible(views[index], tiles.aggregator)}"
                    )
                defs.append(_Def(d, column, parts))
                column += len(parts)
            self._views[index] = _View(index, tiles, tuple(defs), insert_cql(keyspace, views[index]))
        self.part_count = column
        # where each definition's newest event time sits in a query row
        lasts = len(self.TILE_FIXED) + column
        self._last_at = {d.first_column: lasts + n for n, d in enumerate(self._all_defs)}

    @property
    def view_indices(self) -> tuple[int, ...]:
        return tuple(self._views)

    @property
    def routed_columns(self) -> tuple[str, ...]:
        """Names of :meth:`route`'s row (types: INT, STRING, BIGINT, then BIGINT parts)."""
        return (*self.ROUTED_FIXED, *(f"p{k}" for k in range(self.part_count)))

    @property
    def retention_ms(self) -> int:
        """How long a tile's SQL state must live: the longest tile retention of these views."""
        return max(r for v in self._views.values() for r in v.tiles.retention_ms.values() if r is not None)

    # --- per event (Python, stateless) ------------------------------------------------------

    def route(self, routed: Routed) -> list[Any] | None:
        """The event's one-event IRs as a row, or ``None`` when no definition accepts it."""
        index, entity = split_key(routed.key)
        view = self._views[index]
        t = routed.event_time_ms
        fields = routed.fields
        row: list[Any] = [None] * (3 + self.part_count)
        accepted = False
        for d in view.defs:
            predicate, field, agg, _ = d.definition
            if predicate is not None and not predicate(fields):
                continue
            value = None
            if field is not None:
                value = fields.get(field)
                if value is None:
                    continue
            ir = agg.add(agg.init(), value, t)
            if d.parts[0] == _SKETCH:
                row[3 + d.first_column] = ir.packed_entries()[0]
            elif len(d.parts) == 1:
                row[3 + d.first_column] = ir
            else:
                row[3 + d.first_column : 3 + d.first_column + len(d.parts)] = ir
            accepted = True
        if not accepted:
            return None
        row[0], row[1], row[2] = index, entity, t
        return row

    # --- the JVM merge --------------------------------------------------------------------------

    def sql(self, routed_table: str) -> str:
        """The query merging ``routed_table`` (rows of :meth:`route`) into absolute tiles."""
        by_g: dict[int, list[tuple[_View, _Def]]] = {}
        for view in self._views.values():
            grans = view.tiles.aggregator.granularities_ms
            for d in view.defs:
                for gi, _ in d.definition.targets:
                    entries = by_g.setdefault(grans[gi], [])
                    if (view, d) not in entries:
                        entries.append((view, d))
        parts = [f"p{k}" for k in range(self.part_count)]
        selects = []
        for g, entries in sorted(by_g.items()):
            live = {d.first_column + i for _, d in entries for i in range(len(d.parts))}
            columns = ", ".join(
                p if k in live else f"CAST(NULL AS BIGINT) AS {p}" for k, p in enumerate(parts)
            )
            accepted = " OR ".join(f"p{d.first_column} IS NOT NULL" for _, d in entries)
            views = ", ".join(str(i) for i in sorted({v.index for v, _ in entries}))
            # floor to the tile like the core's tile_start (t - t % g, also below zero); every
            # name and number here comes from the registry's compiled views, never from events
            start = f"t - MOD(MOD(t, {g}) + {g}, {g})"
            selects.append(
                f"SELECT vi, entity, CAST({g} AS BIGINT) AS g, {start} AS tile_start, t, {columns} "  # noqa: S608
                f"FROM {routed_table} WHERE vi IN ({views}) AND ({accepted})"
            )
        aggregates = []
        lasts = []
        for view in self._views.values():
            for d in view.defs:
                for i, template in enumerate(d.parts):
                    aggregates.append(
                        template.format(c=f"p{d.first_column + i}") + f" AS a{d.first_column + i}"
                    )
                lasts.append(f"MAX(CASE WHEN p{d.first_column} IS NOT NULL THEN t END) AS l{d.first_column}")
        union = "\nUNION ALL\n".join(selects)
        return (
            "SELECT vi, entity, g, tile_start, COUNT(*) AS version, "
            + ", ".join([*aggregates, *lasts])
            + f"\nFROM (\n{union}\n)\nGROUP BY vi, entity, g, tile_start"
        )

    @property
    def exact_sum_columns(self) -> frozenset[str]:
        """The query's columns holding integer sums as DECIMAL(38, 0) (all others are BIGINT)."""
        return frozenset(
            f"a{d.first_column + i}"
            for d in self._all_defs
            for i, template in enumerate(d.parts)
            if template == _SUM_EXACT
        )

    @property
    def sketch_columns(self) -> frozenset[str]:
        """The query's columns holding count_distinct sketches (BYTES, HyperLogLog.to_bytes)."""
        return frozenset(f"a{d.first_column}" for d in self._all_defs if d.parts[0] == _SKETCH)

    @property
    def tile_columns(self) -> tuple[str, ...]:
        """Names of the query's rows, in order."""
        aggregates = [f"a{k}" for k in range(self.part_count)]
        lasts = [f"l{d.first_column}" for v in self._views.values() for d in v.defs]
        return (*self.TILE_FIXED, *aggregates, *lasts)

    # --- per changed tile (Python, stateless) --------------------------------------------------

    def tile_state(self, row: Sequence[Any]) -> tuple[_View, int, int, TileState]:
        """The query row as (view, granularity, tile start, tile state)."""
        view = self._views[row[0]]
        g, start = row[2], row[3]
        agg = view.tiles.aggregator
        gi = agg.granularities_ms.index(g)
        state = agg.new_tile(g)
        for d in view.defs:
            last = row[self._last_at[d.first_column]]
            if last is None:
                continue
            ir: Any
            if d.parts[0] == _SKETCH:
                ir = HyperLogLog.from_bytes(row[5 + d.first_column])
            else:
                values = [_int(row[5 + d.first_column + i]) for i in range(len(d.parts))]
                ir = values[0] if len(values) == 1 else tuple(values)
            for tgi, si in d.definition.targets:
                if tgi == gi:
                    state.irs[si] = ir
                    state.last_ms[si] = last
        return view, g, start, state

    def encode(self, row: Sequence[Any], now_ms: int) -> tuple[Any, ...]:
        """The sink's row for a query row: (insert CQL, entity key, view, g, start, payload,
        TTL s, write timestamp µs)."""
        view, g, start, state = self.tile_state(row)
        tile = (g, start)
        payload = view.tiles.aggregator.encode(g, state)
        return (
            view.insert,
            str(row[1]).encode(),
            view.tiles.view.name,
            g,
            start,
            payload,
            view.tiles.ttl_seconds(tile, now_ms),
            write_timestamp_us(tile, row[4]),
        )

    # --- per changed tile (JVM): the rows the sink writes ------------------------------------

    def _slots(self, view: _View, g: int) -> list[tuple[str, int, _Def]]:
        """(kind, slot id, definition) of the tile's slots in the layout's order: ``i`` one
        int IR, ``t`` avg's (sum, count), ``h`` a sketch."""
        agg = view.tiles.aggregator
        gi = agg.granularities_ms.index(g)
        feeding = {si: d for d in view.defs for tgi, si in d.definition.targets if tgi == gi}
        return [(_kind(feeding[si]), sid, feeding[si]) for si, sid in enumerate(agg.slot_ids(g))]

    def encoder_input(
        self, row: Sequence[Any]
    ) -> tuple[str, list[int], list[Any], list[Any], list[Any], list[Any]]:
        """What the JVM encoder (``fstore_tile``) gets for a query row: kinds, slot ids, newest
        event times, first and second int IR parts and sketches (``None`` where absent)."""
        view = self._views[row[0]]
        slots = self._slots(view, row[2])
        kinds = "".join(k for k, _, _ in slots)
        lasts = [row[self._last_at[d.first_column]] for _, _, d in slots]
        firsts = [row[5 + d.first_column] if k != "h" else None for k, _, d in slots]
        seconds = [row[6 + d.first_column] if k == "t" else None for k, _, d in slots]
        sketches = [row[5 + d.first_column] if k == "h" else None for k, _, d in slots]
        return kinds, [sid for _, sid, _ in slots], lasts, firsts, seconds, sketches

    def write_sql(self, routed_table: str, encoder: str = "fstore_tile") -> str:
        """The query whose rows the JVM sink writes: (insert CQL, entity key, view, g, tile
        start, payload, expiry ms, write timestamp µs), the payload encoded by ``encoder``
        (jobs/jvm TileEncoder, byte for byte :meth:`encode`'s)."""
        cql = " ".join(f"WHEN {v.index} THEN {_text(v.insert)}" for v in self._views.values())
        names = " ".join(f"WHEN {v.index} THEN {_text(v.tiles.view.name)}" for v in self._views.values())
        payloads, expiries = [], []
        for view in self._views.values():
            for g in view.tiles.aggregator.granularities_ms:
                slots = self._slots(view, g)
                kinds = "".join(k for k, _, _ in slots)
                sids = ", ".join(f"CAST({sid} AS BIGINT)" for _, sid, _ in slots)
                lasts = ", ".join(f"l{d.first_column}" for _, _, d in slots)
                firsts = ", ".join(
                    f"CAST(a{d.first_column} AS DECIMAL(38, 0))"
                    if k != "h"
                    else "CAST(NULL AS DECIMAL(38, 0))"
                    for k, _, d in slots
                )
                seconds = ", ".join(
                    f"CAST(a{d.first_column + 1} AS BIGINT)" if k == "t" else "CAST(NULL AS BIGINT)"
                    for k, _, d in slots
                )
                sketches = ", ".join(
                    f"a{d.first_column}" if k == "h" else "CAST(NULL AS BYTES)" for k, _, d in slots
                )
                when = f"WHEN vi = {view.index} AND g = {g}"
                payloads.append(
                    f"{when} THEN {encoder}('{kinds}', ARRAY[{sids}], ARRAY[{lasts}], ARRAY[{firsts}], "
                    f"ARRAY[{seconds}], ARRAY[{sketches}])"
                )
                expiries.append(f"{when} THEN CAST({view.tiles.retention_ms[g]} AS BIGINT)")
        return (
            f"SELECT CASE vi {cql} END AS insert_cql, ENCODE(entity, 'UTF-8') AS entity_key, "
            f"CASE vi {names} END AS feature_view, g AS granularity_ms, tile_start AS tile_start_ms, "
            f"CASE {' '.join(payloads)} END AS payload, "
            f"tile_start + CASE {' '.join(expiries)} END AS expires_ms, "
            "tile_start * 1000 + version AS timestamp_us\n"
            f"FROM (\n{self.sql(routed_table)}\n)"
        )

    @property
    def _all_defs(self) -> list[_Def]:  # in the query's column order
        return [d for v in self._views.values() for d in v.defs]


def _kind(d: _Def) -> str:
    if d.parts[0] == _SKETCH:
        return "h"
    return "t" if len(d.parts) == 2 else "i"


def _text(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def _int(value: Any) -> int:
    if isinstance(value, Decimal):
        return int(value)
    return int(value) if value is not None else 0


__all__ = ["NO_EVENT", "SourceTilesSql", "sql_ineligible"]
