"""min / max and count_distinct on the vectorised path (window aggregates over RANGE frames): bit
for bit the replay's (and the definition's) values, statuses and event times, with NaN, signed
zeros, nulls, ties, int64 extremes, unicode, where predicates, events on tile boundaries and at
``t``, several granularities, lifetime windows, and distinct counts past the sketch's sparse
limit."""

from __future__ import annotations

import json
import math
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from feature_store.core.model import AggregationKind, Registry
from feature_store.core.sketch import sparse_limit
from feature_store.core.tiles import served_windows
from feature_store.definitions.compiler import load_registry
from feature_store.export.engine import arrow_type
from feature_store.export.plan import STATUS_NAMES, ViewJob, plan_export
from feature_store.export.replay import INT64_MAX, INT64_MIN, ViewReplay, brute_force
from feature_store.export.spine import ROW_INDEX
from feature_store.export.vector import run_vector, split_columns, vector_plan

MINUTE = 60_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % (60 * MINUTE)  # on a tile boundary of every granularity

SCHEMA = {
    "type": "record",
    "name": "Mm",
    "fields": [
        {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "user_id", "type": "string"},
        {"name": "x", "type": ["null", "long"], "default": None},
        {"name": "y", "type": ["null", "double"], "default": None},
        {"name": "s", "type": ["null", "string"], "default": None},
        {"name": "flag", "type": "boolean"},
        {"name": "region", "type": "string"},
    ],
}
REGISTRY = """
entities:
  - name: user
    join_keys: [{name: user_id, type: string}]
sources:
  - name: mm
    topic: test.mm
    schema: mm.avsc
    event_time: event_time
    filter: region != "XX"
feature_views:
  - name: v_win
    entity: user
    source: mm
    ttl: 40m
    features:
      - name: x_min
        aggregation: min
        field: x
        windows:
          - {length: 15m, granularity: 5m}
          - {length: 5m, granularity: 5m}
          - {length: 1h, granularity: 10m}
          - {length: 20m, granularity: 10m}
      - name: x_max
        aggregation: max
        field: x
        windows: [{length: 15m, granularity: 5m}, {length: 2h, granularity: 1h}]
      - {name: x_pos_max, aggregation: max, field: x, where: "x > 0 and flag", windows: [30m]}
      - name: y_min
        aggregation: min
        field: y
        windows: [{length: 15m, granularity: 5m}, {length: 1h, granularity: 1h}]
      - name: y_max
        aggregation: max
        field: y
        where: "s != 'a'"
        windows: [{length: 15m, granularity: 5m}, {length: 30m, granularity: 10m}]
      - {name: s_min, aggregation: min, field: s, windows: [{length: 10m, granularity: 5m}]}
      - name: s_max
        aggregation: max
        field: s
        where: "not flag"
        windows: [{length: 1h, granularity: 10m}]
      - {name: n, aggregation: count, windows: [{length: 15m, granularity: 5m}]}
      - name: x_distinct
        aggregation: count_distinct
        field: x
        windows: [{length: 15m, granularity: 5m}, {length: 1h, granularity: 10m}]
      - {name: s_distinct, aggregation: count_distinct, field: s, where: "flag", windows: [30m]}
  - name: v_life
    entity: user
    source: mm
    ttl: 1h
    features:
      - {name: x_min, aggregation: min, field: x}
      - {name: y_max, aggregation: max, field: y}
      - {name: y_min, aggregation: min, field: y, where: "x < 2"}
      - {name: s_max, aggregation: max, field: s}
      - {name: x_max, aggregation: max, field: x, windows: [{length: 10m, granularity: 5m}]}
      - {name: s_distinct, aggregation: count_distinct, field: s}
feature_services:
  - {name: win, features: ["v_win:*"]}
  - {name: life, features: ["v_life:*"]}
"""

INTS = [None, -3, -1, 0, 1, 2, 7, INT64_MIN, INT64_MAX]
FLOATS = [None, 0.0, -0.0, 1.5, -1.5, 2.0, math.nan, math.inf, -math.inf, 5e-324, -1e300]
STRINGS = [None, "", "a", "b", "B", "ab", "é", "z", "\u00ff", "\U0001f600"]
_REGISTRY: Registry | None = None


def registry() -> Registry:
    global _REGISTRY  # noqa: PLW0603 - built once per session; hypothesis forbids function fixtures
    if _REGISTRY is None:
        root = Path(tempfile.mkdtemp()) / "registry"
        root.mkdir(parents=True)
        (root / "feature_store.yaml").write_text("project: vectortest\n")
        (root / "mm.yaml").write_text(REGISTRY)
        (root / "mm.avsc").write_text(json.dumps(SCHEMA))
        _REGISTRY = load_registry(root)
    return _REGISTRY


def job_of(service: str) -> ViewJob:
    (job,) = plan_export(registry(), service, event_times=True).views
    return job


def same(a: Any, b: Any) -> bool:
    """Equal, floats bit for bit (``-0.0`` is not ``+0.0``)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, float) and isinstance(b, float) and struct.pack(">d", a) == struct.pack(">d", b)
    return bool(a == b) and type(a) is type(b)


Event = dict[str, Any]


def run_both(
    service: str, events: Sequence[tuple[int, Event]], spine: Sequence[tuple[int, int]], work: Path
) -> list[tuple[list[Any], list[Any]]]:
    """Per spine row (entity, t), in the given order: the vectorised path's and the replay's
    (value, status, event time) per column; also checks the replay's values and statuses against
    the brute-force definition."""
    job = job_of(service)
    replay = ViewReplay(job.view, job.source, job.output_indexes)
    plan = vector_plan(job, replay.fields)
    assert plan is not None, "the view must go the vectorised way"
    types = {f.name: f.type for f in job.source.fields}
    ordered = sorted(range(len(events)), key=lambda i: (events[i][0], events[i][1]["event_time"]))
    columns = {
        "eid": pa.array([events[i][0] for i in ordered], pa.int64()),
        "__t": pa.array([events[i][1]["event_time"] for i in ordered], pa.int64()),
    }
    for k, name in enumerate(replay.fields):
        columns[f"f{k}"] = pa.array([events[i][1].get(name) for i in ordered], arrow_type(types[name]))
    pq.write_table(pa.table(columns), work / "events.parquet")
    pq.write_table(
        pa.table(
            {
                ROW_INDEX: pa.array(range(len(spine)), pa.int64()),
                "t": pa.array([t for _, t in spine], pa.int64()),
                "eid": pa.array([e for e, _ in spine], pa.int64()),
            }
        ),
        work / "spine.parquet",
    )
    con = duckdb.connect()
    try:
        run_vector(
            con, plan, f"'{work / 'events.parquet'}'", f"'{work / 'spine.parquet'}'", work / "v.parquet", True
        )
    finally:
        con.close()
    vector = {row[ROW_INDEX]: row for row in pq.read_table(work / "v.parquet").to_pylist()}
    rows = sorted(range(len(spine)), key=lambda j: spine[j])
    out = replay.run(
        [events[i][0] for i in ordered],
        [events[i][1]["event_time"] for i in ordered],
        [[events[i][1].get(name) for i in ordered] for name in replay.fields],
        [spine[j][0] for j in rows],
        [spine[j][1] for j in rows],
    )
    results: list[tuple[list[Any], list[Any]]] = [([], []) for _ in spine]
    for pos, j in enumerate(rows):
        entity, t = spine[j]
        mine = [(e, e["event_time"]) for eid, e in events if eid == entity]
        definition = brute_force(job.view, job.source, mine, t)
        got, want = [], []
        for k, c in enumerate(job.columns):
            row = vector[j]
            got.append((row[c.name], row[c.status_name], row[c.event_time_name]))
            want.append((out.values[k][pos], STATUS_NAMES[out.statuses[k][pos]], out.event_times[k][pos]))
            value, status = definition[c.output_index]
            assert same(value, want[-1][0]), (c.name, t, value, want[-1])
            assert STATUS_NAMES[status] == want[-1][1]
        results[j] = (got, want)
    return results


def assert_same(service: str, events: Sequence[tuple[int, Event]], spine: Sequence[tuple[int, int]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for got, want in run_both(service, events, spine, Path(tmp)):
            names = [c.name for c in job_of(service).columns]
            for name, g, w in zip(names, got, want, strict=True):
                assert same(g[0], w[0]), (name, g, w)
                assert g[1:] == w[1:], (name, g, w)


# times: on and next to tile boundaries (5m, 10m, 1h), and anywhere, over ~3 hours
_ALIGNED = st.builds(
    lambda k, d: T0 + k * 5 * MINUTE + d, st.integers(-12, 24), st.sampled_from([0, 0, 0, -1, 1])
)
TIMES = st.one_of(_ALIGNED, st.integers(T0 - 60 * MINUTE, T0 + 120 * MINUTE))
EVENTS = st.lists(
    st.tuples(
        st.integers(0, 1),
        st.fixed_dictionaries(
            {
                "event_time": TIMES,
                "user_id": st.just("u"),
                "x": st.sampled_from(INTS),
                "y": st.sampled_from(FLOATS),
                "s": st.sampled_from(STRINGS),
                "flag": st.booleans(),
                "region": st.sampled_from(["FR", "FR", "FR", "XX"]),
            }
        ),
    ),
    max_size=40,
)
# a read this far after an event sees it at (or next to) a window's edge: k tiles of 5m, 10m, 1h
_EDGES = [d + k * 5 * MINUTE for k in (0, 1, 2, 3, 4, 6, 10, 12) for d in (-1, 0, 1)]


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[tuple[int, Event]], list[tuple[int, int]]]:
    """Events, and spine rows anywhere or at a window edge after one of the events."""
    events = draw(EVENTS)
    anywhere = st.tuples(st.integers(0, 2), TIMES)
    rows = anywhere
    if events:
        edge = st.tuples(st.integers(0, len(events) - 1), st.sampled_from(_EDGES))
        rows = st.one_of(
            anywhere, edge.map(lambda p: (events[p[0]][0], events[p[0]][1]["event_time"] + p[1]))
        )
    return events, draw(st.lists(rows, min_size=1, max_size=25))


@pytest.mark.parametrize("service", ["win", "life"])
def test_min_max_and_count_distinct_are_vectorised(service: str) -> None:
    job = job_of(service)
    vector, rest = split_columns(job)
    assert rest == ()
    assert {served_windows(job.view)[c.output_index][0].aggregation for c in vector} >= {
        AggregationKind.MIN,
        AggregationKind.MAX,
        AggregationKind.COUNT_DISTINCT,
    }


def test_the_example_registry_replays_only_what_sql_cannot_compute(example_registry_dir: Path) -> None:
    plan = plan_export(load_registry(example_registry_dir), "ranking_v1")
    (calls,) = [job for job in plan.views if job.view.name == "user_calls"]
    vector, rest = split_columns(calls)
    assert rest == ()
    assert {"call_duration_max_7d", "distinct_partners_7d"} <= {c.name for c in vector}
    abuse = plan_export(load_registry(example_registry_dir), "abuse_v1")
    (calls,) = [job for job in abuse.views if job.view.name == "user_calls"]
    assert [c.name for c in split_columns(calls)[1]] == ["recent_partners"]  # last_n: replayed


def event(t: int, x: int | None = None, y: float | None = None, s: str | None = "b", **more: Any) -> Event:
    return {"event_time": t, "user_id": "u", "x": x, "y": y, "s": s, "flag": True, "region": "FR"} | more


def test_window_edges_and_ties_by_hand() -> None:
    """x_max_15m (3 tiles of 5m) read at t covers [floor(t, 5m) - 10m, t]; the zero ties."""
    m = 5 * MINUTE
    events = [
        (0, event(T0 + m - 1, x=100, y=-0.0)),  # just before L of a read at T0 + 3m'
        (0, event(T0 + m, x=5, y=0.0)),  # exactly at L
        (0, event(T0 + m, x=-2, y=-0.0)),  # a tie in time, on the boundary
        (0, event(T0 + 3 * m, x=7, y=math.nan)),  # exactly at t
        (0, event(T0 + 3 * m + 1, x=1000, y=9.0)),  # just after t
    ]
    spine = [(0, T0 + 3 * m), (0, T0 + 3 * m - 1), (0, T0 + 3 * m + 1), (0, T0 + m - 1), (1, T0)]
    with tempfile.TemporaryDirectory() as tmp:
        results = run_both("win", events, spine, Path(tmp))
    names = [c.name for c in job_of("win").columns]
    at = {name: k for k, name in enumerate(names)}
    (got, want), (got_before, _), (got_after, _), (got_early, _), (got_none, _) = results
    assert got == want
    assert got[at["x_max_15m"]] == (7, "PRESENT", T0 + 3 * m)
    assert got[at["x_min_15m"]] == (-2, "PRESENT", T0 + 3 * m)
    assert got[at["x_min_5m"]] == (7, "PRESENT", T0 + 3 * m)
    y_min, y_max = got[at["y_min_15m"]][0], got[at["y_max_15m"]][0]
    assert same(y_min, -0.0)  # NaN ignored, -0.0 wins min
    assert same(y_max, 0.0)  # and +0.0 wins max
    # read at T0 + 15m - 1: L = T0, so the event at T0 + 5m - 1 is in
    assert got_before[at["x_max_15m"]] == (100, "PRESENT", T0 + m)
    assert got_after[at["x_max_15m"]] == (1000, "PRESENT", T0 + 3 * m + 1)
    assert got_early[at["x_min_5m"]] == (100, "PRESENT", T0 + m - 1)
    assert got_none[at["x_min_5m"]] == (None, "NOT_FOUND", 0)


def test_distinct_counts_past_the_sparse_limit_are_the_dense_sketch() -> None:
    """Windows holding more than 512 distinct values (a dense sketch) and windows just below,
    next to each other: every row equals the replay (and the definition)."""
    limit = sparse_limit()
    m = 5 * MINUTE
    many = [(0, event(T0 + m + i, x=i, s=f"s{i}")) for i in range(limit + 40)]
    few = [(1, event(T0 + m + i, x=i, s=f"s{i % 3}")) for i in range(limit)]  # x: exactly at the limit
    late = [(0, event(T0 + 4 * m, x=-1, s="z"))]
    spine = [
        (0, T0 + m + limit - 1),  # 512 values so far: still sparse
        (0, T0 + m + limit),  # 513: dense
        (0, T0 + 3 * m),  # all 552: dense
        (0, T0 + 4 * m),  # the 15m window moved past them: 1
        (0, T0 + 20 * m),  # no window but the lifetime holds them
        (1, T0 + 3 * m),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        results = run_both("win", many + few + late, spine, Path(tmp))
    names = [c.name for c in job_of("win").columns]
    at = names.index("x_distinct_15m")
    counts = []
    for got, want in results:
        assert got == want
        counts.append(got[at][0])
    assert counts[0] == limit
    # dense: an estimate (equal to the replay's, above), within the sketch's error
    assert abs(counts[1] - (limit + 1)) < 0.05 * limit
    assert abs(counts[2] - (limit + 40)) < 0.05 * limit
    assert counts[3] == 1
    assert counts[5] == limit
    with tempfile.TemporaryDirectory() as tmp:
        for got, want in run_both("life", many + few + late, spine, Path(tmp)):
            assert got == want


def test_only_nan_is_a_null_value_with_an_event_time() -> None:
    events = [(0, event(T0, y=math.nan)), (0, event(T0 + 1, y=math.nan))]
    with tempfile.TemporaryDirectory() as tmp:
        ((got, want),) = run_both("life", events, [(0, T0 + 2)], Path(tmp))
    assert got == want
    names = [c.name for c in job_of("life").columns]
    assert got[names.index("y_max")] == (None, "NULL_VALUE", T0 + 1)


@settings(max_examples=100, deadline=None)
@given(case=cases())
@example(
    case=(
        [(0, event(T0 - 1, y=0.0)), (0, event(T0, y=-0.0)), (0, event(T0, y=0.0, x=INT64_MIN))],
        [(0, T0), (0, T0 - 1), (0, T0 + 10 * MINUTE - 1), (0, T0 + 10 * MINUTE)],
    )
)
def test_vectorised_windows_equal_the_replay(
    case: tuple[list[tuple[int, Event]], list[tuple[int, int]]],
) -> None:
    assert_same("win", *case)


@settings(max_examples=50, deadline=None)
@given(case=cases())
def test_vectorised_lifetime_equals_the_replay(
    case: tuple[list[tuple[int, Event]], list[tuple[int, int]]],
) -> None:
    assert_same("life", *case)


def test_times_before_1970() -> None:
    """Tiles floor towards -inf for negative times too (a window edge at a negative L)."""
    m = 5 * MINUTE
    base = -T0
    events = [
        (0, event(base + k * m + d, x=k * 10 + d, y=float(k - d))) for k in range(-3, 4) for d in (-1, 0, 1)
    ]
    spine = [(0, base + k * m + d) for k in range(-3, 5) for d in (-1, 0, 1, 2 * MINUTE)]
    assert_same("win", events, spine)
    assert_same("life", events, spine)
