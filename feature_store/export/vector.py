"""The vectorised path: whole views computed in DuckDB, for the kinds where that is provably exact.

For a window of ``k`` tiles of ``g`` read at ``t`` the core includes the events with
``L <= event_time <= t``, ``L = floor(t / g) * g - (k - 1) * g`` (module docstring of
:mod:`feature_store.core.tiles`). With per-entity prefix aggregates over the events grouped by
event time, ``P(x)`` = aggregate of the accepted events with ``event_time <= x``, a count or an
int sum over the window is ``P(t) - P(L - 1)``: two ASOF joins of the spine against the prefix
table, exact in integer arithmetic. Per kind:

* ``count``: the prefix count of accepted events (``where`` true, input field not null);
* ``sum`` of int64: the prefix sum (HUGEINT, then checked against int64 as the replay does);
* ``avg`` of int64: sum and count as above, finalized by the core's aggregator in Python
  (int / int true division, one correct rounding);
* ``last`` of int64 / string / bool / bytes: the newest accepted event time ``<= t`` and, among
  events at that time, the largest value (the core's tie rule), kept if that time is ``>= L``;
* ``min`` / ``max`` of int64 / float64 / string: not prefix-invertible, so a window aggregate
  instead: per entity, the spine rows and the per-event-time minima (maxima) in one stream
  ordered by time, ``min`` over ``RANGE BETWEEN t - L PRECEDING AND CURRENT ROW`` (the offset
  is per row; ``CURRENT ROW`` takes the peers, so the events at exactly ``t`` are in; lifetime:
  ``UNBOUNDED PRECEDING``), kept for the spine rows. Min and max are order-independent, so this
  is exact for floats too once the core's float rules are applied: NaN is skipped (its event
  still counts for the newest event time, as in the core's tiles), and since SQL compares
  ``-0.0 = +0.0`` and keeps either, a flag per window says whether the zero that wins the
  core's tie (``-0.0`` for min, ``+0.0`` for max) was seen. Strings compare by code point in
  both (UTF-8 byte order). A window with no value left (only NaN) is NULL_VALUE.

* ``count_distinct`` (of int64 / string / bytes): the core's HyperLogLog sketch stays sparse
  while it holds at most ``m / 8`` entries, and a sparse sketch's estimate depends only on how
  many distinct sparse indices (the top 25 bits of each value's hash) it holds
  (:func:`feature_store.core.sketch.sparse_estimate`); merging tiles unions those indices. So
  each accepted event's index is computed once in Python with the core's hash, a window
  ``count(DISTINCT index)`` over the same RANGE frame as min / max counts them, and the core's
  function turns the count into the estimate. A window holding more than ``m / 8`` indices is a
  dense sketch: those rows (rare: the 10M-event benchmark has 349 of 1M) are computed by adding
  the window's hashes to a core sketch.

Statuses follow :func:`feature_store.core.lookup.resolve` over the tiles the store holds at ``t``
(see :mod:`feature_store.export.replay`): the newest event accepted by any slot of granularity
``g`` with ``event_time`` in ``[floor(t / g) * g - K_g * g, t]`` (``K_g`` tiles: the longest
window at ``g``; lifetime: any event ``<= t``), maximised over granularities: none -> NOT_FOUND,
older than the TTL -> OUTSIDE_MAX_AGE, otherwise PRESENT or NULL_VALUE.

A view goes this way only if every requested feature is of these kinds and every predicate of
the view (its source filter and every feature's ``where``, since statuses depend on all slots)
translates exactly (:mod:`feature_store.export.sqlpred`); otherwise the replay computes it.
Tests assert that both paths give identical outputs.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from feature_store.core.aggregators import feature_aggregator
from feature_store.core.model import LIFETIME_GRANULARITY_MS, AggregationKind, Feature, ValueType
from feature_store.core.sketch import (
    DEFAULT_PRECISION,
    SPARSE_SHIFT,
    HyperLogLog,
    hash64,
    sparse_estimate,
    sparse_limit,
)
from feature_store.core.tiles import served_windows, window_tile_count
from feature_store.export.plan import OutputColumn, ViewJob
from feature_store.export.replay import INT64_MAX, INT64_MIN, tile_spans
from feature_store.export.spine import ROW_INDEX
from feature_store.export.sqlpred import TRUE, Untranslatable, predicate_sql

SUM_SUFFIX, COUNT_SUFFIX = "__vsum", "__vcount"
BASE_COLUMN = "__base"
_LAST_TYPES = frozenset({ValueType.INT64, ValueType.STRING, ValueType.BOOL, ValueType.BYTES})
_EXTREME_TYPES = frozenset({ValueType.INT64, ValueType.FLOAT64, ValueType.STRING})
_EXTREMES = (AggregationKind.MIN, AggregationKind.MAX)


def _eligible(feature: Feature) -> bool:
    kind, vt = feature.aggregation, feature.input_type
    if kind is AggregationKind.COUNT:
        return True
    if kind in (AggregationKind.SUM, AggregationKind.AVG):
        return vt is ValueType.INT64
    if kind is AggregationKind.LAST:
        return vt in _LAST_TYPES
    if kind in _EXTREMES:
        return vt in _EXTREME_TYPES
    # the SQL counts the sparse indices of sketches of the default precision (every registry
    # feature's today); a sketch of another precision would go to the replay
    return kind is AggregationKind.COUNT_DISTINCT and (
        getattr(feature_aggregator(feature), "precision", None) == DEFAULT_PRECISION
    )


def _floor(t: str, g: int) -> str:
    return f"({t} - ((({t} % {g}) + {g}) % {g}))"  # floor to a multiple of g, also below 0


@dataclass(frozen=True, slots=True)
class _Output:
    column: OutputColumn
    kind: AggregationKind
    acceptance: int
    low: int | None  # index of the spine lookup L - 1; None for a lifetime window
    sum: int | None = None  # prefix-sum index (sum, avg)
    last: int | None = None  # last-value index (last)
    extreme: int | None = None  # windowed min / max index (min, max)
    floating: bool = False  # min / max of float64: -0.0 and +0.0 told apart
    distinct: int | None = None  # windowed count_distinct index


@dataclass(frozen=True, slots=True)
class _Extreme:
    """One per-(entity, event time) min or max of accepted values: ``e{index}`` in the prefix
    table and, for float64, ``z{index}``: some accepted value is the zero that wins a tie
    (``-0.0`` for min, ``+0.0`` for max)."""

    kind: AggregationKind
    acceptance: int
    column: str
    floating: bool


@dataclass(slots=True)
class VectorPlan:
    job: ViewJob
    acceptances: list[str] = field(default_factory=list)  # SQL booleans over the events
    sums: dict[tuple[int, str], int] = field(default_factory=dict)  # (acceptance, column) -> index
    lasts: dict[tuple[int, str], int] = field(default_factory=dict)
    extremes: dict[_Extreme, int] = field(default_factory=dict)  # per event time -> index
    # (extreme, (g, k) or None for lifetime) -> index
    windowed: dict[tuple[int, tuple[int, int] | None], int] = field(default_factory=dict)
    distincts: dict[tuple[int, str], int] = field(default_factory=dict)  # (acceptance, column) -> index
    # (distinct, (g, k) or None for lifetime) -> index
    windowed_distinct: dict[tuple[int, tuple[int, int] | None], int] = field(default_factory=dict)
    any_of: list[tuple[int, str]] = field(default_factory=list)  # (granularity, SQL boolean)
    any_always: list[bool] = field(default_factory=list)  # per any_of: one of its acceptances is TRUE
    lookups: list[str] = field(default_factory=list)  # spine expressions; [0] is t
    outputs: list[_Output] = field(default_factory=list)

    def acceptance(self, sql: str) -> int:
        if sql not in self.acceptances:
            self.acceptances.append(sql)
        return self.acceptances.index(sql)

    def lookup(self, sql: str) -> int:
        if sql not in self.lookups:
            self.lookups.append(sql)
        return self.lookups.index(sql)


def split_columns(job: ViewJob) -> tuple[tuple[OutputColumn, ...], tuple[OutputColumn, ...]]:
    """The requested columns the vectorised path can compute, and the others."""
    windows = served_windows(job.view)
    ok = tuple(c for c in job.columns if _eligible(windows[c.output_index][0]))
    return ok, tuple(c for c in job.columns if c not in ok)


def vector_plan(
    job: ViewJob, fields: Sequence[str], columns: Sequence[OutputColumn] | None = None
) -> VectorPlan | None:
    """The plan of the vectorised path for ``columns`` of this view (default: all requested),
    or None when the replay must compute them (a kind or a predicate SQL cannot do exactly).

    ``fields`` are the selected event columns, read as ``f0``, ``f1``... in this order.
    """
    view = job.view
    windows = served_windows(view)
    wanted = tuple(job.columns if columns is None else columns)
    if not wanted or not all(_eligible(windows[c.output_index][0]) for c in wanted):
        return None
    alias = {name: f"f{i}" for i, name in enumerate(fields)}

    def column(name: str) -> str:
        if name not in alias:
            raise Untranslatable(f"field {name!r} is not selected")
        return alias[name]

    try:
        accept = _acceptances(job, column)
    except Untranslatable:
        return None
    plan = VectorPlan(job)
    by_granularity: dict[int, list[str]] = {}
    for feature in view.features:
        for window in feature.windows:
            g = LIFETIME_GRANULARITY_MS if window.is_lifetime else window.granularity_ms
            sqls = by_granularity.setdefault(g, [])
            if accept[feature.name] not in sqls:
                sqls.append(accept[feature.name])
    plan.any_of = [(g, "(" + " OR ".join(sqls) + ")") for g, sqls in sorted(by_granularity.items())]
    plan.any_always = [_ALWAYS in sqls for _, sqls in sorted(by_granularity.items())]
    plan.lookup("t")
    for c in wanted:
        feature, window = windows[c.output_index]
        a = plan.acceptance(accept[feature.name])
        count = window_tile_count(window)
        low = None
        if count is not None:
            g = window.granularity_ms
            low = plan.lookup(f"{_floor('t', g)} - {(count - 1) * g} - 1")
        kind = feature.aggregation
        value_col = column(feature.input_field) if feature.input_field is not None else ""
        if kind in (AggregationKind.SUM, AggregationKind.AVG):
            k = plan.sums.setdefault((a, value_col), len(plan.sums))
            plan.outputs.append(_Output(c, kind, a, low, sum=k))
        elif kind is AggregationKind.LAST:
            k = plan.lasts.setdefault((a, value_col), len(plan.lasts))
            plan.outputs.append(_Output(c, kind, a, low, last=k))
        elif kind in _EXTREMES:
            floating = feature.input_type is ValueType.FLOAT64
            e = plan.extremes.setdefault(_Extreme(kind, a, value_col, floating), len(plan.extremes))
            span = None if count is None else (window.granularity_ms, count)
            k = plan.windowed.setdefault((e, span), len(plan.windowed))
            plan.outputs.append(_Output(c, kind, a, low, extreme=k, floating=floating))
        elif kind is AggregationKind.COUNT_DISTINCT:
            d = plan.distincts.setdefault((a, value_col), len(plan.distincts))
            span = None if count is None else (window.granularity_ms, count)
            k = plan.windowed_distinct.setdefault((d, span), len(plan.windowed_distinct))
            plan.outputs.append(_Output(c, kind, a, low, distinct=k))
        else:
            plan.outputs.append(_Output(c, kind, a, low))
    return plan


def _acceptances(job: ViewJob, column: Callable[[str], str]) -> dict[str, str]:
    """Per feature: the SQL for "the job folds this event into the feature's slots"."""
    source = job.source
    types = {f.name: f.type for f in source.fields}
    base = predicate_sql(source.filter, types, column) if source.filter else TRUE
    accept: dict[str, str] = {}
    for feature in job.view.features:
        parts = [base]
        if feature.where:
            parts.append(predicate_sql(feature.where, types, column))
        if feature.input_field is not None:
            parts.append(f"({column(feature.input_field)} IS NOT NULL)")
        accept[feature.name] = "(" + " AND ".join(parts) + ")"
    return accept


_ALWAYS = f"({TRUE})"  # the acceptance of a feature with no filter, no where and no input field


_STATUS = "CASE base WHEN 2 THEN 'NOT_FOUND' WHEN 4 THEN 'OUTSIDE_MAX_AGE' ELSE {present} END"
_PREFIX_TABLE = "fstore_vector_prefix"


def _prefix_sql(plan: VectorPlan, events: str) -> str:
    """Per entity and event time: prefix counts, sums, newest accepted times and last values."""
    n_acc = len(plan.acceptances)
    acc = [f"{sql} AS a{i}" for i, sql in enumerate(plan.acceptances)]
    anys = [f"{sql} AS y{i}" for i, (_, sql) in enumerate(plan.any_of)]
    value_cols = sorted(
        {col for _, col in plan.sums} | {col for _, col in plan.lasts} | {e.column for e in plan.extremes}
    )
    group = [f"count(*) FILTER (WHERE a{i}) AS n{i}" for i in range(n_acc)]
    group += [f"sum({col}) FILTER (WHERE a{a}) AS s{k}" for (a, col), k in plan.sums.items()]
    group += [f"max({col}) FILTER (WHERE a{a}) AS l{k}" for (a, col), k in plan.lasts.items()]
    group += [f"bool_or(y{i}) AS y{i}" for i in range(len(plan.any_of))]
    for e, k in plan.extremes.items():
        group += _extreme_group_sql(e, k)
    w = "OVER (PARTITION BY eid ORDER BY t ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"
    # an acceptance that is always true holds at every (entity, event time) row, so its newest
    # accepted time so far is the row's own time: no window needed (plain counts, no filter)
    prefix = [f"sum(n{i}) {w} AS cn{i}" for i in range(n_acc)]
    prefix += [
        f"t AS lt{i}" if sql == _ALWAYS else f"max(CASE WHEN n{i} > 0 THEN t END) {w} AS lt{i}"
        for i, sql in enumerate(plan.acceptances)
    ]
    prefix += [f"sum(s{k}) {w} AS cs{k}" for k in plan.sums.values()]
    prefix += [f"last_value(l{k} IGNORE NULLS) {w} AS lv{k}" for k in plan.lasts.values()]
    prefix += [
        f"t AS ly{i}" if always else f"max(CASE WHEN y{i} THEN t END) {w} AS ly{i}"
        for i, always in enumerate(plan.any_always)
    ]
    prefix += [f"e{k}" for k in plan.extremes.values()]
    prefix += [f"z{k}" for e, k in plan.extremes.items() if e.floating]
    return f"""
        WITH ev AS (SELECT {", ".join(["eid", "__t AS t", *acc, *anys, *value_cols])}
                    FROM read_parquet({events}, hive_partitioning = false)),
        g AS (SELECT eid, t, {", ".join(group)} FROM ev GROUP BY eid, t)
        SELECT eid, t, {", ".join(prefix)} FROM g
    """  # noqa: S608 - identifiers are generated or quoted, literals are integers


def _extreme_group_sql(e: _Extreme, k: int) -> list[str]:
    """The min / max of the accepted values at one (entity, event time). A float64 NaN is skipped
    (the core's aggregator ignores it; its event still counts for the event time), and since SQL
    treats ``-0.0 = +0.0`` and keeps either, whether the zero that wins a tie was seen is a flag."""
    fn = "min" if e.kind is AggregationKind.MIN else "max"
    col, accepted = e.column, f"a{e.acceptance}"
    if not e.floating:
        return [f"{fn}({col}) FILTER (WHERE {accepted}) AS e{k}"]
    sign = "signbit" if e.kind is AggregationKind.MIN else "NOT signbit"
    return [
        f"{fn}({col}) FILTER (WHERE {accepted} AND NOT isnan({col})) AS e{k}",
        f"bool_or({col} = 0 AND {sign}({col})) FILTER (WHERE {accepted}) AS z{k}",
    ]


def _extremes_sql(plan: VectorPlan) -> str:
    """The spine rows with each windowed min / max: the spine rows and the prefix table's rows in
    one stream per entity ordered by time, a window aggregate over the rows with ``L <= t' <= t``
    (a RANGE frame: the peers at ``t``, the events at exactly ``t``, are in; the offset
    ``t - L = (t mod g) + (k - 1) * g`` is per row), kept for the spine rows."""
    extremes = list(plan.extremes.items())
    values = [f"e{k}" for _, k in extremes] + [f"z{k}" for e, k in extremes if e.floating]
    spine_side = [ROW_INDEX, "t", "eid", *(f"NULL AS {v}" for v in values)]
    event_side = [f"NULL AS {ROW_INDEX}", "t", "eid", *values]
    useful = " OR ".join(f"e{k} IS NOT NULL" for _, k in extremes)  # a flag implies a value
    kinds = {k: e for e, k in extremes}
    windows = []
    for (k, span), i in plan.windowed.items():
        e = kinds[k]
        over = _frame(span)
        fn = "min" if e.kind is AggregationKind.MIN else "max"
        windows.append(f"{fn}(e{k}) {over} AS m{i}")
        if e.floating:
            windows.append(f"bool_or(z{k}) {over} AS mz{i}")
    return f"""
        SELECT * FROM (
            SELECT {", ".join([ROW_INDEX, "t", "eid", *windows])}
            FROM (SELECT {", ".join(spine_side)} FROM sp0
                  UNION ALL SELECT {", ".join(event_side)} FROM {_PREFIX_TABLE} WHERE {useful})
        ) WHERE {ROW_INDEX} IS NOT NULL
    """  # noqa: S608 - identifiers are generated, literals are integers


def _frame(span: tuple[int, int] | None) -> str:
    """The window over a per-entity time-ordered stream holding the events with ``L <= t' <= t``
    (a RANGE frame: the peers at ``t`` are in; the offset ``t - L = (t mod g) + (k - 1) * g`` is
    per row); ``span`` is (g, k), None for a lifetime window."""
    if span is None:
        start = "UNBOUNDED"
    else:
        g, count = span
        start = f"(((t % {g}) + {g}) % {g} + {(count - 1) * g})"
    return f"OVER (PARTITION BY eid ORDER BY t RANGE BETWEEN {start} PRECEDING AND CURRENT ROW)"


def _distinct_table(d: int) -> str:
    return f"fstore_vector_distinct_{d}"


def _distinct_sql(plan: VectorPlan, d: int) -> str:
    """Per spine row: ``count(DISTINCT sparse index)`` of distinct ``d``'s accepted events in each
    of its windows (the spine rows and the events in one stream per entity, as for min / max)."""
    windows = [
        f"count(DISTINCT h) {_frame(span)} AS d{i}"
        for (dd, span), i in plan.windowed_distinct.items()
        if dd == d
    ]
    return f"""
        SELECT * FROM (
            SELECT {", ".join([ROW_INDEX, *windows])}
            FROM (SELECT {ROW_INDEX}, t, eid, CAST(NULL AS BIGINT) AS h FROM sp0
                  UNION ALL SELECT NULL AS {ROW_INDEX}, t, eid, h FROM {_distinct_table(d)})
        ) WHERE {ROW_INDEX} IS NOT NULL
    """  # noqa: S608 - identifiers are generated, literals are integers


def _lookup_sql(plan: VectorPlan, spine: str, event_times: bool, with_base: bool) -> str:
    """Spine rows ASOF-joined to the prefix table at t and at each window's L - 1, then the values
    and statuses of the core's rules."""
    job = plan.job
    n_acc = len(plan.acceptances)
    lookups = [f"{sql} AS x{j}" for j, sql in enumerate(plan.lookups)]
    joins = " ".join(
        f"ASOF LEFT JOIN {_PREFIX_TABLE} AS c{j} ON sp.eid = c{j}.eid AND sp.x{j} >= c{j}.t"
        for j in range(len(plan.lookups))
    )
    # columns of the joins: everything at t, and the prefixes at each L - 1
    at_t = [f"c0.cn{i} AS cn{i}, c0.lt{i} AS lt{i}" for i in range(n_acc)]
    at_t += [f"c0.cs{k} AS cs{k}" for k in plan.sums.values()]
    at_t += [f"c0.lv{k} AS lv{k}" for k in plan.lasts.values()]
    at_t += [f"c0.ly{i} AS ly{i}" for i in range(len(plan.any_of))]
    at_low = []
    for o in plan.outputs:
        if o.low is None:
            continue
        at_low.append(f"c{o.low}.cn{o.acceptance} AS cn{o.acceptance}_{o.low}")
        if o.sum is not None:
            at_low.append(f"c{o.low}.cs{o.sum} AS cs{o.sum}_{o.low}")
    spans = tile_spans(job.view)
    parts = []
    for i, (g, _) in enumerate(plan.any_of):
        if g == LIFETIME_GRANULARITY_MS:
            parts.append(f"ly{i}")
        else:
            # the store holds the tiles of the last K_g + 1 starts (the job's TTL: longest window + g)
            parts.append(f"CASE WHEN ly{i} >= {_floor('t', g)} - {spans[g] * g} THEN ly{i} END")
    newest = parts[0] if len(parts) == 1 else f"greatest({', '.join(parts)})"
    ttl = job.view.ttl_ms
    stale = f"WHEN t - newest > {ttl} THEN 4 " if ttl is not None else ""
    outs = [ROW_INDEX] + ([f"base AS {BASE_COLUMN}"] if with_base else [])
    for o in plan.outputs:
        outs += _output_sql(o, event_times)
    ctes = [f"ext AS ({_extremes_sql(plan)})"] if plan.windowed else []
    base = "ext" if plan.windowed else "sp0"
    if plan.distincts:
        ctes += [f"dst{d} AS ({_distinct_sql(plan, d)})" for d in plan.distincts.values()]
        joined_d = " ".join(f"LEFT JOIN dst{d} USING ({ROW_INDEX})" for d in plan.distincts.values())
        ctes.append(f"spd AS (SELECT * FROM {base} {joined_d})")  # noqa: S608 - generated names
        base = "spd"
    extra = "".join(f"{cte},\n" for cte in ctes)
    return f"""
        WITH sp0 AS (SELECT {ROW_INDEX}, t, eid FROM read_parquet({spine}, hive_partitioning = false)),
        {extra}
        sp AS (SELECT *, {", ".join(lookups)} FROM {base}),
        joined AS (SELECT sp.*, {", ".join(at_t + at_low)} FROM sp {joins}),
        newest AS (SELECT *, {newest} AS newest FROM joined),
        based AS (SELECT *, CASE WHEN newest IS NULL THEN 2 {stale}ELSE 1 END AS base FROM newest)
        SELECT {", ".join(outs)} FROM based
    """  # noqa: S608 - identifiers are generated or quoted, literals are integers


def _output_sql(o: _Output, event_times: bool) -> list[str]:
    """The output columns of one feature, over the joined and based row."""
    a, c = o.acceptance, o.column
    if o.low is None:
        since = "TRUE"
        count = f"coalesce(cn{a}, 0)"
        time = f"lt{a}"
    else:
        since = f"lt{a} > x{o.low}"
        count = f"(coalesce(cn{a}, 0) - coalesce(cn{a}_{o.low}, 0))"
        time = f"CASE WHEN {since} THEN lt{a} END"
    if o.sum is not None:
        k = o.sum
        value = (
            f"coalesce(cs{k}, 0)" if o.low is None else f"(coalesce(cs{k}, 0) - coalesce(cs{k}_{o.low}, 0))"
        )
    elif o.last is not None:
        value = f"lv{o.last}" if o.low is None else f"(CASE WHEN {since} THEN lv{o.last} END)"
    elif o.distinct is not None:
        value = f"coalesce(d{o.distinct}, 0)"  # distinct sparse indices: the estimate comes after
    elif o.extreme is not None:
        value = f"m{o.extreme}"
        if o.floating:  # the zero of the core's tie rule: -0.0 for min, +0.0 for max
            won, lost = ("'-0.0'", "'0.0'") if o.kind is AggregationKind.MIN else ("'0.0'", "'-0.0'")
            zero = f"CAST(CASE WHEN mz{o.extreme} THEN {won} ELSE {lost} END AS DOUBLE)"
            value = f"(CASE WHEN {value} = 0 THEN {zero} ELSE {value} END)"
    else:
        value = count
    outs = []
    if o.kind is AggregationKind.AVG:
        outs.append(f"CASE WHEN base = 1 THEN {value} END AS {_q(c.name + SUM_SUFFIX)}")
        outs.append(f"CASE WHEN base = 1 THEN CAST({count} AS BIGINT) END AS {_q(c.name + COUNT_SUFFIX)}")
        present = f"CASE WHEN {count} = 0 THEN 'NULL_VALUE' ELSE 'PRESENT' END"
    elif o.kind in (AggregationKind.LAST, *_EXTREMES):
        outs.append(f"CASE WHEN base = 1 THEN {value} END AS {_q(c.name)}")
        present = f"CASE WHEN ({value}) IS NULL THEN 'NULL_VALUE' ELSE 'PRESENT' END"
    else:
        fits = f"({value}) BETWEEN {INT64_MIN} AND {INT64_MAX}"
        outs.append(f"CASE WHEN base = 1 AND {fits} THEN CAST({value} AS BIGINT) END AS {_q(c.name)}")
        present = f"CASE WHEN {fits} THEN 'PRESENT' ELSE 'ERROR' END"
    outs.append(f"{_STATUS.format(present=present)} AS {_q(c.status_name)}")
    if event_times:
        outs.append(f"CASE WHEN base = 2 THEN 0 ELSE coalesce({time}, 0) END AS {_q(c.event_time_name)}")
    return outs


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def run_vector(
    con: duckdb.DuckDBPyConnection,
    plan: VectorPlan,
    events: str,
    spine: str,
    out: Path,
    event_times: bool,
    *,
    with_base: bool = False,
) -> None:
    """Compute the plan's columns for every spine row; write ``out`` (row_idx + the replay's
    columns, and the view-level status ``BASE_COLUMN`` if ``with_base``: 1 found and fresh,
    2 NOT_FOUND, 4 OUTSIDE_MAX_AGE). ``events`` and ``spine`` are SQL file lists or globs.
    """
    con.execute(f"CREATE OR REPLACE TEMP TABLE {_PREFIX_TABLE} AS {_prefix_sql(plan, events)}").fetchall()
    hashes: dict[int, pa.Table] = {}
    try:
        for (a, column), d in plan.distincts.items():
            hashes[d] = _hash_events(con, plan.acceptances[a], column, events)
            con.register(_distinct_table(d), hashes[d])
        table = con.sql(_lookup_sql(plan, spine, event_times, with_base)).to_arrow_table()
        table = _finish_distincts(con, plan, table, hashes, spine)
    finally:
        con.execute(f"DROP TABLE IF EXISTS {_PREFIX_TABLE}").fetchall()
        for d in hashes:
            con.unregister(_distinct_table(d))
    for o in plan.outputs:
        if o.kind is not AggregationKind.AVG:
            continue
        name = o.column.name
        feature = served_windows(plan.job.view)[o.column.output_index][0]
        finalize = feature_aggregator(feature).finalize
        sums = table.column(name + SUM_SUFFIX).to_pylist()
        counts = table.column(name + COUNT_SUFFIX).to_pylist()
        values = [
            None if s is None or not n else finalize((int(s), int(n)))
            for s, n in zip(sums, counts, strict=True)
        ]
        at = table.schema.get_field_index(name + SUM_SUFFIX)
        table = table.remove_column(at).add_column(at, name, pa.array(values, type=pa.float64()))
        table = table.remove_column(table.schema.get_field_index(name + COUNT_SUFFIX))
    pq.write_table(table, out)


def _hash_events(con: duckdb.DuckDBPyConnection, accepted: str, column: str, events: str) -> pa.Table:
    """The accepted events of a count_distinct: ``eid``, ``t``, the value's sparse index ``h`` and
    its full 64-bit hash ``hf`` (for dense windows). Each distinct value is hashed once, in Python,
    with the core's hash; Arrow maps the events onto them."""
    found = con.sql(
        f"SELECT eid, __t AS t, {column} AS v FROM read_parquet({events}, hive_partitioning = false) "  # noqa: S608
        f"WHERE {accepted}"
    ).to_arrow_table()
    values = found.column("v")
    uniques = pc.unique(values)
    hashed = pa.array([hash64(v) for v in uniques.to_pylist()], pa.uint64())
    full = pc.take(hashed, pc.index_in(values, value_set=uniques))
    top = pc.cast(pc.shift_right(full, pa.scalar(SPARSE_SHIFT, pa.uint64())), pa.int64())
    return pa.table({"eid": found.column("eid"), "t": found.column("t"), "h": top, "hf": full})


def _finish_distincts(
    con: duckdb.DuckDBPyConnection,
    plan: VectorPlan,
    table: pa.Table,
    hashes: dict[int, pa.Table],
    spine: str,
) -> pa.Table:
    """Counts of distinct sparse indices -> the core's estimates (a lookup table of
    :func:`sparse_estimate` for every count up to the sparse limit); dense windows from a core
    sketch."""
    outputs = [o for o in plan.outputs if o.distinct is not None]
    if not outputs:
        return table
    limit = sparse_limit(DEFAULT_PRECISION)
    estimates = pa.array([sparse_estimate(k) for k in range(limit + 1)], pa.int64())
    spans = {i: (d, span) for (d, span), i in plan.windowed_distinct.items()}
    rows: dict[int, tuple[Any, int]] = {}  # row index -> (eid, t), for the dense rows
    row_index = table.column(ROW_INDEX)
    for o in outputs:
        assert o.distinct is not None
        name = o.column.name
        counts = table.column(name).combine_chunks()
        values = pc.take(estimates, pc.min_element_wise(counts, limit, skip_nulls=False))  # null: null
        over = pc.fill_null(pc.greater(counts, limit), False)
        dense = pc.indices_nonzero(over).to_pylist()
        if dense:
            wanted = pc.take(row_index, dense).to_pylist()
            missing = [r for r in wanted if r not in rows]
            if missing:
                rows.update(_spine_rows(con, spine, missing))
            d, span = spans[o.distinct]
            exact = _dense_counts([rows[r] for r in wanted], hashes[d], span)
            values = pc.replace_with_mask(values, over, pa.array(exact, pa.int64()))
        table = table.set_column(table.schema.get_field_index(name), name, values)
    return table


def _spine_rows(con: duckdb.DuckDBPyConnection, spine: str, wanted: list[int]) -> dict[int, tuple[Any, int]]:
    """row index -> (eid, t) for the given spine rows."""
    con.register("fstore_vector_wanted", pa.table({ROW_INDEX: pa.array(wanted, pa.int64())}))
    try:
        found = con.sql(
            f"SELECT {ROW_INDEX}, eid, t FROM read_parquet({spine}, hive_partitioning = false) "  # noqa: S608
            f"WHERE {ROW_INDEX} IN (SELECT {ROW_INDEX} FROM fstore_vector_wanted)"
        ).fetchall()
    finally:
        con.unregister("fstore_vector_wanted")
    return {int(r): (e, int(t)) for r, e, t in found}


def _dense_counts(rows: list[tuple[Any, int]], hashes: pa.Table, span: tuple[int, int] | None) -> list[int]:
    """The core sketch's estimate for windows past the sparse limit, one per (eid, t) row: the
    window's accepted hashes added to one sketch give the registers that merging its tiles gives
    (merge is a per-register maximum, and densifying does not depend on the order)."""
    wanted = pa.array(sorted({eid for eid, _ in rows}), hashes.schema.field("eid").type)
    mine = hashes.filter(pc.is_in(hashes.column("eid"), value_set=wanted))
    per_entity: dict[Any, list[tuple[int, int]]] = {}
    for eid, t, h in zip(*(mine.column(c).to_pylist() for c in ("eid", "t", "hf")), strict=True):
        per_entity.setdefault(eid, []).append((t, h))
    times: dict[Any, list[int]] = {}
    for eid, items in per_entity.items():
        items.sort()
        times[eid] = [x for x, _ in items]
    out = []
    for eid, t in rows:
        items = per_entity.get(eid, [])
        keys = times.get(eid, [])
        if span is None:
            low = 0
        else:
            g, count = span
            low = bisect.bisect_left(keys, t - t % g - (count - 1) * g)
        high = bisect.bisect_right(keys, t)
        sketch = HyperLogLog(DEFAULT_PRECISION)
        for _, h in items[low:high]:
            sketch.add_hash(h)
        out.append(sketch.estimate())
    return out
