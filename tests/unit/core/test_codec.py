from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feature_store.core.codec import (
    FORMAT_VERSION,
    CodecError,
    decode_tile,
    decode_value,
    encode_tile,
    encode_value,
)
from feature_store.core.sketch import HyperLogLog

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # unbounded: exact int sums may exceed int64
    st.floats(),
    st.text(max_size=6),
    st.binary(max_size=6),
)
# mostly sparse sketches, sometimes a dense one (more than 512 distinct values)
sketches = st.lists(st.integers(0, 3000), max_size=20).map(
    lambda xs: _sketch(xs) if len(xs) < 18 else _sketch(list(range(600 + sum(xs) % 1000)))
)
irs = st.recursive(
    st.one_of(scalars, sketches),
    lambda inner: st.tuples(inner, inner) | st.lists(inner, max_size=4).map(tuple),
    max_leaves=8,
)


def _sketch(items: list[int]) -> HyperLogLog:
    h = HyperLogLog()
    for item in items:
        h.add(item)
    return h


entries = st.lists(
    st.tuples(st.integers(0, 2**32 - 1), st.integers(-(2**62), 2**62), irs),
    max_size=5,
    unique_by=lambda e: e[0],
)


@settings(max_examples=50, deadline=None)
@given(irs)
def test_value_round_trip_is_bit_exact(value: Any) -> None:
    data = encode_value(value)
    back = decode_value(data)
    assert encode_value(back) == data
    assert type(back) is type(value)
    assert encode_value(value) == data, "deterministic"


@settings(max_examples=40, deadline=None)
@given(entries)
def test_tile_round_trip(items: list[tuple[int, int, Any]]) -> None:
    data = encode_tile(items)
    assert data[0] == FORMAT_VERSION
    back = decode_tile(data)
    assert [(s, t) for s, t, _ in back] == [(s, t) for s, t, _ in items]
    assert encode_tile(back) == data


@settings(max_examples=40, deadline=None)
@given(entries)
def test_every_truncation_is_rejected(items: list[tuple[int, int, Any]]) -> None:
    data = encode_tile(items)
    step = max(1, len(data) // 64)  # dense sketches are 4 KB: sample the cut points
    for cut in [*range(0, len(data), step), len(data) - 1]:
        with pytest.raises(CodecError):
            decode_tile(data[:cut])
    with pytest.raises(CodecError, match="trailing"):
        decode_tile(data + b"\x00")


def test_equal_irs_encode_equally() -> None:
    assert encode_value((1, (2.5, "x"))) == encode_value((1, (2.5, "x")))
    assert encode_value(_sketch([1, 2, 3])) == encode_value(_sketch([3, 2, 1, 2]))
    assert encode_value(0.0) != encode_value(-0.0)
    assert encode_value(1) != encode_value(True) != encode_value(1.0)


def test_encoding_is_compact() -> None:
    assert encode_value(3) == b"\x03\x06"
    assert encode_value(-1) == b"\x03\x01"
    assert len(encode_tile([(7, 1_700_000_000_000, 3), (8, 1_700_000_000_000, 5)])) == 1 + 1 + (4 + 6 + 2) + (
        4 + 1 + 2
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\x02\x00", "version"),
        (b"\x01\x01\x00\x00\x00\x01\x00\x63", "unknown value tag"),
        (b"\x01\x00\xff", "trailing"),
        (b"\x01\x01\x00\x00\x00\x01\x80\x00\x00", "non-canonical varint"),
        (b"\x01\x01\x00\x00\x00\x01\x00\x05\x01\xff", "UTF-8"),
        (b"\x01\x01\x00\x00\x00\x01\x00\x08\x03\x01\x0c\x07", "layout"),
    ],
)
def test_corrupt_tiles_are_rejected(data: bytes, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        decode_tile(data)


def test_deep_nesting_is_rejected() -> None:
    value: Any = 1
    for _ in range(20):
        value = (value,)
    with pytest.raises(CodecError, match="deeply"):
        encode_value(value)
    with pytest.raises(CodecError, match="deeply"):
        decode_value(b"\x07\x01" * 20 + b"\x00")


def test_unsupported_values() -> None:
    with pytest.raises(CodecError, match="list"):
        encode_value([1])
