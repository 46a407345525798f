"""HyperLogLog sketches for approximate ``count_distinct``.

* Hash: the first 8 bytes (big endian) of ``blake2b(digest_size=8)`` over a canonical, type-tagged
  encoding of the value (:func:`canonical_bytes`), so every process, Python version and machine
  hashes the same value to the same 64 bits (Python's ``hash()`` is salted per process).
* Registers: ``2**p`` of them (``p = 12`` by default, 4096 registers, standard error
  ``1.04 / sqrt(4096)`` ~ 1.6%). The top ``p`` bits of the hash pick the register; the register
  keeps the maximum over values of (leading zeros of the remaining ``64 - p`` bits) + 1.
* Merge: per-register maximum. It is associative, commutative and idempotent, which is what lets
  tiles be merged in any grouping and replays be harmless.
* Estimate: the classic estimator ``alpha_m * m**2 / sum(2**-M[j])``; when that is at most
  ``2.5 * m`` and some register is still zero, linear counting ``m * ln(m / zeros)`` is used
  instead, which is near exact for small sets. With 64-bit hashes no large-range correction is
  needed.
* Memory: a sketch starts sparse (a dict ``register -> rank``) and turns dense (a ``bytearray`` of
  ``m`` ranks) once it has more than ``m // 32`` non-zero registers, where the dict stops being
  smaller. Most tiles see only a handful of values, so they stay tiny.
* Bytes: :meth:`HyperLogLog.to_bytes` depends only on the register values, never on the
  in-memory representation or the insertion history: the sparse layout (sorted ``(index, rank)``
  pairs) is used while it is smaller than the dense one. Equal sketches encode to equal bytes.
"""

from __future__ import annotations

import hashlib
import math
import struct
from typing import Final

__all__ = ["DEFAULT_PRECISION", "HyperLogLog", "canonical_bytes", "hash64"]

DEFAULT_PRECISION: Final = 12
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
        return b"\x03" + (_CANONICAL_NAN if value != value else _F64.pack(value))
    if isinstance(value, str):
        return b"\x04" + value.encode("utf-8")
    if isinstance(value, bytes | bytearray | memoryview):
        return b"\x05" + bytes(value)
    raise TypeError(f"cannot hash a value of type {type(value).__name__}")


def hash64(value: object) -> int:
    """The deterministic 64-bit hash every sketch uses."""
    return int.from_bytes(hashlib.blake2b(canonical_bytes(value), digest_size=8).digest(), "big")


class _Params:
    """Per-precision constants, computed once."""

    __slots__ = ("alpha", "high_bits", "m", "max_rank", "p", "sparse_limit", "tail_bits", "tail_mask")

    def __init__(self, p: int) -> None:
        self.p = p
        self.m = m = 1 << p
        self.tail_bits = 64 - p
        self.tail_mask = (1 << (64 - p)) - 1
        self.max_rank = 64 - p + 1
        self.sparse_limit = m // 32
        self.alpha = 0.7213 / (1.0 + 1.079 / m)
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

    def add(self, value: object) -> None:
        self.add_hash(hash64(value))

    def add_hash(self, h: int) -> None:
        params = self._params
        index = h >> params.tail_bits
        rank = params.tail_bits - (h & params.tail_mask).bit_length() + 1
        sparse = self._sparse
        if sparse is not None:
            if rank > sparse.get(index, 0):
                sparse[index] = rank
                if len(sparse) > params.sparse_limit:
                    self._densify()
        else:
            dense = self._dense
            assert dense is not None
            if rank > dense[index]:
                dense[index] = rank

    def _densify(self) -> None:
        sparse = self._sparse
        assert sparse is not None
        dense = bytearray(self._params.m)
        for index, rank in sparse.items():
            dense[index] = rank
        self._dense = dense
        self._sparse = None

    def registers(self) -> bytes:
        """All ``m`` registers, one byte each: the sketch's logical value."""
        if self._dense is not None:
            return bytes(self._dense)
        dense = bytearray(self._params.m)
        assert self._sparse is not None
        for index, rank in self._sparse.items():
            dense[index] = rank
        return bytes(dense)

    def copy(self) -> HyperLogLog:
        out = HyperLogLog.__new__(HyperLogLog)
        out._params = self._params
        out._sparse = None if self._sparse is None else dict(self._sparse)
        out._dense = None if self._dense is None else bytearray(self._dense)
        return out

    def merged(self, other: HyperLogLog) -> HyperLogLog:
        """A new sketch holding the per-register maximum; neither input is modified."""
        if other._params is not self._params:
            raise ValueError(f"cannot merge HyperLogLog sketches of precision {self.p} and {other.p}")
        out = HyperLogLog.__new__(HyperLogLog)
        out._params = self._params
        a_sparse, b_sparse = self._sparse, other._sparse
        if a_sparse is not None and b_sparse is not None:
            small, big = (a_sparse, b_sparse) if len(a_sparse) <= len(b_sparse) else (b_sparse, a_sparse)
            union = dict(big)
            for index, rank in small.items():
                if rank > union.get(index, 0):
                    union[index] = rank
            out._sparse, out._dense = union, None
            if len(union) > self._params.sparse_limit:
                out._densify()
            return out
        if a_sparse is None and b_sparse is None:
            assert self._dense is not None and other._dense is not None
            out._sparse, out._dense = None, _max_bytes(self._dense, other._dense, self._params)
            return out
        dense_src = self._dense if self._dense is not None else other._dense
        sparse_src = a_sparse if a_sparse is not None else b_sparse
        assert dense_src is not None and sparse_src is not None
        dense = bytearray(dense_src)
        for index, rank in sparse_src.items():
            if rank > dense[index]:
                dense[index] = rank
        out._sparse, out._dense = None, dense
        return out

    def nonzero(self) -> int:
        if self._sparse is not None:
            return len(self._sparse)
        assert self._dense is not None
        return self._params.m - self._dense.count(0)

    def estimate(self) -> int:
        """The estimated number of distinct values added (0 for an empty sketch)."""
        params = self._params
        m = params.m
        if self._sparse is not None:
            zeros = m - len(self._sparse)
            harmonic = zeros + math.fsum(2.0**-r for r in self._sparse.values())
        else:
            dense = self._dense
            assert dense is not None
            zeros = dense.count(0)
            harmonic = math.fsum(dense.count(r) * 2.0**-r for r in range(params.max_rank + 1))
        raw = params.alpha * m * m / harmonic
        if raw <= 2.5 * m and zeros > 0:
            return round(m * math.log(m / zeros))
        return round(raw)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HyperLogLog):
            return NotImplemented
        if self._params is not other._params:
            return False
        if self._sparse is not None and other._sparse is not None:
            return self._sparse == other._sparse
        return self.registers() == other.registers()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"HyperLogLog(p={self.p}, nonzero={self.nonzero()}, estimate={self.estimate()})"

    # --- bytes -------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """``version, p, layout`` then sorted big-endian ``(u16 index, u8 rank)`` or ``m`` ranks."""
        params = self._params
        head = bytes((_FORMAT_VERSION, params.p))
        nonzero = self.nonzero()
        if 3 * nonzero < params.m:
            if self._sparse is not None:
                items = sorted(self._sparse.items())
            else:
                assert self._dense is not None
                items = [(i, r) for i, r in enumerate(self._dense) if r]
            body = bytearray(3 * len(items))
            for k, (index, rank) in enumerate(items):
                body[3 * k] = index >> 8
                body[3 * k + 1] = index & 0xFF
                body[3 * k + 2] = rank
            return head + bytes((_SPARSE,)) + bytes(body)
        return head + bytes((_DENSE,)) + self.registers()

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
            if len(body) % 3 or len(body) >= params.m:  # sparse only while smaller
                raise ValueError("malformed sparse HyperLogLog")
            sparse: dict[int, int] = {}
            previous = -1
            for k in range(0, len(body), 3):
                index = (body[k] << 8) | body[k + 1]
                rank = body[k + 2]
                if not previous < index < params.m or not 0 < rank <= params.max_rank:
                    raise ValueError("malformed sparse HyperLogLog")
                sparse[index] = rank
                previous = index
            out._sparse = sparse
            if len(sparse) > params.sparse_limit:
                out._densify()
            return out
        if layout == _DENSE:
            if len(body) != params.m or max(body) > params.max_rank:
                raise ValueError("malformed dense HyperLogLog")
            if 3 * (params.m - body.count(0)) < params.m:
                raise ValueError("non-canonical dense HyperLogLog")
            out._sparse, out._dense = None, bytearray(body)
            return out
        raise ValueError(f"unknown HyperLogLog layout {layout}")
