"""Tiles merged in the JVM: the feature views whose tiles Flink SQL can merge exactly.

The Python keyed operator that folds every event into keyed MapState is the job's bottleneck
(a state put and a timer per event, see docs/benchmarks.md). For views whose every slot has an
IR the JVM merges exactly (counts; int64 sums, min, max, avg; count_distinct; last; last_n; any
window, lifetime included), the per-event work splits instead:

* **Python, per event, stateless** (in the router): evaluate each definition's ``where`` and
  fold the event into a *one-event IR* with the core aggregator itself
  (``aggregator.add(aggregator.init(), value, t)``), emitted as BIGINT / BYTES columns.
* **JVM, jobs/jvm TileMerger** (the default; :meth:`SourceTilesSql.merge_plan` is its plan): a
  keyed operator (by entity) holding every tile of the entity in keyed state, folding each
  row into its tiles with the same merges as the SQL below, expiring windowed tiles by a
  timer at their retention, and emitting the changed tiles every flush interval and before
  each checkpoint barrier. It replaced the SQL aggregations for their cost (state-TTL
  cleanup, binary-row hashing, two aggregations and a fan-out per granularity) and stores
  the same tiles byte for byte (tests/integration/test_tile_merger.py).
* **or JVM, Flink SQL mini-batch GROUP BY (view, entity, granularity, tile start)**: merge the
  one-event IRs with the SQL aggregate that *is* the core ``merge`` for that IR (``SUM`` of
  counts and integer sums, ``MIN``/``MAX`` of integers, both for ``avg``'s ``(sum, count)``;
  for ``count_distinct`` the one-event sketch's single sparse entry, merged by jobs/jvm
  ``HllSketch``, the core sketch's merge and bytes; for ``last`` / ``last_n`` the codec bytes of
  the one-event item and the value's ``order_key``, kept newest first by jobs/jvm ``LastN``),
  plus ``COUNT(*)`` as the tile's version and ``MAX(t)`` per slot as its newest event. Its
  state is checkpointed, so each update is the tile's absolute value. Windowed tiles' state
  expires after the longest tile retention (a ``STATE_TTL`` hint); lifetime tiles merge in an
  aggregation of their own that keeps them for ever.
* **JVM, per changed tile**: jobs/jvm ``TileEncoder`` writes the core codec's bytes for the
  tile (:meth:`SourceTilesSql.encode` is the Python reference, and tests hold the two
  byte-identical) and ``CqlTileSink`` writes it with ``USING TIMESTAMP`` (tile start, version)
  and ``USING TTL``, waiting for its writes before a checkpoint completes.

Views with float64 sums, averages, min or max (exact dyadic sums, totalOrder) or string
min / max keep the Python keyed path. Integer sums merge as DECIMAL(38, 0): exact up to 38
digits, where the core's Python ints are unbounded.

Nothing here imports PyFlink: the per-event and per-tile steps are unit-tested against
:meth:`ViewAggregator.update` and ``encode``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, cast

from feature_store.adapters.cql_online_store import insert_cql
from feature_store.core import codec
from feature_store.core.aggregators import order_key
from feature_store.core.model import (
    AggregationKind,
    FeatureView,
    Registry,
    ValueType,
)
from feature_store.core.sketch import DEFAULT_PRECISION, HyperLogLog
from feature_store.core.tiles import Definition, TileState, ViewAggregator
from feature_store.stream.tile_writer import Routed, ViewTiles, split_key, write_timestamp_us

_SUM_EXACT: Final = "SUM(CAST({c0} AS DECIMAL(38, 0)))"  # the core's int sums are unbounded


@dataclass(frozen=True, slots=True)
class _Merge:
    """How the JVM merges one definition's one-event IRs.

    ``inputs``: SQL types of the columns the router fills from the one-event IR; ``outputs``:
    the aggregates over them (``{c0}``, ``{c1}``: the input columns); ``kind``: how the tile
    encoder writes the merged IR (``i`` an int, ``t`` avg's (sum, count), ``h`` a sketch's
    bytes, ``r`` an IR already in the core codec's bytes).
    """

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    kind: str
    op: str  # jobs/jvm TileMerger's merge: sum, min, max, avg, hll, last
    n: int = 0  # last_n's n (0: last)


_INT = _Merge(("BIGINT",), ("SUM({c0})",), "i", "sum")  # counts: an int IR
_MERGES: Final[dict[tuple[AggregationKind, ValueType | None], _Merge]] = {
    (AggregationKind.SUM, ValueType.INT64): _Merge(("BIGINT",), (_SUM_EXACT,), "i", "sum"),
    (AggregationKind.MIN, ValueType.INT64): _Merge(("BIGINT",), ("MIN({c0})",), "i", "min"),
    (AggregationKind.MAX, ValueType.INT64): _Merge(("BIGINT",), ("MAX({c0})",), "i", "max"),
    (AggregationKind.AVG, ValueType.INT64): _Merge(
        ("BIGINT", "BIGINT"), (_SUM_EXACT, "SUM({c1})"), "t", "avg"
    ),
}
# count_distinct: the one-event sketch's single sparse entry, merged by jobs/jvm HllSketch
_SKETCH = _Merge(("BIGINT",), ("fstore_hll({c0})",), "h", "hll")


def _last(n: int) -> _Merge:
    """last (n = 0) / last_n(n): the value's order key and the one-event IR's item in codec
    bytes, kept by jobs/jvm LastN in the core's (event time, value) order."""
    return _Merge(("BYTES", "BYTES"), (f"fstore_last({n}, t, {{c0}}, {{c1}})",), "r", "last", n)


def _merge(definition: Definition) -> _Merge | None:
    agg = definition.aggregator
    if agg.kind is AggregationKind.COUNT:
        return _INT
    if agg.kind is AggregationKind.COUNT_DISTINCT:
        # HllSketch is built for the default precision only
        return _SKETCH if agg.init().p == DEFAULT_PRECISION else None
    if agg.kind is AggregationKind.LAST:
        return _last(0)
    if agg.kind is AggregationKind.LAST_N:
        n: int = cast(Any, agg).n
        return _last(n)
    return _MERGES.get((agg.kind, agg.input_type))


def sql_ineligible(view: FeatureView, aggregator: ViewAggregator) -> str | None:
    """Why the view's tiles cannot be merged in SQL, or ``None`` when they can."""
    for d in aggregator.definitions:
        if _merge(d) is None:
            kind = d.aggregator.kind.value
            typed = f" of {d.aggregator.input_type.value}" if d.aggregator.input_type else ""
            return f"the JVM does not merge its {kind}{typed} IR exactly"
    return None


@dataclass(frozen=True, slots=True)
class _Def:
    definition: Definition
    merge: _Merge
    first_input: int  # index of its first input among the routed row's p columns
    first_output: int  # index of its first output among the query's a columns


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
        inputs = outputs = 0
        input_types: list[str] = []
        for index in view_indices:
            tiles = ViewTiles(views[index], source)
            defs = []
            for d in tiles.aggregator.definitions:
                merge = _merge(d)
                if merge is None:
                    raise ValueError(
                        f"view {views[index].name!r}: {sql_ineligible(views[index], tiles.aggregator)}"
                    )
                defs.append(_Def(d, merge, inputs, outputs))
                inputs += len(merge.inputs)
                outputs += len(merge.outputs)
                input_types.extend(merge.inputs)
            self._views[index] = _View(index, tiles, tuple(defs), insert_cql(keyspace, views[index]))
        self.input_count = inputs
        self.output_count = outputs
        self.input_types: tuple[str, ...] = tuple(input_types)
        # where each definition's newest event time sits in a query row
        lasts = len(self.TILE_FIXED) + outputs
        self._last_at = {d.first_output: lasts + n for n, d in enumerate(self._all_defs)}

    @property
    def view_indices(self) -> tuple[int, ...]:
        return tuple(self._views)

    def definitions(self, index: int) -> tuple[_Def, ...]:
        """The SQL-merged definitions of the view at ``index`` (the router fills their inputs)."""
        return self._views[index].defs

    @property
    def routed_columns(self) -> tuple[str, ...]:
        """Names of :meth:`route`'s row (types: INT, STRING, BIGINT, then :attr:`input_types`)."""
        return (*self.ROUTED_FIXED, *(f"p{k}" for k in range(self.input_count)))

    @property
    def retention_ms(self) -> int | None:
        """How long a windowed tile's SQL state must live: the longest tile retention of these
        views (``None``: only lifetime tiles, kept forever)."""
        retentions = [r for v in self._views.values() for r in v.tiles.retention_ms.values() if r is not None]
        return max(retentions) if retentions else None

    # --- per event (Python, stateless) ------------------------------------------------------

    def route(self, routed: Routed) -> list[Any] | None:
        """The event's one-event IRs as a row, or ``None`` when no definition accepts it."""
        index, entity = split_key(routed.key)
        return self.route_split(index, entity, routed)

    def route_split(self, index: int, entity: str, routed: Routed) -> list[Any] | None:
        """:meth:`route` for a caller that already split the routed key (the job's router)."""
        view = self._views[index]
        t = routed.event_time_ms
        fields = routed.fields
        row: list[Any] = [None] * (3 + self.input_count)
        accepted = False
        for d in view.defs:
            predicate, field, agg = d.definition[:3]
            if predicate is not None and not predicate(fields):
                continue
            value = None
            if field is not None:
                value = fields.get(field)
                if value is None:
                    continue
            ir = agg.add(agg.init(), value, t)
            at = 3 + d.first_input
            kind = d.merge.kind
            if kind == "i":
                row[at] = ir
            elif kind == "t":
                row[at], row[at + 1] = ir
            elif kind == "h":
                row[at] = ir.packed_entries()[0]
            else:  # last: ir is (t, value); last_n: ((t, value),)
                item = ir if agg.kind is AggregationKind.LAST else ir[0]
                row[at], row[at + 1] = order_key(value, agg.input_type), codec.encode_value(item)
            accepted = True
        if not accepted:
            return None
        row[0], row[1], row[2] = index, entity, t
        return row

    # --- the JVM merge --------------------------------------------------------------------------

    def sql(self, routed_table: str) -> str:
        """The query merging ``routed_table`` (rows of :meth:`route`) into absolute tiles.

        Windowed tiles and lifetime tiles merge in two aggregations: the windowed one's state
        expires (``STATE_TTL``) after the longest tile retention, the lifetime one's never.
        """
        by_g: dict[int, list[_Def]] = {}
        for view in self._views.values():
            grans = view.tiles.aggregator.granularities_ms
            for d in view.defs:
                for gi, _ in d.definition.targets:
                    entries = by_g.setdefault(grans[gi], [])
                    if d not in entries:
                        entries.append(d)
        windowed = [self._select(routed_table, g, defs) for g, defs in sorted(by_g.items()) if g]
        lifetime = [self._select(routed_table, 0, by_g[0])] if 0 in by_g else []
        outputs = []
        lasts = []
        for d in self._all_defs:
            columns = {f"c{i}": f"p{d.first_input + i}" for i in range(len(d.merge.inputs))}
            for i, template in enumerate(d.merge.outputs):
                outputs.append(template.format(**columns) + f" AS a{d.first_output + i}")
            lasts.append(f"MAX(CASE WHEN p{d.first_input} IS NOT NULL THEN t END) AS l{d.first_output}")
        head = "SELECT {hint}vi, entity, g, tile_start, COUNT(*) AS version, " + ", ".join([*outputs, *lasts])
        queries = []
        if windowed:
            hint = f"/*+ STATE_TTL('w' = '{self.retention_ms} ms') */ "
            union = "\nUNION ALL\n".join(windowed)
            queries.append(
                head.format(hint=hint) + f"\nFROM (\n{union}\n) AS w\nGROUP BY vi, entity, g, tile_start"
            )
        if lifetime:
            queries.append(
                head.format(hint="") + f"\nFROM (\n{lifetime[0]}\n) AS l\nGROUP BY vi, entity, g, tile_start"
            )
        return "\nUNION ALL\n".join(queries)

    def _select(self, routed_table: str, g: int, defs: list[_Def]) -> str:
        """The routed rows of the definitions with tiles of granularity ``g``, each with its tile."""
        live = {d.first_input + i for d in defs for i in range(len(d.merge.inputs))}
        columns = ", ".join(
            f"p{k}" if k in live else f"CAST(NULL AS {sql_type}) AS p{k}"
            for k, sql_type in enumerate(self.input_types)
        )
        accepted = " OR ".join(f"p{d.first_input} IS NOT NULL" for d in defs)
        views = ", ".join(str(v.index) for v in self._views.values() if any(d in v.defs for d in defs))
        # floor to the tile like the core's tile_start (t - t % g, also below zero); lifetime
        # tiles are (0, 0). Every name and number here comes from the registry's compiled views.
        start = f"t - MOD(MOD(t, {g}) + {g}, {g})" if g else "CAST(0 AS BIGINT)"
        return (
            f"SELECT vi, entity, CAST({g} AS BIGINT) AS g, {start} AS tile_start, t, {columns} "  # noqa: S608
            f"FROM {routed_table} WHERE vi IN ({views}) AND ({accepted})"
        )

    def _output_columns(self, kind: str, position: int = 0) -> frozenset[str]:
        return frozenset(f"a{d.first_output + position}" for d in self._all_defs if d.merge.kind == kind)

    @property
    def exact_sum_columns(self) -> frozenset[str]:
        """The query's columns holding integer sums as DECIMAL(38, 0)."""
        return frozenset(
            f"a{d.first_output + i}"
            for d in self._all_defs
            for i, template in enumerate(d.merge.outputs)
            if template == _SUM_EXACT
        )

    @property
    def sketch_columns(self) -> frozenset[str]:
        """The query's columns holding count_distinct sketches (BYTES, HyperLogLog.to_bytes)."""
        return self._output_columns("h")

    @property
    def codec_columns(self) -> frozenset[str]:
        """The query's columns holding last / last_n IRs in the core codec's bytes."""
        return self._output_columns("r")

    @property
    def tile_columns(self) -> tuple[str, ...]:
        """Names of the query's rows, in order."""
        outputs = [f"a{k}" for k in range(self.output_count)]
        lasts = [f"l{d.first_output}" for d in self._all_defs]
        return (*self.TILE_FIXED, *outputs, *lasts)

    # --- per changed tile: the Python reference of the JVM's encoding -----------------------

    def tile_state(self, row: Sequence[Any]) -> tuple[_View, int, int, TileState]:
        """The query row as (view, granularity, tile start, tile state)."""
        view = self._views[row[0]]
        g, start = row[2], row[3]
        agg = view.tiles.aggregator
        gi = agg.granularities_ms.index(g)
        state = agg.new_tile(g)
        for d in view.defs:
            last = row[self._last_at[d.first_output]]
            if last is None:
                continue
            at = len(self.TILE_FIXED) + d.first_output
            ir: Any
            if d.merge.kind == "h":
                ir = HyperLogLog.from_bytes(row[at])
            elif d.merge.kind == "r":
                ir = codec.decode_value(row[at])
            elif d.merge.kind == "t":
                ir = (_int(row[at]), _int(row[at + 1]))
            else:
                ir = _int(row[at])
            for tgi, si in d.definition.targets:
                if tgi == gi:
                    state.irs[si] = ir
                    state.last_ms[si] = last
        return view, g, start, state

    def encode(self, row: Sequence[Any], now_ms: int) -> tuple[Any, ...]:
        """What the JVM writes for a query row: (insert CQL, entity key, view, g, start, payload,
        TTL s, write timestamp µs), the payload by the core's ``ViewAggregator.encode``."""
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

    def _slots(self, view: _View, g: int) -> list[tuple[int, _Def]]:
        """(slot id, definition) of the tile's slots in the layout's order."""
        agg = view.tiles.aggregator
        gi = agg.granularities_ms.index(g)
        feeding = {si: d for d in view.defs for tgi, si in d.definition.targets if tgi == gi}
        return [(sid, feeding[si]) for si, sid in enumerate(agg.slot_ids(g))]

    def encoder_input(
        self, row: Sequence[Any]
    ) -> tuple[str, list[int], list[Any], list[Any], list[Any], list[Any]]:
        """What the JVM encoder (``fstore_tile``) gets for a query row: kinds, slot ids, newest
        event times, first and second int IR parts and byte IRs (``None`` where absent)."""
        slots = self._slots(self._views[row[0]], row[2])
        at = len(self.TILE_FIXED)
        kinds = "".join(d.merge.kind for _, d in slots)
        lasts = [row[self._last_at[d.first_output]] for _, d in slots]
        firsts = [row[at + d.first_output] if d.merge.kind in "it" else None for _, d in slots]
        seconds = [row[at + d.first_output + 1] if d.merge.kind == "t" else None for _, d in slots]
        raws = [row[at + d.first_output] if d.merge.kind in "hr" else None for _, d in slots]
        return kinds, [sid for sid, _ in slots], lasts, firsts, seconds, raws

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
                kinds = "".join(d.merge.kind for _, d in slots)
                sids = ", ".join(f"CAST({sid} AS BIGINT)" for sid, _ in slots)
                lasts = ", ".join(f"l{d.first_output}" for _, d in slots)
                firsts = ", ".join(
                    f"CAST(a{d.first_output} AS DECIMAL(38, 0))"
                    if d.merge.kind in "it"
                    else "CAST(NULL AS DECIMAL(38, 0))"
                    for _, d in slots
                )
                seconds = ", ".join(
                    f"CAST(a{d.first_output + 1} AS BIGINT)"
                    if d.merge.kind == "t"
                    else "CAST(NULL AS BIGINT)"
                    for _, d in slots
                )
                raws = ", ".join(
                    f"a{d.first_output}" if d.merge.kind in "hr" else "CAST(NULL AS BYTES)" for _, d in slots
                )
                when = f"WHEN vi = {view.index} AND g = {g}"
                payloads.append(
                    f"{when} THEN {encoder}('{kinds}', ARRAY[{sids}], ARRAY[{lasts}], ARRAY[{firsts}], "
                    f"ARRAY[{seconds}], ARRAY[{raws}])"
                )
                retention = view.tiles.retention_ms[g]
                if retention is not None:
                    expiries.append(f"{when} THEN CAST({retention} AS BIGINT)")
        # lifetime tiles: no expiry (NULL), so no TTL
        expires = f"tile_start + CASE {' '.join(expiries)} END" if expiries else "CAST(NULL AS BIGINT)"
        return (
            f"SELECT CASE vi {cql} END AS insert_cql, ENCODE(entity, 'UTF-8') AS entity_key, "
            f"CASE vi {names} END AS feature_view, g AS granularity_ms, tile_start AS tile_start_ms, "
            f"CASE {' '.join(payloads)} END AS payload, {expires} AS expires_ms, "
            "tile_start * 1000 + version AS timestamp_us\n"
            f"FROM (\n{self.sql(routed_table)}\n)"
        )

    # --- the JVM merge without SQL: jobs/jvm TileMerger ---------------------------------------

    def merge_plan(self) -> dict[str, Any]:
        """The plan of jobs/jvm ``TileMerger``, the keyed operator merging :meth:`route`'s rows
        into the same tiles as :meth:`write_sql`: per view its definitions (how each merges,
        where its inputs sit in the routed row) and per granularity the tile layout (the
        encoder's kinds and slot ids, the definition feeding each slot) and retention."""
        views = []
        for view in self._views.values():
            position = {id(d): i for i, d in enumerate(view.defs)}
            grans = []
            for g in view.tiles.aggregator.granularities_ms:
                slots = self._slots(view, g)
                grans.append(
                    {
                        "g": g,
                        "retention": view.tiles.retention_ms[g],
                        "kinds": "".join(d.merge.kind for _, d in slots),
                        "sids": [sid for sid, _ in slots],
                        "slots": [position[id(d)] for _, d in slots],
                    }
                )
            views.append(
                {
                    "vi": view.index,
                    "name": view.tiles.view.name,
                    "insert": view.insert,
                    "defs": [
                        {"op": d.merge.op, "n": d.merge.n, "at": len(self.ROUTED_FIXED) + d.first_input}
                        for d in view.defs
                    ],
                    "grans": grans,
                }
            )
        return {"views": views}

    @property
    def _all_defs(self) -> list[_Def]:  # in the query's column order
        return [d for v in self._views.values() for d in v.defs]


def _text(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def _int(value: Any) -> int:
    if isinstance(value, Decimal):
        return int(value)
    return int(value) if value is not None else 0


__all__ = ["SourceTilesSql", "sql_ineligible"]
