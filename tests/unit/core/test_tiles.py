from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feature_store.core.model import (
    AggregationKind,
    Feature,
    FeatureView,
    ValueType,
    Window,
    output_type,
)
from feature_store.core.sketch import HyperLogLog
from feature_store.core.tiles import (
    NO_EVENT,
    TileKey,
    TileState,
    ViewAggregator,
    served_windows,
    slot_id,
    tile_retention_ms,
    tile_start,
    window_tile_count,
    window_tile_starts,
)
from tests.unit.core.strategies import float_key, same

K = AggregationKind
V = ValueType
MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000

W_1H = Window(HOUR, 10 * MIN, "1h")
W_3H = Window(3 * HOUR, HOUR, "3h")
W_90M = Window(90 * MIN, HOUR, "90m")  # not a multiple of its granularity: 1 tile
W_20M = Window(20 * MIN, 10 * MIN, "20m")
LIFETIME = Window(None, 0, "lifetime")

FIELDS: dict[str, ValueType] = {
    "user_id": V.STRING,
    "kind": V.STRING,
    "amount": V.FLOAT64,
    "n": V.INT64,
    "flag": V.BOOL,
    "blob": V.BYTES,
}

Event = dict[str, Any]
# (where text, the same condition in plain Python: the oracle must not use the predicate compiler)
LIKES = ('kind in ["like", "superlike"]', lambda e: e.get("kind") in ("like", "superlike"))
FLAGGED = ("flag == true", lambda e: e.get("flag") is True)
BIG_N = (
    "n >= 0 and not flag",
    lambda e: e.get("n") is not None and e["n"] >= 0 and e.get("flag") is not True,
)
WHERES: dict[str, Callable[[Event], bool]] = dict([LIKES, FLAGGED, BIG_N])


def feature(
    name: str,
    kind: AggregationKind,
    field: str | None,
    windows: tuple[Window, ...],
    where: str | None = None,
    last_n: int | None = None,
) -> Feature:
    input_type = FIELDS[field] if field else None
    return Feature(
        name=name,
        aggregation=kind,
        input_field=field,
        input_type=input_type,
        value_type=output_type(kind, input_type),
        windows=windows,
        last_n=last_n,
        where=where,
    )


def make_view(*features: Feature) -> FeatureView:
    return FeatureView(
        name="user_activity",
        entity="user",
        source="events",
        entity_key_fields=("user_id",),
        ttl_ms=None,
        features=features,
    )


VIEW = make_view(
    feature("events", K.COUNT, None, (W_20M, W_1H, W_3H, LIFETIME)),
    feature("events_again", K.COUNT, None, (W_1H,)),  # same definition: shares a slot
    feature("likes", K.COUNT, None, (W_1H, LIFETIME), where=LIKES[0]),
    feature("n_count", K.COUNT, "n", (W_3H,)),
    feature("amount_sum", K.SUM, "amount", (W_1H, W_3H), where=FLAGGED[0]),
    feature("n_sum", K.SUM, "n", (W_1H, W_90M)),
    feature("amount_avg", K.AVG, "amount", (W_3H, LIFETIME)),
    feature("n_avg", K.AVG, "n", (W_1H,), where=BIG_N[0]),
    feature("amount_min", K.MIN, "amount", (W_1H,)),
    feature("amount_max", K.MAX, "amount", (W_3H,)),
    feature("kind_min", K.MIN, "kind", (W_1H,)),
    feature("n_max", K.MAX, "n", (LIFETIME,)),
    feature("last_kind", K.LAST, "kind", (W_1H, LIFETIME)),
    feature("last_amount", K.LAST, "amount", (W_3H,)),
    feature("last_n3", K.LAST_N, "n", (W_1H, W_3H), last_n=3),
    feature("last_flags", K.LAST_N, "flag", (LIFETIME,), last_n=2),
    feature("distinct_kinds", K.COUNT_DISTINCT, "kind", (W_1H, W_3H, LIFETIME)),
    feature("distinct_blobs", K.COUNT_DISTINCT, "blob", (W_20M,), where=LIKES[0]),
)

SPAN = 7 * HOUR
times = st.one_of(
    st.integers(0, SPAN),
    # near tile boundaries, where off-by-one errors live
    st.builds(lambda k, d: max(0, k * 10 * MIN + d), st.integers(0, SPAN // (10 * MIN)), st.integers(-1, 1)),
)
events_st = st.lists(
    st.tuples(
        st.fixed_dictionaries(
            {
                "user_id": st.just("u1"),
                "kind": st.one_of(st.none(), st.sampled_from(["like", "superlike", "pass", "block"])),
                "amount": st.one_of(
                    st.none(), st.floats(-1e6, 1e6, allow_nan=False), st.sampled_from([0.0, -0.0, 0.1])
                ),
                "n": st.one_of(st.none(), st.integers(-(2**40), 2**40)),
                "flag": st.one_of(st.none(), st.booleans()),
                "blob": st.one_of(st.none(), st.binary(max_size=2)),
            }
        ),
        times,
    ),
    max_size=40,
)


def build(agg: ViewAggregator, events: list[tuple[Event, int]]) -> dict[TileKey, TileState]:
    tiles: dict[TileKey, TileState] = {}
    for event, t in events:
        agg.update(tiles, event, t)
    return tiles


# --- the oracle: a brute-force recompute over raw events, written independently ---------------


def in_window(event_ms: int, window: Window, t_ms: int) -> bool:
    if event_ms > t_ms:
        return False
    if window.length_ms is None:
        return True
    g = window.granularity_ms
    current = (t_ms // g) * g
    return (event_ms // g) * g >= current - window.length_ms + g


def sort_key(input_type: ValueType | None) -> Callable[[Any], Any]:
    return float_key if input_type is V.FLOAT64 else (lambda v: v)


def recompute(
    f: Feature, window: Window, events: list[tuple[Event, int]], t_ms: int
) -> tuple[Any, int | None]:
    keep = WHERES[f.where] if f.where else (lambda e: True)
    rows = [
        (e.get(f.input_field) if f.input_field else None, ts)
        for e, ts in events
        if in_window(ts, window, t_ms)
        and keep(e)
        and (f.input_field is None or e.get(f.input_field) is not None)
    ]
    newest = max((ts for _, ts in rows), default=None)
    values: list[Any] = [v for v, _ in rows]
    key = sort_key(f.input_type)
    kind = f.aggregation
    result: Any
    if kind is K.COUNT:
        result = len(rows)
    elif kind is K.SUM:
        result = math.fsum(values) if f.input_type is V.FLOAT64 else sum(values)
    elif kind is K.AVG:
        result = float(sum(map(Fraction, values), Fraction(0)) / len(values)) if values else None
    elif kind is K.MIN:
        result = min(values, key=key, default=None)
    elif kind is K.MAX:
        result = max(values, key=key, default=None)
    elif kind is K.LAST:
        result = max(rows, key=lambda r: (r[1], key(r[0])))[0] if rows else None
    elif kind is K.LAST_N:
        assert f.last_n is not None
        result = [v for v, _ in sorted(rows, key=lambda r: (r[1], key(r[0])), reverse=True)[: f.last_n]]
    else:
        sketch = HyperLogLog()
        for v in values:
            sketch.add(v)
        result = sketch.estimate()
        assert abs(result - len(set(values))) <= 1
    return result, newest


def check_read(
    agg: ViewAggregator, tiles: Mapping[TileKey, TileState], events: list[tuple[Event, int]], t: int
) -> None:
    read = agg.read(tiles, t)
    for i, (f, w) in enumerate(served_windows(VIEW)):
        expected, newest = recompute(f, w, events, t)
        got = read.values[i]
        name = agg.served_names[i]
        if f.aggregation in (K.SUM, K.AVG):  # exact sums: equal, but 0.0 vs -0.0 is not meaningful
            assert got == expected, name
            assert type(got) is type(expected) or expected is None, name
        else:
            assert same(got, expected), (name, got, expected)
        assert read.last_event_ms[i] == newest, name


AGG = ViewAggregator(VIEW, FIELDS)


@settings(max_examples=60, deadline=None)
@given(events_st, st.integers(0, SPAN + HOUR), st.randoms(use_true_random=False))
def test_tiles_equal_brute_force_recompute(events: list[tuple[Event, int]], t: int, rnd: Any) -> None:
    # the read contract: the current tiles hold only events <= t (a replay up to t)
    upto_t = [(e, ts) for e, ts in events if ts <= t]
    rnd.shuffle(upto_t)  # arrival order must not matter
    check_read(AGG, build(AGG, upto_t), upto_t, t)


@settings(max_examples=25, deadline=None)
@given(events_st, st.data())
def test_merged_partial_tiles_equal_one_pass(events: list[tuple[Event, int]], data: st.DataObject) -> None:
    split = data.draw(st.lists(st.booleans(), min_size=len(events), max_size=len(events)))
    left = build(AGG, [ev for ev, s in zip(events, split, strict=True) if s])
    right = build(AGG, [ev for ev, s in zip(events, split, strict=True) if not s])
    whole = build(AGG, events)
    merged = dict(left)
    for key, state in right.items():
        merged[key] = AGG.merge_tiles(key[0], merged[key], state) if key in merged else state
    assert merged.keys() == whole.keys()
    for key, state in whole.items():
        assert AGG.encode(key[0], merged[key]) == AGG.encode(key[0], state)


@settings(max_examples=25, deadline=None)
@given(events_st)
def test_tile_codec_round_trip_and_determinism(events: list[tuple[Event, int]]) -> None:
    tiles = build(AGG, events)
    again = build(AGG, events[::-1])
    for (g, s), state in tiles.items():
        data = AGG.encode(g, state)
        assert data == AGG.encode(g, again[(g, s)]), "same events, any order: same bytes"
        back = AGG.decode(g, data)
        assert AGG.encode(g, back) == data
        assert [same(a, b) for a, b in zip(back.irs, state.irs, strict=True)] == [True] * len(state.irs)
        assert back.last_ms == state.last_ms


def test_count_falls_when_the_user_goes_quiet() -> None:
    view = make_view(feature("events", K.COUNT, None, (W_1H, LIFETIME)))
    agg = ViewAggregator(view, FIELDS)
    tiles: dict[TileKey, TileState] = {}
    t0 = 10 * HOUR + 5 * MIN
    for i in range(3):
        agg.update(tiles, {"user_id": "u1"}, t0 + i * MIN)
    now = t0 + 3 * MIN
    assert agg.read(tiles, now).values == [3, 3]
    assert agg.read(tiles, now + 2 * HOUR).values == [0, 3]  # no new event needed
    assert agg.read(tiles, now + 2 * HOUR).last_event_ms == [None, t0 + 2 * MIN]
    # the window slides a tile at a time: at t0's tile start + 1h the 10-minute tile drops out
    assert agg.read(tiles, 11 * HOUR - 1).values == [3, 3]
    assert agg.read(tiles, 11 * HOUR).values == [0, 3]


def test_window_rule_at_tile_boundaries() -> None:
    view = make_view(feature("events", K.COUNT, None, (W_1H,)))
    agg = ViewAggregator(view, FIELDS)
    tiles = build(agg, [({}, 0), ({}, 10 * MIN - 1), ({}, 10 * MIN)])
    assert agg.read(tiles, 10 * MIN - 1).values == [2]
    assert agg.read(tiles, 10 * MIN).values == [3]
    assert agg.read(tiles, HOUR - 1).values == [3]
    assert agg.read(tiles, HOUR).values == [1]  # tile [0, 10m) is out: window is [10m, 1h]
    assert agg.read(tiles, HOUR + 10 * MIN).values == [0]


def test_tiles_after_the_current_one_are_ignored() -> None:
    view = make_view(feature("events", K.COUNT, None, (W_1H,)))
    agg = ViewAggregator(view, FIELDS)
    tiles = build(agg, [({}, 5 * MIN), ({}, 25 * MIN), ({}, 2 * HOUR)])
    assert agg.read(tiles, 19 * MIN).values == [1]


def test_update_reports_touched_tiles_and_skips_rejected_events() -> None:
    view = make_view(
        feature("likes", K.COUNT, None, (W_1H, W_3H), where=LIKES[0]),
        feature("n_sum", K.SUM, "n", (LIFETIME,)),
    )
    agg = ViewAggregator(view, FIELDS)
    tiles: dict[TileKey, TileState] = {}
    t = 2 * HOUR + 15 * MIN
    assert agg.update(tiles, {"kind": "like", "n": 2}, t) == [
        (10 * MIN, 2 * HOUR + 10 * MIN),
        (HOUR, 2 * HOUR),
        (0, 0),
    ]
    assert agg.update(tiles, {"kind": "pass", "n": None}, t) == []  # nothing accepted: nothing touched
    assert agg.update(tiles, {"kind": "pass", "n": 1}, t) == [(0, 0)]
    assert agg.read(tiles, t).values == [1, 1, 3]


def test_identical_definitions_share_a_slot() -> None:
    assert len(AGG.slot_ids(10 * MIN)) == len(set(AGG.slot_ids(10 * MIN)))
    events_slot = slot_id(VIEW.features[0], 10 * MIN)
    assert events_slot == slot_id(VIEW.features[1], 10 * MIN)
    assert AGG.slot_ids(10 * MIN).count(events_slot) == 1


def test_slot_ids_ignore_names_and_spelling_but_not_semantics() -> None:
    base = feature("a", K.COUNT, None, (W_1H,), where="kind == 'like'")
    assert slot_id(base, 10 * MIN) == slot_id(
        feature("b", K.COUNT, None, (W_1H,), where="kind=='like'"), 10 * MIN
    )
    assert slot_id(base, 10 * MIN) != slot_id(base, HOUR)
    assert slot_id(base, 10 * MIN) != slot_id(
        feature("a", K.COUNT, None, (W_1H,), where="kind == 'pass'"), 10 * MIN
    )
    assert slot_id(base, 10 * MIN) != slot_id(
        feature("a", K.COUNT, "kind", (W_1H,), where="kind == 'like'"), 10 * MIN
    )


def test_decode_survives_registry_changes() -> None:
    old = make_view(
        feature("likes", K.COUNT, None, (W_1H,), where=LIKES[0]),
        feature("n_sum", K.SUM, "n", (W_1H,)),
    )
    new = make_view(  # n_sum removed, likes renamed, a feature added in front
        feature("n_max", K.MAX, "n", (W_1H,)),
        feature("like_count", K.COUNT, None, (W_1H,), where=LIKES[0]),
    )
    old_agg, new_agg = ViewAggregator(old, FIELDS), ViewAggregator(new, FIELDS)
    tiles = build(old_agg, [({"kind": "like", "n": 5}, 1000), ({"kind": "like", "n": 7}, 2000)])
    data = old_agg.encode(10 * MIN, tiles[(10 * MIN, 0)])
    state = new_agg.decode(10 * MIN, data)
    assert new_agg.read({(10 * MIN, 0): state}, 3000).values == [None, 2]
    assert state.last_ms[0] == NO_EVENT


@settings(max_examples=40, deadline=None)
@given(events_st, st.integers(0, SPAN + HOUR))
def test_a_read_depends_only_on_the_tiles_of_tile_keys(events: list[tuple[Event, int]], t: int) -> None:
    # tiles before every window and after the current tile (events later than t) are present,
    # and must not change the read: tile_keys(t) is exactly what a read looks at
    tiles = build(AGG, events)
    wanted = set(AGG.tile_keys(t))
    inside = {k: v for k, v in tiles.items() if k in wanted}
    assert AGG.read(tiles, t) == AGG.read(inside, t)


def test_tile_keys_of_a_read() -> None:
    t = 5 * HOUR + 7 * MIN
    assert len(AGG.tile_keys(t)) == len(set(AGG.tile_keys(t))) == 6 + 3 + 1


def test_tile_start_and_window_helpers() -> None:
    assert tile_start(0, HOUR) == 0
    assert tile_start(HOUR - 1, HOUR) == 0
    assert tile_start(HOUR, HOUR) == HOUR
    assert tile_start(-1, HOUR) == -HOUR  # floor, not truncation
    assert tile_start(123_456_789, 0) == 0
    assert window_tile_count(W_1H) == 6
    assert window_tile_count(W_90M) == 1
    assert window_tile_count(LIFETIME) is None
    assert window_tile_count(Window(5 * MIN, 10 * MIN, "5m")) == 0
    assert list(window_tile_starts(W_3H, 5 * HOUR + 1)) == [5 * HOUR, 4 * HOUR, 3 * HOUR]
    assert list(window_tile_starts(LIFETIME, 5 * HOUR)) == [0]


def test_tile_retention() -> None:
    assert tile_retention_ms(10 * MIN, VIEW) == HOUR + 10 * MIN
    assert tile_retention_ms(HOUR, VIEW) == 3 * HOUR + HOUR
    assert tile_retention_ms(0, VIEW) is None
    with pytest.raises(ValueError, match="no window"):
        tile_retention_ms(DAY, VIEW)


def test_served_names_and_types_follow_the_view() -> None:
    assert AGG.served_names[:5] == ("events_20m", "events_1h", "events_3h", "events", "events_again_1h")
    assert len(AGG.served_names) == len(served_windows(VIEW)) == len(AGG.value_types)
    assert AGG.granularities_ms == (0, 10 * MIN, HOUR)
