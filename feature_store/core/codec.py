"""Deterministic binary encoding of tiles: what a (entity, granularity, tile_start) row stores.

A tile is encoded as::

    u8       format version (currently 1; decoders reject versions they do not know)
    uvarint  number of entries
    entry*   u32 slot id (big endian) | zigzag varint: last_event_ms - previous entry's (first: - 0)
             | value

and an IR value (:func:`encode_value`) as a one-byte tag followed by its payload:

====  =========  ==============================================================
tag   type       payload
====  =========  ==============================================================
0     None
1     False
2     True
3     int        zigzag LEB128 varint (any size: exact sums may exceed int64)
4     float      IEEE-754 binary64, big endian (bit exact: ``-0.0``, NaN payloads)
5     str        uvarint byte length, UTF-8
6     bytes      uvarint length, raw
7     tuple      uvarint item count, items
8     sketch     uvarint length, :meth:`HyperLogLog.to_bytes`
====  =========  ==============================================================

No pickle: rows outlive code versions and may be read by other tools, so the format is explicit,
versioned and self-describing (decoding needs no schema). Equal IRs always produce equal bytes,
and decoding rejects non-canonical input (over-long varints, trailing bytes), so
``encode(decode(b)) == b``; that keeps replayed writes byte-identical and idempotent.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final

from feature_store.core.sketch import HyperLogLog

__all__ = ["FORMAT_VERSION", "CodecError", "decode_tile", "decode_value", "encode_tile", "encode_value"]

FORMAT_VERSION: Final = 1
_MAX_DEPTH: Final = 8  # IRs nest at most three deep; bounds recursion on corrupt input

_T_NONE, _T_FALSE, _T_TRUE, _T_INT, _T_FLOAT, _T_STR, _T_BYTES, _T_TUPLE, _T_HLL = range(9)
_F64 = struct.Struct(">d")
_U32 = struct.Struct(">I")


class CodecError(ValueError):
    """Bytes that are not a valid encoding (corrupt row, or written by a newer format)."""


def _put_uvarint(out: bytearray, n: int) -> None:
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _put_int(out: bytearray, n: int) -> None:
    _put_uvarint(out, n << 1 if n >= 0 else (~n << 1) | 1)


def _put_value(out: bytearray, value: object, depth: int = 0) -> None:
    # bool before int: bool is an int subclass
    if value is None:
        out.append(_T_NONE)
    elif value is True:
        out.append(_T_TRUE)
    elif value is False:
        out.append(_T_FALSE)
    elif isinstance(value, int):
        out.append(_T_INT)
        _put_int(out, value)
    elif isinstance(value, float):
        out.append(_T_FLOAT)
        out += _F64.pack(value)
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        out.append(_T_STR)
        _put_uvarint(out, len(raw))
        out += raw
    elif isinstance(value, bytes):
        out.append(_T_BYTES)
        _put_uvarint(out, len(value))
        out += value
    elif isinstance(value, tuple):
        if depth >= _MAX_DEPTH:
            raise CodecError("value nests too deeply")
        out.append(_T_TUPLE)
        _put_uvarint(out, len(value))
        for item in value:
            _put_value(out, item, depth + 1)
    elif isinstance(value, HyperLogLog):
        raw = value.to_bytes()
        out.append(_T_HLL)
        _put_uvarint(out, len(raw))
        out += raw
    else:
        raise CodecError(f"cannot encode a value of type {type(value).__name__}")


def _get_uvarint(data: bytes, pos: int) -> tuple[int, int]:
    if pos < len(data) and data[pos] < 0x80:  # one byte: most counts, lengths and small ints
        return data[pos], pos + 1
    result = shift = 0
    while True:
        if pos >= len(data):
            raise CodecError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and shift:
                raise CodecError("non-canonical varint")
            return result, pos
        shift += 7


def _get_int(data: bytes, pos: int) -> tuple[int, int]:
    z, pos = _get_uvarint(data, pos)
    return (z >> 1) ^ -(z & 1), pos


def _get_raw(data: bytes, pos: int) -> tuple[bytes, int]:
    length, pos = _get_uvarint(data, pos)
    end = pos + length
    if end > len(data):
        raise CodecError("truncated value")
    return data[pos:end], end


def _get_none(data: bytes, pos: int, depth: int) -> tuple[object, int]:
    return None, pos


def _get_false(data: bytes, pos: int, depth: int) -> tuple[object, int]:
    return False, pos


def _get_true(data: bytes, pos: int, depth: int) -> tuple[object, int]:
    return True, pos


def _get_int_value(data: bytes, pos: int, depth: int) -> tuple[object, int]:
    return _get_int(data, pos)


def _get_float(data: bytes, pos: int, depth: int) -> tuple[object, int]:
    if pos + 8 > len(data):
        raise CodecError("truncated float")
    return _F64.unpack_from(data, pos)[0], pos + 8


def _get_str(data: bytes, pos: int, depth: int) -> tuple[object, int]:
    raw, pos = _get_raw(data, pos)
    try:
        return raw.decode("utf-8"), pos
    except UnicodeDecodeError as exc:
        raise CodecError(f"invalid UTF-8 in string: {exc}") from None


def _get_bytes(data: bytes, pos: int, depth: int) -> tuple[object, int]:
    return _get_raw(data, pos)


def _get_tuple(data: bytes, pos: int, depth: int) -> tuple[object, int]:
    if depth >= _MAX_DEPTH:
        raise CodecError("value nests too deeply")
    count, pos = _get_uvarint(data, pos)
    if count > len(data) - pos:  # every item takes at least one byte
        raise CodecError("truncated tuple")
    items = []
    for _ in range(count):
        item, pos = _get_value(data, pos, depth + 1)
        items.append(item)
    return tuple(items), pos


def _get_sketch(data: bytes, pos: int, depth: int) -> tuple[object, int]:
    raw, pos = _get_raw(data, pos)
    try:
        return HyperLogLog.from_bytes(raw), pos
    except ValueError as exc:
        raise CodecError(str(exc)) from None


# indexed by tag
_DECODERS = (
    _get_none,
    _get_false,
    _get_true,
    _get_int_value,
    _get_float,
    _get_str,
    _get_bytes,
    _get_tuple,
    _get_sketch,
)


def _get_value(data: bytes, pos: int, depth: int = 0) -> tuple[object, int]:
    if pos >= len(data):
        raise CodecError("truncated value")
    tag = data[pos]
    if tag >= len(_DECODERS):
        raise CodecError(f"unknown value tag {tag}")
    return _DECODERS[tag](data, pos + 1, depth)


def encode_value(value: object) -> bytes:
    """Encode one IR (ints, floats, strings, bytes, bools, None, tuples of those, sketches)."""
    out = bytearray()
    _put_value(out, value)
    return bytes(out)


def decode_value(data: bytes) -> object:
    value, pos = _get_value(bytes(data), 0)
    if pos != len(data):
        raise CodecError("trailing bytes after value")
    return value


def encode_tile(entries: Iterable[tuple[int, int, object]]) -> bytes:
    """Encode ``(slot_id, last_event_ms, ir)`` entries, in the order given (keep it fixed)."""
    items = list(entries)
    out = bytearray((FORMAT_VERSION,))
    _put_uvarint(out, len(items))
    previous = 0
    for slot_id, last_ms, ir in items:
        out += _U32.pack(slot_id)
        _put_int(out, last_ms - previous)
        previous = last_ms
        _put_value(out, ir)
    return bytes(out)


def decode_tile(data: bytes) -> list[tuple[int, int, object]]:
    """Inverse of :func:`encode_tile`; raises :class:`CodecError` on anything else."""
    data = bytes(data)
    if not data:
        raise CodecError("empty tile")
    if data[0] != FORMAT_VERSION:
        raise CodecError(f"unsupported tile format version {data[0]} (this code reads {FORMAT_VERSION})")
    count, pos = _get_uvarint(data, 1)
    if count > len(data) - pos:
        raise CodecError("truncated tile")
    entries: list[tuple[int, int, object]] = []
    previous = 0
    for _ in range(count):
        if pos + 4 > len(data):
            raise CodecError("truncated tile")
        slot_id = _U32.unpack_from(data, pos)[0]
        delta, pos = _get_int(data, pos + 4)
        previous += delta
        ir, pos = _get_value(data, pos)
        entries.append((slot_id, previous, ir))
    if pos != len(data):
        raise CodecError("trailing bytes after tile")
    return entries
