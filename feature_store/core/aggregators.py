"""Aggregation semantics: one intermediate representation (IR) and four operations per kind.

Every aggregator offers ``init() -> IR`` (the empty aggregate), ``add(ir, value, event_time_ms)
-> IR``, ``merge(a, b) -> IR`` and ``finalize(ir) -> value``. ``merge`` is associative and
commutative and ``add`` agrees with it (``add(ir, v, t) == merge(ir, add(init(), v, t))``), so
folding events in *any* order, or folding per tile and merging the tiles in any grouping, yields
the same IR. That is what makes the streaming job's tiles, the server's window reads and the
offline export agree by construction. ``merge`` never modifies its arguments; ``add`` may update
its IR in place (only ``count_distinct`` does) and always returns the IR to keep.

Null inputs are skipped by the caller (``ViewAggregator``), as in SQL aggregates: ``count`` of a
field counts non-null values, ``count`` without a field counts events.

=================  ===============================================  ==========================
kind               IR                                               finalize of the empty IR
=================  ===============================================  ==========================
count              ``int``                                          ``0``
sum (int64)        ``int`` (exact, unbounded)                       ``0``
sum (float64)      exact dyadic sum ``(num, exp, special)``         ``0.0``
avg                ``(sum IR, count)``                              ``None``
min / max          the value, or ``None``                           ``None``
last               ``(event_time_ms, value)``, or ``None``          ``None``
last_n(N)          tuple of ``(event_time_ms, value)``, newest      ``[]``
                   first, at most N
count_distinct     :class:`~feature_store.core.sketch.HyperLogLog`  ``0``
=================  ===============================================  ==========================

Floating point: float addition is not associative, so a float sum is kept *exactly* as
``num / 2**exp`` (every float is such a dyadic rational) plus a ``special`` flag for infinities
and NaN (bit 0: +inf seen, bit 1: -inf seen; both = NaN, as are NaN inputs). ``finalize`` rounds
once, correctly (the result equals ``math.fsum`` of the inputs), and overflows to ``±inf``.
``avg`` divides the exact sum by the count with a single correct rounding. ``min``/``max`` of
float64 ignore NaN and prefer ``-0.0`` for min and ``+0.0`` for max, so ties never depend on order.

Ties in ``last`` and ``last_n``: the later event time wins; on equal event times the *larger value*
wins (floats by IEEE-754 totalOrder: ``-0.0 < +0.0``, NaN above ``+inf``). This order is total, so
merge is commutative and a replayed or reordered stream picks the same winner; it deliberately
does *not* use arrival order. Fully equal ``(time, value)`` entries are indistinguishable, so
``last_n`` keeps duplicates (two events are two events).
"""

from __future__ import annotations

import math
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from feature_store.core.model import ACCEPTED_INPUTS, AggregationKind, Feature, ValueType
from feature_store.core.sketch import DEFAULT_PRECISION, HyperLogLog

__all__ = [
    "Aggregator",
    "FloatSum",
    "aggregator_for",
    "feature_aggregator",
    "fold",
    "order_key",
]

IR = TypeVar("IR")

FloatSum = tuple[int, int, int]  # (numerator, exponent of the power-of-two denominator, special)
_FLOAT_SUM_ZERO: FloatSum = (0, 0, 0)
_POS_INF, _NEG_INF, _NAN = 1, 2, 3
_SPECIAL_VALUE = {_POS_INF: float("inf"), _NEG_INF: float("-inf"), _NAN: float("nan")}

_F64 = struct.Struct(">d")
_I64 = struct.Struct(">q")


def _float_order(value: float) -> int:
    """An int that sorts like IEEE-754 totalOrder (``-0.0 < +0.0``, NaN above ``+inf``)."""
    bits: int = _I64.unpack(_F64.pack(value))[0]
    return bits if bits >= 0 else bits ^ 0x7FFF_FFFF_FFFF_FFFF


def order_key(value: Any, input_type: ValueType | None) -> bytes:
    """Bytes whose unsigned lexicographic order is the value order ``last`` and ``last_n`` break
    ties on (ints and floats as int64 keys with the sign bit flipped, floats by totalOrder;
    strings as UTF-8, whose byte order is code point order; bytes as is). For a merge that
    compares bytes without knowing the type (the job's JVM side)."""
    if input_type is ValueType.FLOAT64:
        value = _float_order(value)
    if isinstance(value, bool):
        return b"\x01" if value else b"\x00"
    if isinstance(value, int):
        return (value + (1 << 63)).to_bytes(8, "big")
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    raise TypeError(f"no order key for a value of type {type(value).__name__}")


class Aggregator(ABC, Generic[IR]):
    """The semantics of one aggregation kind over one input type."""

    __slots__ = ("input_type", "kind")

    def __init__(self, kind: AggregationKind, input_type: ValueType | None) -> None:
        self.kind = kind
        self.input_type = input_type

    @abstractmethod
    def init(self) -> IR:
        """A fresh empty IR (owned by the caller, so ``add`` may mutate it)."""

    @abstractmethod
    def add(self, ir: IR, value: Any, event_time_ms: int) -> IR:
        """Fold one non-null value in (``None`` only for count of events); use the returned IR,
        ``ir`` may have been updated in place."""

    @abstractmethod
    def merge(self, a: IR, b: IR) -> IR:
        """Combine two IRs; associative, commutative, and neither argument is modified."""

    @abstractmethod
    def finalize(self, ir: IR) -> Any:
        """The served value."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.kind.value}, {self.input_type})"


class _Count(Aggregator[int]):
    __slots__ = ()

    def init(self) -> int:
        return 0

    def add(self, ir: int, value: Any, event_time_ms: int) -> int:
        return ir + 1

    def merge(self, a: int, b: int) -> int:
        return a + b

    def finalize(self, ir: int) -> int:
        return ir


class _SumInt(Aggregator[int]):
    __slots__ = ()

    def init(self) -> int:
        return 0

    def add(self, ir: int, value: Any, event_time_ms: int) -> int:
        return ir + value  # type: ignore[no-any-return]

    def merge(self, a: int, b: int) -> int:
        return a + b

    def finalize(self, ir: int) -> int:
        return ir


def _dyadic_add(num: int, exp: int, other_num: int, other_exp: int) -> tuple[int, int]:
    """Exact sum of two dyadic rationals, normalised (odd numerator, or 0/2**0)."""
    if other_exp > exp:
        num = (num << (other_exp - exp)) + other_num
        exp = other_exp
    else:
        num += other_num << (exp - other_exp)
    if num == 0:
        return 0, 0
    if exp and not num & 1:
        shift = min((num & -num).bit_length() - 1, exp)
        num >>= shift
        exp -= shift
    return num, exp


def _float_sum_add(ir: FloatSum, value: float) -> FloatSum:
    num, exp, special = ir
    try:
        vnum, vden = value.as_integer_ratio()
    except OverflowError:  # +-inf
        return num, exp, special | (_POS_INF if value > 0 else _NEG_INF)
    except ValueError:  # NaN
        return num, exp, _NAN
    num, exp = _dyadic_add(num, exp, vnum, vden.bit_length() - 1)
    return num, exp, special


def _float_sum_merge(a: FloatSum, b: FloatSum) -> FloatSum:
    num, exp = _dyadic_add(a[0], a[1], b[0], b[1])
    return num, exp, a[2] | b[2]


def _dyadic_to_float(num: int, den: int) -> float:
    """``num / den`` rounded once; overflow goes to infinity like IEEE addition would."""
    try:
        return num / den
    except OverflowError:
        return float("inf") if num > 0 else float("-inf")


def _float_sum_value(ir: FloatSum, count: int = 1) -> float:
    num, exp, special = ir
    if special:
        return _SPECIAL_VALUE[special]
    return _dyadic_to_float(num, count << exp)


class _SumFloat(Aggregator[FloatSum]):
    __slots__ = ()

    def init(self) -> FloatSum:
        return _FLOAT_SUM_ZERO

    def add(self, ir: FloatSum, value: Any, event_time_ms: int) -> FloatSum:
        return _float_sum_add(ir, value)

    def merge(self, a: FloatSum, b: FloatSum) -> FloatSum:
        return _float_sum_merge(a, b)

    def finalize(self, ir: FloatSum) -> float:
        return _float_sum_value(ir)


class _AvgInt(Aggregator[tuple[int, int]]):
    __slots__ = ()

    def init(self) -> tuple[int, int]:
        return 0, 0

    def add(self, ir: tuple[int, int], value: Any, event_time_ms: int) -> tuple[int, int]:
        return ir[0] + value, ir[1] + 1

    def merge(self, a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
        return a[0] + b[0], a[1] + b[1]

    def finalize(self, ir: tuple[int, int]) -> float | None:
        total, count = ir
        return _dyadic_to_float(total, count) if count else None


class _AvgFloat(Aggregator[tuple[FloatSum, int]]):
    __slots__ = ()

    def init(self) -> tuple[FloatSum, int]:
        return _FLOAT_SUM_ZERO, 0

    def add(self, ir: tuple[FloatSum, int], value: Any, event_time_ms: int) -> tuple[FloatSum, int]:
        return _float_sum_add(ir[0], value), ir[1] + 1

    def merge(self, a: tuple[FloatSum, int], b: tuple[FloatSum, int]) -> tuple[FloatSum, int]:
        return _float_sum_merge(a[0], b[0]), a[1] + b[1]

    def finalize(self, ir: tuple[FloatSum, int]) -> float | None:
        return _float_sum_value(ir[0], ir[1]) if ir[1] else None


class _Min(Aggregator[Any]):
    __slots__ = ()

    def init(self) -> Any:
        return None

    def add(self, ir: Any, value: Any, event_time_ms: int) -> Any:
        return value if ir is None or value < ir else ir

    def merge(self, a: Any, b: Any) -> Any:
        if a is None:
            return b
        return a if b is None or a <= b else b

    def finalize(self, ir: Any) -> Any:
        return ir


class _Max(_Min):
    __slots__ = ()

    def add(self, ir: Any, value: Any, event_time_ms: int) -> Any:
        return value if ir is None or value > ir else ir

    def merge(self, a: Any, b: Any) -> Any:
        if a is None:
            return b
        return a if b is None or a >= b else b


class _MinFloat(_Min):
    """NaN is ignored; among equal values (only ``±0.0`` can differ) ``-0.0`` wins."""

    __slots__ = ()

    def add(self, ir: Any, value: Any, event_time_ms: int) -> Any:
        if math.isnan(value):
            return ir
        if ir is None or value < ir or (value == ir and _float_order(value) < _float_order(ir)):
            return value
        return ir

    def merge(self, a: Any, b: Any) -> Any:
        return a if b is None else self.add(a, b, 0)


class _MaxFloat(_Min):
    """NaN is ignored; among equal values (only ``±0.0`` can differ) ``+0.0`` wins."""

    __slots__ = ()

    def add(self, ir: Any, value: Any, event_time_ms: int) -> Any:
        if math.isnan(value):
            return ir
        if ir is None or value > ir or (value == ir and _float_order(value) > _float_order(ir)):
            return value
        return ir

    def merge(self, a: Any, b: Any) -> Any:
        return a if b is None else self.add(a, b, 0)


def _identity(value: Any) -> Any:
    return value


class _Last(Aggregator[tuple[int, Any] | None]):
    __slots__ = ("_key",)

    def __init__(self, kind: AggregationKind, input_type: ValueType | None) -> None:
        super().__init__(kind, input_type)
        self._key: Callable[[Any], Any] = _float_order if input_type is ValueType.FLOAT64 else _identity

    def init(self) -> tuple[int, Any] | None:
        return None

    def add(self, ir: tuple[int, Any] | None, value: Any, event_time_ms: int) -> tuple[int, Any] | None:
        if (
            ir is None
            or event_time_ms > ir[0]
            or (event_time_ms == ir[0] and self._key(value) > self._key(ir[1]))
        ):
            return event_time_ms, value
        return ir

    def merge(self, a: tuple[int, Any] | None, b: tuple[int, Any] | None) -> tuple[int, Any] | None:
        if b is None:
            return a
        return self.add(a, b[1], b[0])

    def finalize(self, ir: tuple[int, Any] | None) -> Any:
        return None if ir is None else ir[1]


LastNIR = tuple[tuple[int, Any], ...]


class _LastN(Aggregator[LastNIR]):
    __slots__ = ("_key", "_sort_key", "n")

    def __init__(self, kind: AggregationKind, input_type: ValueType | None, n: int) -> None:
        super().__init__(kind, input_type)
        if n < 1:
            raise ValueError(f"last_n needs N >= 1, got {n}")
        self.n = n
        key: Callable[[Any], Any] = _float_order if input_type is ValueType.FLOAT64 else _identity
        self._key = key
        self._sort_key: Callable[[tuple[int, Any]], tuple[int, Any]] = lambda e: (e[0], key(e[1]))

    def init(self) -> LastNIR:
        return ()

    def add(self, ir: LastNIR, value: Any, event_time_ms: int) -> LastNIR:
        entry = (event_time_ms, value)
        if not ir or event_time_ms > ir[0][0]:  # the common case: newest so far
            return (entry, *ir[: self.n - 1])
        key = self._key
        vkey = key(value)
        for i, (t, v) in enumerate(ir):
            if event_time_ms > t or (event_time_ms == t and vkey > key(v)):
                if i >= self.n:
                    return ir
                return (*ir[:i], entry, *ir[i : self.n - 1])
        if len(ir) >= self.n:
            return ir
        return (*ir, entry)

    def merge(self, a: LastNIR, b: LastNIR) -> LastNIR:
        if not b:
            return a
        if not a:
            return b
        return tuple(sorted(a + b, key=self._sort_key, reverse=True)[: self.n])

    def finalize(self, ir: LastNIR) -> list[Any]:
        return [v for _, v in ir]


class _CountDistinct(Aggregator[HyperLogLog]):
    __slots__ = ("precision",)

    def __init__(self, kind: AggregationKind, input_type: ValueType | None, precision: int) -> None:
        super().__init__(kind, input_type)
        self.precision = precision

    def init(self) -> HyperLogLog:
        return HyperLogLog(self.precision)

    def add(self, ir: HyperLogLog, value: Any, event_time_ms: int) -> HyperLogLog:
        ir.add(value)
        return ir

    def merge(self, a: HyperLogLog, b: HyperLogLog) -> HyperLogLog:
        return a.merged(b)

    def finalize(self, ir: HyperLogLog) -> int:
        return ir.estimate()


_Factory = Callable[[AggregationKind, ValueType | None], Aggregator[Any]]
# kind -> (class for every other input type, class for float64 input)
_SIMPLE: dict[AggregationKind, tuple[_Factory, _Factory]] = {
    AggregationKind.COUNT: (_Count, _Count),
    AggregationKind.SUM: (_SumInt, _SumFloat),
    AggregationKind.AVG: (_AvgInt, _AvgFloat),
    AggregationKind.MIN: (_Min, _MinFloat),
    AggregationKind.MAX: (_Max, _MaxFloat),
    AggregationKind.LAST: (_Last, _Last),
}


def aggregator_for(
    kind: AggregationKind,
    input_type: ValueType | None = None,
    last_n: int | None = None,
    *,
    hll_precision: int = DEFAULT_PRECISION,
) -> Aggregator[Any]:
    """The aggregator for ``kind`` over ``input_type`` (``None`` only for ``count`` of events)."""
    if input_type is None:
        if kind is not AggregationKind.COUNT:
            raise ValueError(f"{kind.value} needs an input field")
    elif input_type not in ACCEPTED_INPUTS[kind]:
        raise ValueError(f"{kind.value} does not accept {input_type.value} input")
    if kind is AggregationKind.LAST_N:
        if last_n is None:
            raise ValueError("last_n needs N")
        return _LastN(kind, input_type, last_n)
    if kind is AggregationKind.COUNT_DISTINCT:
        return _CountDistinct(kind, input_type, hll_precision)
    for_int, for_float = _SIMPLE[kind]
    return (for_float if input_type is ValueType.FLOAT64 else for_int)(kind, input_type)


def feature_aggregator(feature: Feature) -> Aggregator[Any]:
    return aggregator_for(feature.aggregation, feature.input_type, feature.last_n)


def fold(aggregator: Aggregator[IR], items: Iterable[tuple[Any, int]]) -> IR:
    """Fold ``(value, event_time_ms)`` pairs (nulls already removed) into a fresh IR."""
    ir = aggregator.init()
    add = aggregator.add
    for value, event_time_ms in items:
        ir = add(ir, value, event_time_ms)
    return ir
