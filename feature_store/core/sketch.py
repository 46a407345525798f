"""HyperLogLog sketches for approximate ``count_distinct``.

* Hash: the first 8 bytes (big endian) of ``blake2b(digest_size=8)`` over a canonical, type-tagged
  encoding of the value (:func:`canonical_bytes`), so every process, Python version and machine
  hashes the same value to the same 64 bits (Python's ``hash()`` is salted per process).
* Dense registers: ``m = 2**p`` (``p = 12`` by default: 4096 registers, standard error
  ``1.04 / sqrt(m)`` ~ 1.6%). The top ``p`` bits of the hash pick the register, which keeps the
  maximum over values of (leading zeros of the remaining ``64 - p`` bits) + 1.
* Sparse mode (as in HyperLogLog++): while a sketch has at most ``m // 8`` entries it keeps a dict
  ``index -> rank`` at precision 25 instead, so register collisions are practically impossible
  and small counts are exact (to within ~``n**2 / 2**26``). Past that it folds the entries
  into dense registers, which gives exactly the registers that adding the values densely would
  have given. Whether a sketch is sparse therefore depends only on the set of values it has seen,
  never on the order of adds and merges, and most tiles, which see a handful of values, stay tiny.
* Merge: per-entry / per-register maximum: associative, commutative and idempotent, which is
  what lets tiles be merged in any grouping and replays be harmless.
* Estimate: sparse, linear counting over the ``2**25`` sparse registers; dense, Ertl's improved
  raw estimator ("New cardinality estimation algorithms for HyperLogLog sketches", 2017), which
  behaves like linear counting for small sets and like the classic ``alpha * m**2 / sum(2**-M)``
  for large ones, without the classic estimator's error bump where it switches from linear
  counting to the raw formula (measured at 10k distinct, p=12: 2.5% vs 1.2% standard deviation).
* Bytes: :meth:`HyperLogLog.to_bytes` is a function of the logical state only (sorted sparse
  entries, or the ``m`` dense registers), so equal sketches encode to equal bytes.
"""

from __future__ import annotations

import hashlib
import math
import struct
from typing import Final

__all__ = [
    "DEFAULT_PRECISION",
    "SPARSE_PRECISION",
    "SPARSE_SHIFT",
    "HyperLogLog",
    "canonical_bytes",
    "hash64",
    "sparse_estimate",
    "sparse_limit",
]

DEFAULT_PRECISION: Final = 12
SPARSE_PRECISION: Final = 25
_SPARSE_M: Final = 1 << SPARSE_PRECISION
_SPARSE_TAIL_BITS: Final = 64 - SPARSE_PRECISION
SPARSE_SHIFT: Final = _SPARSE_TAIL_BITS  # a hash's sparse index is hash >> SPARSE_SHIFT
_SPARSE_TAIL_MASK: Final = (1 << _SPARSE_TAIL_BITS) - 1
_MIN_P, _MAX_P = 4, 16
_FORMAT_VERSION: Final = 1
_SPARSE, _DENSE = 0, 1
_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")
_CANONICAL_NAN: Final = _F64.pack(float("nan"))


def canonical_bytes(value: object) -> bytes:
    """A type-tagged byte encoding of a scalar, stable across processes and versions.

    Tags: 0x01 bool, 0x02 int (8-byte signed big endian), 0x03 float (IEEE-754 big endian, one
    NaN), 0x04 str (UTF-8), 0x05 bytes (as is). The tag keeps ``1``, ``"1"`` and ``b"1"`` apart.
    """
    if isinstance(value, bool):
        return b"\x01\x01" if value else b"\x01\x00"
    if isinstance(value, int):
        try:
            return b"\x02" + _I64.pack(value)
        except struct.error:
            raise ValueError(f"integer {value} does not fit in int64") from None
    if isinstance(value, float):
        return b"\x03" + (_CANONICAL_NAN if math.isnan(value) else _F64.pack(value))
    if isinstance(value, str):
        return b"\x04" + value.encode("utf-8")
    if isinstance(value, bytes | bytearray | memoryview):
        return b"\x05" + bytes(value)
    raise TypeError(f"cannot hash a value of type {type(value).__name__}")


def hash64(value: object) -> int:
    """The deterministic 64-bit hash every sketch uses."""
    return int.from_bytes(hashlib.blake2b(canonical_bytes(value), digest_size=8).digest(), "big")


def sparse_limit(p: int = DEFAULT_PRECISION) -> int:
    """The most sparse entries a sketch of precision ``p`` holds before it turns dense."""
    return _params(p).sparse_limit


def sparse_estimate(k: int) -> int:
    """The estimate of a sparse sketch holding ``k`` distinct sparse indices (linear counting
    over the ``2**25`` sparse registers): a function of ``k`` alone, so a caller that counts the
    distinct ``hash64(value) >> SPARSE_SHIFT`` of a window elsewhere (e.g. in SQL) gets the
    sketch's very estimate while the count is at most :func:`sparse_limit`."""
    return round(_SPARSE_M * math.log(_SPARSE_M / (_SPARSE_M - k)))


class _Params:
    """Per-precision constants, computed once."""

    __slots__ = ("fold_bits", "high_bits", "m", "max_rank", "p", "sparse_limit", "tail_bits", "tail_mask")

    def __init__(self, p: int) -> None:
        self.p = p
        self.m = m = 1 << p
        self.tail_bits = 64 - p
        self.tail_mask = (1 << (64 - p)) - 1
        self.max_rank = 64 - p + 1
        self.sparse_limit = m // 8
        self.fold_bits = SPARSE_PRECISION - p  # sparse index bits below the dense index
        # 0x80 in every byte lane: used by the branch-free dense merge.
        self.high_bits = int.from_bytes(b"\x80" * m, "big")


_PARAMS: dict[int, _Params] = {}


def _params(p: int) -> _Params:
    params = _PARAMS.get(p)
    if params is None:
        if not _MIN_P <= p <= _MAX_P:
            raise ValueError(f"HyperLogLog precision must be in [{_MIN_P}, {_MAX_P}], got {p}")
        params = _PARAMS[p] = _Params(p)
    return params


def _max_bytes(a: bytes | bytearray, b: bytes | bytearray, params: _Params) -> bytearray:
    """Lane-wise max of two register arrays using big-int arithmetic (no Python-level loop).

    Ranks are < 128, so ``(a | 0x80) - b`` never borrows across byte lanes and its high bit is
    set exactly where ``a >= b``.
    """
    ai = int.from_bytes(a, "big")
    bi = int.from_bytes(b, "big")
    ge = (((ai | params.high_bits) - bi) & params.high_bits) >> 7
    mask = ge * 0xFF
    return bytearray(((ai & mask) | (bi & ~mask)).to_bytes(params.m, "big"))


def _fold_into(dense: bytearray, sparse: dict[int, int], params: _Params) -> None:
    """Max sparse (precision-25) entries into dense registers, as dense adds would have."""
    fold_bits = params.fold_bits
    low_mask = (1 << fold_bits) - 1
    for sparse_index, sparse_rank in sparse.items():
        index = sparse_index >> fold_bits
        low = sparse_index & low_mask
        # the dense rank counts leading zeros from the bits the sparse index kept to itself
        rank = fold_bits - low.bit_length() + 1 if low else fold_bits + sparse_rank
        if rank > dense[index]:  # noqa: PLR1730 -- hot when densifying
            dense[index] = rank


def _sigma(x: float) -> float:
    if x == 1.0:
        return math.inf
    y, z = 1.0, x
    while True:
        x *= x
        previous = z
        z += x * y
        y += y
        if z == previous:
            return z


def _tau(x: float) -> float:
    if x in (0.0, 1.0):
        return 0.0
    y, z = 1.0, 1.0 - x
    while True:
        x = math.sqrt(x)
        previous = z
        y *= 0.5
        z -= (1.0 - x) ** 2 * y
        if z == previous:
            return z / 3.0


_ALPHA_INF: Final = 1.0 / (2.0 * math.log(2.0))


def _ertl_estimate(dense: bytearray, params: _Params) -> float:
    m = params.m
    q = params.max_rank - 1  # 64 - p
    histogram = [0] * (q + 2)
    seen = 0
    for rank in range(q + 2):  # ranks cluster low: stop once every register is accounted for
        if seen == m:
            break
        histogram[rank] = count = dense.count(rank)
        seen += count
    z = m * _tau(1.0 - histogram[q + 1] / m)
    for k in range(q, 0, -1):
        z = 0.5 * (z + histogram[k])
    z += m * _sigma(histogram[0] / m)
    return _ALPHA_INF * m * m / z


class HyperLogLog:
    """A mergeable distinct-count sketch; see the module docstring for the exact algorithm."""

    __slots__ = ("_dense", "_params", "_sparse")

    def __init__(self, p: int = DEFAULT_PRECISION) -> None:
        self._params = _params(p)
        self._sparse: dict[int, int] | None = {}
        self._dense: bytearray | None = None

    @property
    def p(self) -> int:
        return self._params.p

    @property
    def is_sparse(self) -> bool:
        return self._sparse is not None

    def add(self, value: object) -> None:
        self.add_hash(hash64(value))

    def add_hash(self, h: int) -> None:
        sparse = self._sparse
        if sparse is not None:
            index = h >> _SPARSE_TAIL_BITS
            rank = _SPARSE_TAIL_BITS - (h & _SPARSE_TAIL_MASK).bit_length() + 1
            if rank > sparse.get(index, 0):
                sparse[index] = rank
                if len(sparse) > self._params.sparse_limit:
                    self._densify()
            return
        params = self._params
        dense = self._dense
        assert dense is not None
        index = h >> params.tail_bits
        rank = params.tail_bits - (h & params.tail_mask).bit_length() + 1
        if rank > dense[index]:  # noqa: PLR1730 -- per-event path, avoid the max() call
            dense[index] = rank

    def _densify(self) -> None:
        assert self._sparse is not None
        dense = bytearray(self._params.m)
        _fold_into(dense, self._sparse, self._params)
        self._dense = dense
        self._sparse = None

    def registers(self) -> bytes:
        """The ``m`` dense registers, one byte each (sparse entries folded in)."""
        if self._dense is not None:
            return bytes(self._dense)
        assert self._sparse is not None
        dense = bytearray(self._params.m)
        _fold_into(dense, self._sparse, self._params)
        return bytes(dense)

    def copy(self) -> HyperLogLog:
        out: HyperLogLog = HyperLogLog.__new__(HyperLogLog)
        out._params = self._params
        out._sparse = None if self._sparse is None else dict(self._sparse)
        out._dense = None if self._dense is None else bytearray(self._dense)
        return out

    def merged(self, other: HyperLogLog) -> HyperLogLog:
        """A new sketch holding the per-register maximum; neither input is modified."""
        params = self._params
        if other._params is not params:
            raise ValueError(f"cannot merge HyperLogLog sketches of precision {self.p} and {other.p}")
        out: HyperLogLog = HyperLogLog.__new__(HyperLogLog)
        out._params = params
        a_sparse, b_sparse = self._sparse, other._sparse
        if a_sparse is not None and b_sparse is not None:
            small, big = (a_sparse, b_sparse) if len(a_sparse) <= len(b_sparse) else (b_sparse, a_sparse)
            union = dict(big)
            for index, rank in small.items():
                if rank > union.get(index, 0):
                    union[index] = rank
            out._sparse, out._dense = union, None
            if len(union) > params.sparse_limit:
                out._densify()
            return out
        if a_sparse is None and b_sparse is None:
            assert self._dense is not None
            assert other._dense is not None
            out._sparse, out._dense = None, _max_bytes(self._dense, other._dense, params)
            return out
        dense_src = self._dense if self._dense is not None else other._dense
        sparse_src = a_sparse if a_sparse is not None else b_sparse
        assert dense_src is not None
        assert sparse_src is not None
        dense = bytearray(dense_src)
        _fold_into(dense, sparse_src, params)
        out._sparse, out._dense = None, dense
        return out

    def estimate(self) -> int:
        """The estimated number of distinct values added (0 for an empty sketch)."""
        if self._sparse is not None:
            return sparse_estimate(len(self._sparse))
        assert self._dense is not None
        return round(_ertl_estimate(self._dense, self._params))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HyperLogLog):
            return NotImplemented
        return self._params is other._params and self._sparse == other._sparse and self._dense == other._dense

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        layout = f"sparse={len(self._sparse)}" if self._sparse is not None else "dense"
        return f"HyperLogLog(p={self.p}, {layout}, estimate={self.estimate()})"

    # --- bytes -------------------------------------------------------------------------------

    def packed_entries(self) -> list[int]:
        """A sparse sketch's entries as sorted ``index << 6 | rank`` (precision 25), as
        :meth:`to_bytes` writes them; a dense sketch has none (``[]``)."""
        if self._sparse is None:
            return []
        return sorted((index << 6) | rank for index, rank in self._sparse.items())

    def to_bytes(self) -> bytes:
        """``version, p, layout`` then sorted u32 ``index << 6 | rank`` entries, or ``m`` ranks."""
        head = bytes((_FORMAT_VERSION, self._params.p))
        if self._sparse is not None:
            packed = self.packed_entries()
            return head + bytes((_SPARSE,)) + struct.pack(f">{len(packed)}I", *packed)
        assert self._dense is not None
        return head + bytes((_DENSE,)) + bytes(self._dense)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> HyperLogLog:
        """Inverse of :meth:`to_bytes`; rejects anything :meth:`to_bytes` would not produce."""
        data = bytes(data)
        if len(data) < 3:
            raise ValueError("truncated HyperLogLog")
        version, p, layout = data[0], data[1], data[2]
        if version != _FORMAT_VERSION:
            raise ValueError(f"unsupported HyperLogLog format version {version}")
        params = _params(p)
        body = data[3:]
        out = cls(p)
        if layout == _SPARSE:
            count = len(body) // 4
            if len(body) % 4 or count > params.sparse_limit:
                raise ValueError("malformed sparse HyperLogLog")
            sparse: dict[int, int] = {}
            previous = -1
            for packed in struct.unpack(f">{count}I", body):
                index, rank = packed >> 6, packed & 0x3F
                if not previous < index < _SPARSE_M or not 0 < rank <= _SPARSE_TAIL_BITS + 1:
                    raise ValueError("malformed sparse HyperLogLog")
                sparse[index] = rank
                previous = index
            out._sparse = sparse
            return out
        if layout == _DENSE:
            if len(body) != params.m or max(body) > params.max_rank:
                raise ValueError("malformed dense HyperLogLog")
            out._sparse, out._dense = None, bytearray(body)
            return out
        raise ValueError(f"unknown HyperLogLog layout {layout}")
