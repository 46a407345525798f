from __future__ import annotations

import random
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feature_store.core.sketch import HyperLogLog, canonical_bytes, hash64

values = st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=8), st.binary(max_size=8))


def sketch_of(items: Iterable[object]) -> HyperLogLog:
    h = HyperLogLog()
    for item in items:
        h.add(item)
    return h


@pytest.mark.parametrize("n", [10_000, 30_000])
def test_accuracy_for_large_sets(n: int) -> None:
    estimate = sketch_of([f"user-{i}" for i in range(n)]).estimate()
    assert abs(estimate - n) / n < 0.05


@pytest.mark.parametrize("n", [0, 1, 2, 17, 99, 500])
def test_small_sets_are_exact(n: int) -> None:
    # sparse mode works at precision 25, so small counts are exact
    assert sketch_of([f"item-{i}" for i in range(n)]).estimate() == n
    assert sketch_of(list(range(n)) * 3).estimate() == n


@settings(max_examples=50, deadline=None)
@given(st.lists(values, max_size=80))
def test_small_random_sets_are_exact_ish(items: list[object]) -> None:
    assert abs(sketch_of(items).estimate() - len(set(map(canonical_bytes, items)))) <= 1


@settings(max_examples=30, deadline=None)
@given(st.lists(values, max_size=40), st.lists(values, max_size=40), st.randoms(use_true_random=False))
def test_merge_is_union_whatever_the_path(a: list[object], b: list[object], rnd: random.Random) -> None:
    merged = sketch_of(a).merged(sketch_of(b))
    everything = a + b
    rnd.shuffle(everything)
    assert merged == sketch_of(everything)
    assert merged.to_bytes() == sketch_of(everything).to_bytes()


def test_sparse_to_dense_is_path_independent() -> None:
    items = [f"v{i}" for i in range(3000)]
    direct = sketch_of(items)
    assert not direct.is_sparse
    # merging many small (sparse) parts crosses the threshold in a different place
    parts = [sketch_of(items[i : i + 7]) for i in range(0, len(items), 7)]
    acc = HyperLogLog()
    for part in reversed(parts):
        acc = acc.merged(part)
    assert acc == direct
    assert acc.to_bytes() == direct.to_bytes()
    # dense + sparse
    half = sketch_of(items[:2000]).merged(sketch_of(items[2000:2100]))
    assert half.merged(sketch_of(items[2100:])) == direct


def test_merge_does_not_modify_inputs() -> None:
    a, b = sketch_of(list(range(1000))), sketch_of(list(range(500, 600)))
    before = (a.to_bytes(), b.to_bytes())
    a.merged(b)
    b.merged(a)
    assert (a.to_bytes(), b.to_bytes()) == before


def test_dense_merge_is_register_max() -> None:
    a, b = sketch_of(list(range(5000))), sketch_of([f"x{i}" for i in range(5000)])
    expected = bytes(max(x, y) for x, y in zip(a.registers(), b.registers(), strict=True))
    assert a.merged(b).registers() == expected


@settings(max_examples=30, deadline=None)
@given(st.lists(values, max_size=30), st.integers(0, 3000))
def test_bytes_round_trip(items: list[object], extra: int) -> None:
    h = sketch_of(items + list(range(extra)))
    data = h.to_bytes()
    back = HyperLogLog.from_bytes(data)
    assert back == h
    assert back.to_bytes() == data
    assert back.estimate() == h.estimate()


def test_bytes_are_compact_while_sparse() -> None:
    assert len(HyperLogLog().to_bytes()) == 3
    assert len(sketch_of(["a", "b", "c"]).to_bytes()) == 3 + 3 * 4
    assert len(sketch_of(list(range(10_000))).to_bytes()) == 3 + 4096


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01\x0c",
        b"\x02\x0c\x00",  # unknown version
        b"\x01\x03\x00",  # precision out of range
        b"\x01\x0c\x07",  # unknown layout
        b"\x01\x0c\x00\x00\x00\x00",  # partial sparse entry
        b"\x01\x0c\x00\x00\x00\x00\x41\x00\x00\x00\x41",  # unsorted / duplicate index
        b"\x01\x0c\x00\x00\x00\x00\x40",  # rank 0
        b"\x01\x0c\x01" + b"\x00" * 100,  # short dense body
        b"\x01\x0c\x01" + b"\x3f" * 4096,  # rank too large
    ],
)
def test_from_bytes_rejects_malformed_input(data: bytes) -> None:
    with pytest.raises(ValueError):
        HyperLogLog.from_bytes(data)


def test_precision_mismatch() -> None:
    with pytest.raises(ValueError, match="precision"):
        HyperLogLog(12).merged(HyperLogLog(10))
    with pytest.raises(ValueError, match="precision"):
        HyperLogLog(30)


def test_canonical_bytes_keep_types_apart() -> None:
    encodings = {canonical_bytes(v) for v in (1, "1", b"1", True, 1.0)}
    assert len(encodings) == 5
    assert canonical_bytes(1) == b"\x02" + (1).to_bytes(8, "big", signed=True)
    assert canonical_bytes("é") == b"\x04" + "é".encode()
    assert canonical_bytes(b"\x00") == b"\x05\x00"
    assert canonical_bytes(float("nan")) == canonical_bytes(-float("nan"))
    with pytest.raises(ValueError, match="int64"):
        canonical_bytes(2**63)
    with pytest.raises(TypeError):
        canonical_bytes([1])


def test_hash_is_stable_across_processes() -> None:
    # pinned: a change here silently corrupts every stored sketch
    assert hash64("user-1") == hash64("user-1")
    assert hash64("user-1") == int.from_bytes(
        __import__("hashlib").blake2b(b"\x04user-1", digest_size=8).digest(), "big"
    )
