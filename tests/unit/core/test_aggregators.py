from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feature_store.core.aggregators import Aggregator, aggregator_for, fold, order_key
from feature_store.core.codec import encode_value
from feature_store.core.model import AggregationKind, ValueType
from feature_store.core.sketch import HyperLogLog
from tests.unit.core.strategies import KIND_INPUTS, same, values_for

K = AggregationKind
V = ValueType


def make(kind: AggregationKind, input_type: ValueType | None) -> Aggregator[Any]:
    return aggregator_for(kind, input_type, last_n=3 if kind is K.LAST_N else None)


def batches(input_type: ValueType | None) -> st.SearchStrategy[list[tuple[Any, int]]]:
    # few distinct times so ties are common
    return st.lists(st.tuples(values_for(input_type), st.integers(0, 6)), max_size=10)


def ids(param: tuple[AggregationKind, ValueType | None]) -> str:
    return f"{param[0].value}-{param[1].value if param[1] else 'events'}"


@pytest.mark.parametrize("kind_input", KIND_INPUTS, ids=ids)
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_merge_laws_and_order_independence(
    kind_input: tuple[AggregationKind, ValueType | None], data: st.DataObject
) -> None:
    """The algebra that makes tiles == recompute: one test per kind to keep the suite fast."""
    agg = make(*kind_input)
    events, cut1, cut2, rnd, (value, t) = data.draw(
        st.tuples(
            batches(kind_input[1]),
            st.integers(0, 10),
            st.integers(0, 10),
            st.randoms(use_true_random=False),
            st.tuples(values_for(kind_input[1]), st.integers(0, 6)),
        )
    )
    cut1, cut2 = sorted((min(cut1, len(events)), min(cut2, len(events))))
    a, b, c = (fold(agg, tile) for tile in (events[:cut1], events[cut1:cut2], events[cut2:]))
    before = [encode_value(x) for x in (a, b, c)]

    # associative, commutative, init is the identity
    assert same(agg.merge(a, agg.merge(b, c)), agg.merge(agg.merge(a, b), c))
    assert same(agg.merge(a, b), agg.merge(b, a))
    assert same(agg.merge(a, agg.init()), a)
    assert same(agg.merge(agg.init(), a), a)
    assert [encode_value(x) for x in (a, b, c)] == before, "merge must not modify its arguments"

    # folding all events in any order == merging the per-tile folds
    shuffled = list(events)
    rnd.shuffle(shuffled)
    whole = fold(agg, shuffled)
    merged = agg.merge(agg.merge(a, b), c)
    assert same(whole, merged)
    assert same(agg.finalize(whole), agg.finalize(merged))

    # add agrees with merge (expected first: add may update ``a`` in place)
    expected = agg.merge(a, agg.add(agg.init(), value, t))
    assert same(agg.add(a, value, t), expected)


@pytest.mark.parametrize(
    ("kind", "input_type", "empty"),
    [
        (K.COUNT, None, 0),
        (K.COUNT, V.STRING, 0),
        (K.COUNT_DISTINCT, V.STRING, 0),
        (K.SUM, V.INT64, 0),
        (K.SUM, V.FLOAT64, 0.0),
        (K.AVG, V.INT64, None),
        (K.MIN, V.FLOAT64, None),
        (K.MAX, V.STRING, None),
        (K.LAST, V.BOOL, None),
        (K.LAST_N, V.INT64, []),
    ],
)
def test_empty_window_values(kind: AggregationKind, input_type: ValueType | None, empty: object) -> None:
    agg = make(kind, input_type)
    value = agg.finalize(agg.init())
    assert value == empty
    assert type(value) is type(empty)


def run(kind: AggregationKind, input_type: ValueType, items: list[tuple[Any, int]]) -> Any:
    agg = make(kind, input_type)
    return agg.finalize(fold(agg, items))


def test_float_sum_is_exact_and_order_independent() -> None:
    assert run(K.SUM, V.FLOAT64, [(0.1, 0)] * 10) == 1.0  # naive left-to-right gives 0.9999999999999999
    items = [(1e16, 0), (1.0, 0), (-1e16, 0), (1.0, 0)]
    assert run(K.SUM, V.FLOAT64, items) == 2.0 == math.fsum(v for v, _ in items)
    assert run(K.SUM, V.FLOAT64, items[::-1]) == 2.0
    assert run(K.AVG, V.FLOAT64, [(0.1, 0), (0.2, 0), (0.3, 0)]) == 0.2


def test_float_sum_specials() -> None:
    inf = math.inf
    assert run(K.SUM, V.FLOAT64, [(1e308, 0), (1e308, 0)]) == inf
    assert run(K.SUM, V.FLOAT64, [(-1e308, 0), (-1e308, 0)]) == -inf
    assert run(K.SUM, V.FLOAT64, [(inf, 0), (1.0, 0)]) == inf
    assert math.isnan(run(K.SUM, V.FLOAT64, [(inf, 0), (-inf, 0)]))
    assert math.isnan(run(K.SUM, V.FLOAT64, [(math.nan, 0), (1.0, 0)]))
    assert math.isnan(run(K.AVG, V.FLOAT64, [(math.nan, 0)]))


def test_int_sum_and_avg() -> None:
    assert run(K.SUM, V.INT64, [(2**62, 0), (2**62, 0), (2**62, 0)]) == 3 * 2**62  # exact, unbounded
    assert run(K.AVG, V.INT64, [(1, 0), (2, 0)]) == 1.5
    assert run(K.AVG, V.INT64, [(2**63 - 1, 0), (2**63 - 1, 0)]) == float(2**63 - 1)
    assert isinstance(run(K.SUM, V.INT64, [(1, 0)]), int)


def test_min_max_floats_ignore_nan_and_order_signed_zeros() -> None:
    assert math.copysign(1, run(K.MIN, V.FLOAT64, [(0.0, 0), (-0.0, 1)])) == -1
    assert math.copysign(1, run(K.MIN, V.FLOAT64, [(-0.0, 0), (0.0, 1)])) == -1
    assert math.copysign(1, run(K.MAX, V.FLOAT64, [(-0.0, 0), (0.0, 1)])) == 1
    assert math.copysign(1, run(K.MAX, V.FLOAT64, [(0.0, 0), (-0.0, 1)])) == 1
    assert run(K.MIN, V.FLOAT64, [(math.nan, 0), (3.0, 0), (2.0, 0)]) == 2.0
    assert run(K.MAX, V.FLOAT64, [(math.nan, 0), (3.0, 0), (math.nan, 0)]) == 3.0
    assert run(K.MIN, V.FLOAT64, [(math.nan, 0)]) is None
    assert run(K.MIN, V.STRING, [("b", 0), ("a", 0), ("c", 0)]) == "a"
    assert run(K.MAX, V.INT64, [(-5, 0), (7, 0)]) == 7


@pytest.mark.parametrize("order", range(4))
def test_last_prefers_later_time_then_larger_value(order: int) -> None:
    items = [(5, 10), (9, 10), (1, 20), (3, 20), (2, 15)]
    random.Random(order).shuffle(items)
    assert run(K.LAST, V.INT64, items) == 3  # latest time (20); tie 1 vs 3 -> larger value
    assert run(K.LAST_N, V.INT64, items) == [3, 1, 2]  # newest first, capped at N=3
    assert run(K.LAST, V.STRING, [("a", 1), ("b", 1)]) == run(K.LAST, V.STRING, [("b", 1), ("a", 1)]) == "b"
    assert run(K.LAST, V.BOOL, [(True, 1), (False, 1)]) is True


def test_last_float_ties_use_total_order() -> None:
    assert math.copysign(1, run(K.LAST, V.FLOAT64, [(0.0, 1), (-0.0, 1)])) == 1
    assert math.isnan(run(K.LAST, V.FLOAT64, [(math.inf, 1), (math.nan, 1)]))
    assert run(K.LAST_N, V.FLOAT64, [(1.5, 1), (1.5, 1), (2.5, 0)]) == [1.5, 1.5, 2.5]  # duplicates kept


def test_last_n_keeps_newest() -> None:
    agg = aggregator_for(K.LAST_N, V.STRING, last_n=2)
    ir = fold(agg, [("a", 1), ("b", 2), ("c", 3), ("d", 0)])
    assert agg.finalize(ir) == ["c", "b"]
    assert agg.finalize(agg.merge(ir, fold(agg, [("e", 4)]))) == ["e", "c"]


def test_count_distinct() -> None:
    agg = aggregator_for(K.COUNT_DISTINCT, V.STRING)
    ir = fold(agg, [(f"u{i % 50}", i) for i in range(500)])
    assert isinstance(ir, HyperLogLog)
    assert agg.finalize(ir) == 50


def test_aggregator_for_validates_inputs() -> None:
    with pytest.raises(ValueError, match="needs an input field"):
        aggregator_for(K.SUM)
    with pytest.raises(ValueError, match="does not accept string"):
        aggregator_for(K.SUM, V.STRING)
    with pytest.raises(ValueError, match="does not accept float64"):
        aggregator_for(K.COUNT_DISTINCT, V.FLOAT64)
    with pytest.raises(ValueError, match="needs N"):
        aggregator_for(K.LAST_N, V.INT64)
    with pytest.raises(ValueError, match="N >= 1"):
        aggregator_for(K.LAST_N, V.INT64, last_n=0)


@pytest.mark.parametrize(
    ("input_type", "values"),
    [
        (ValueType.INT64, [-(2**63), -5, -1, 0, 1, 7, 2**62, 2**63 - 1]),
        (ValueType.FLOAT64, [float("-inf"), -2.5, -0.0, 0.0, 1e-300, 3.0, float("inf"), float("nan")]),
        (ValueType.STRING, ["", "a", "ab", "b", "z", "é", "\u4e2d", "\U0001f600"]),
        (ValueType.BOOL, [False, True]),
        (ValueType.BYTES, [b"", b"\x00", b"\x00\x01", b"\x7f", b"\x80", b"\xff"]),
    ],
)
def test_order_key_bytes_sort_as_last_breaks_ties(input_type: ValueType, values: list[Any]) -> None:
    """Unsigned byte order of order_key is the value order of last's ties (what the JVM compares)."""
    agg = aggregator_for(AggregationKind.LAST, input_type, None)
    shuffled = random.Random(1).sample(values, len(values))
    by_key = sorted(shuffled, key=lambda v: order_key(v, input_type))
    # the value last keeps among events at one time is the largest; fold pairs in both orders
    for i, a in enumerate(by_key):
        for b in by_key[i + 1 :]:
            want = encode_value((5, b))  # bytes: NaN compares unequal to itself
            assert encode_value(agg.add(agg.add(agg.init(), a, 5), b, 5)) == want
            assert encode_value(agg.add(agg.add(agg.init(), b, 5), a, 5)) == want
