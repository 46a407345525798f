"""Hypothesis strategies and helpers shared by the core unit tests."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st

from feature_store.core.codec import encode_value
from feature_store.core.model import ACCEPTED_INPUTS, AggregationKind, ValueType

SCALARS: dict[ValueType, st.SearchStrategy[Any]] = {
    ValueType.BOOL: st.booleans(),
    ValueType.INT64: st.integers(-(2**63), 2**63 - 1),
    ValueType.FLOAT64: st.floats(),  # NaN, infinities, -0.0 and NaN payloads included
    ValueType.STRING: st.text(max_size=4),
    ValueType.BYTES: st.binary(max_size=4),
}

# Every (kind, input type) the registry accepts, plus COUNT of events (no input field).
KIND_INPUTS: list[tuple[AggregationKind, ValueType | None]] = [(AggregationKind.COUNT, None)] + [
    (kind, vt) for kind in AggregationKind for vt in sorted(ACCEPTED_INPUTS[kind])
]


def values_for(input_type: ValueType | None) -> st.SearchStrategy[Any]:
    if input_type is None:
        return st.none()
    return SCALARS[input_type]


def same(a: object, b: object) -> bool:
    """Bit-exact equality (-0.0 != 0.0, NaN == NaN of the same payload), via the tile codec."""
    return encode_value(_tuples(a)) == encode_value(_tuples(b))


def _tuples(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


def float_key(value: float) -> tuple[float, float]:
    """Order for min/max/last oracles: by value, then -0.0 before +0.0 (NaN excluded)."""
    return value, math.copysign(1.0, value)
