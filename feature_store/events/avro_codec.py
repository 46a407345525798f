"""A small, fast Avro binary encoder compiled from a schema (stdlib only).

The event generator is on the benchmark path: ``fastavro.schemaless_writer`` costs about
11 µs per event, which alone would cap generation below 100k events/s. This module
compiles a schema once into nested closures that write the same bytes fastavro writes
(zig-zag varints, length-prefixed strings and bytes, single-block arrays and maps,
branch-index unions); the tests check byte equality with
:func:`feature_store.adapters.avro_wire.encode` for every example source and for a schema
using every Avro type.

Values are physical Avro values: logical types are not converted (``timestamp-millis`` is
an ``int`` of milliseconds, ``decimal`` is ``bytes``, ``uuid`` is ``str``), exactly what
:class:`~feature_store.adapters.avro_wire.WireDecoder` reads back.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Encoder = Callable[[Any], bytes]
RecordEncoder = Callable[[Mapping[str, Any]], bytes]

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

_SMALL_LIMIT = 1 << 13  # zig-zag varints of [-8192, 8192) are precomputed (1-2 bytes)


def _varint(z: int) -> bytes:
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_SMALL: tuple[bytes, ...] = tuple(_varint((n << 1) ^ (n >> 63)) for n in range(-_SMALL_LIMIT, _SMALL_LIMIT))
# Larger values: the low 14 bits of the zig-zag value are two continuation bytes (a table), the
# rest a varint cached by value; timestamps share their high part for ~8 s of milliseconds.
_LOW14: tuple[bytes, ...] = tuple(
    bytes(((z & 0x7F) | 0x80, ((z >> 7) & 0x7F) | 0x80)) for z in range(1 << 14)
)
_HIGH: dict[int, bytes] = {}


def encode_long(n: int) -> bytes:
    """Avro ``int``/``long``: zig-zag, then a little-endian base-128 varint."""
    if -_SMALL_LIMIT <= n < _SMALL_LIMIT:
        return _SMALL[n + _SMALL_LIMIT]
    z = (n << 1) ^ (n >> 63)
    high = z >> 14
    tail = _HIGH.get(high)
    if tail is None:
        if len(_HIGH) >= 65_536:
            _HIGH.clear()
        tail = _HIGH[high] = _varint(high)
    return _LOW14[z & 0x3FFF] + tail


def encode_string(s: str) -> bytes:
    b = s.encode()
    n = len(b)
    return (_SMALL[n + _SMALL_LIMIT] if n < _SMALL_LIMIT else encode_long(n)) + b


_STRINGS: dict[str, bytes] = {}  # encodings of repeated strings (user ids, enums-as-strings...)


def encode_string_memo(s: str) -> bytes:
    """``encode_string``, remembered: for fields whose values repeat (ids of users, calls...)."""
    encoded = _STRINGS.get(s)
    if encoded is None:
        if len(_STRINGS) >= 1 << 18:
            _STRINGS.clear()
        encoded = _STRINGS[s] = encode_string(s)
    return encoded


def encode_bytes(b: bytes) -> bytes:
    n = len(b)
    return (_SMALL[n + _SMALL_LIMIT] if n < _SMALL_LIMIT else encode_long(n)) + bytes(b)


def _encode_null(_value: Any) -> bytes:
    return b""


def _encode_boolean(value: Any) -> bytes:
    return b"\x01" if value else b"\x00"


_FLOAT = struct.Struct("<f").pack
_DOUBLE = struct.Struct("<d").pack


def _encode_float(value: Any) -> bytes:
    return _FLOAT(value)


def _encode_double(value: Any) -> bytes:
    return _DOUBLE(value)


_PRIMITIVE_ENCODERS: dict[str, Encoder] = {
    "null": _encode_null,
    "boolean": _encode_boolean,
    "int": encode_long,
    "long": encode_long,
    "float": _encode_float,
    "double": _encode_double,
    "bytes": encode_bytes,
    "string": encode_string,
}


class UnsupportedSchema(ValueError):
    """A schema shape this encoder does not handle (the caller may fall back to fastavro)."""


@dataclass(slots=True)
class Names:
    """Named types (records, enums, fixed) by full name and by short name, as they are defined."""

    types: dict[str, dict[str, Any]]

    @classmethod
    def collect(cls, schema: Any) -> Names:
        names = cls({})
        names._walk(schema, "")
        return names

    def _walk(self, schema: Any, namespace: str) -> None:
        if isinstance(schema, list):
            for branch in schema:
                self._walk(branch, namespace)
            return
        if not isinstance(schema, dict):
            return
        kind = schema.get("type")
        if kind in ("record", "error", "enum", "fixed"):
            name = str(schema["name"])
            ns = str(schema.get("namespace", namespace)) if "." not in name else name.rpartition(".")[0]
            short = name.rpartition(".")[2]
            full = f"{ns}.{short}" if ns else short
            self.types.setdefault(full, schema)
            self.types.setdefault(short, schema)
            if kind in ("record", "error"):
                for field in schema.get("fields", []):
                    self._walk(field["type"], ns)
            return
        if kind == "array":
            self._walk(schema.get("items"), namespace)
        elif kind == "map":
            self._walk(schema.get("values"), namespace)
        elif isinstance(kind, (dict, list)):
            self._walk(kind, namespace)

    def resolve(self, schema: Any) -> Any:
        """Replace a reference to a named type by its definition; unwrap ``{"type": <other schema>}``.

        A dict whose type is a primitive is kept as is: it may carry a ``logicalType``.
        """
        while True:
            if isinstance(schema, str):
                if schema in PRIMITIVES:
                    return schema
                found = self.types.get(schema) or self.types.get(schema.rpartition(".")[2])
                if found is None:
                    raise UnsupportedSchema(f"unknown named type {schema!r}")
                return found
            if not isinstance(schema, dict):
                return schema
            inner = schema.get("type")
            if isinstance(inner, str) and (inner in PRIMITIVES or inner in _COMPLEX):
                return schema
            schema = inner


_COMPLEX = frozenset({"record", "error", "enum", "fixed", "array", "map"})


def type_name(schema: Any) -> str:
    """The Avro kind of a resolved schema: a primitive name, record, enum, fixed, array, map or union."""
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return "union"
    kind = schema.get("type")
    return "record" if kind == "error" else str(kind)


def compile_encoder(schema: Any, names: Names | None = None) -> Encoder:
    """An encoder for any value of ``schema`` (any Avro type; raises ``UnsupportedSchema`` if unknown)."""
    names = names or Names.collect(schema)
    return _Compiler(names).compile(schema)


def compile_record_encoder(schema: Any, unique_strings: frozenset[str] = frozenset()) -> RecordEncoder:
    """The body encoder of a top-level record schema (no wire header), specialised as one function.

    The function is generated (as ``dataclasses`` and ``namedtuple`` do): strings, enums,
    booleans and optional values are encoded inline, other fields call their closure. Field
    names never enter the source text; they are bound as constants. String fields are
    memoised (ids repeat) except those named in ``unique_strings`` (event ids).
    """
    names = Names.collect(schema)
    resolved = names.resolve(schema)
    if type_name(resolved) != "record":
        raise UnsupportedSchema("the top-level schema must be a record")
    compiler = _Compiler(names)
    env: dict[str, Any] = {
        "L": encode_long,
        "SM": _SMALL,
        "OFF": _SMALL_LIMIT,
        "LIMIT": _SMALL_LIMIT,
        "MG": _STRINGS.get,
        "MS": encode_string_memo,
    }
    body: list[str] = []
    parts: list[str] = []
    for i, f in enumerate(resolved["fields"]):
        env[f"n{i}"] = str(f["name"])
        field_schema = names.resolve(f["type"])
        kind = type_name(field_schema)
        if kind == "string" and env[f"n{i}"] in unique_strings:
            body.append(f"    s{i} = r[n{i}].encode()")
            parts.append(f"(SM[len(s{i}) + OFF] if len(s{i}) < LIMIT else L(len(s{i}))), s{i}")
        elif kind == "string":
            parts.append(f"(MS(v{i}) if (m{i} := MG(v{i} := r[n{i}])) is None else m{i})")
        elif kind in ("int", "long"):
            parts.append(f"L(r[n{i}])")
        elif kind == "boolean":
            parts.append(f"(b'\\x01' if r[n{i}] else b'\\x00')")
        elif kind == "enum":
            env[f"t{i}"] = {str(sym): encode_long(j) for j, sym in enumerate(field_schema["symbols"])}
            parts.append(f"t{i}[r[n{i}]]")
        elif (
            kind == "union"
            and len(field_schema) == 2
            and "null" in [type_name(names.resolve(b)) for b in field_schema]
        ):
            null_index = [type_name(names.resolve(b)) for b in field_schema].index("null")
            env[f"z{i}"], env[f"p{i}"] = encode_long(null_index), encode_long(1 - null_index)
            env[f"e{i}"] = compiler.compile(field_schema[1 - null_index])
            parts.append(f"(z{i} if (v{i} := r[n{i}]) is None else p{i} + e{i}(v{i}))")
        elif kind == "null":
            continue
        else:
            env[f"e{i}"] = compiler.compile(field_schema)
            parts.append(f"e{i}(r[n{i}])")
    source = "\n".join(
        ["def encode_record(r):", *body, f"    return b''.join(({', '.join(parts)}{',' if parts else ''}))"]
    )
    exec(compile(source, f"<avro encoder {resolved.get('name', '')}>", "exec"), env)  # noqa: S102
    encoder: RecordEncoder = env["encode_record"]
    return encoder


class _Compiler:
    def __init__(self, names: Names) -> None:
        self._names = names
        self._records: dict[int, list[Encoder]] = {}  # id(schema) -> cell, for recursive records

    def compile(self, schema: Any) -> Encoder:  # noqa: PLR0911 - one branch per Avro kind
        schema = self._names.resolve(schema)
        kind = type_name(schema)
        if kind in PRIMITIVES:
            return _PRIMITIVE_ENCODERS[kind]
        if kind == "union":
            return self._union(schema)
        if kind == "record":
            return self._record(schema)
        if kind == "enum":
            index = {str(sym): encode_long(i) for i, sym in enumerate(schema["symbols"])}
            return index.__getitem__
        if kind == "fixed":
            return _encode_fixed
        if kind == "array":
            return _array_encoder(self.compile(schema["items"]))
        if kind == "map":
            return _map_encoder(self.compile(schema["values"]))
        raise UnsupportedSchema(f"unsupported Avro type {kind!r}")

    def _record(self, schema: dict[str, Any]) -> Encoder:
        key = id(schema)
        if key in self._records:  # a recursive reference: late-bound through the cell
            late = self._records[key]
            return lambda value: late[0](value)  # noqa: PLW0108 - cell[0] is bound after this returns
        cell: list[Encoder] = []
        self._records[key] = cell
        fields = tuple((str(f["name"]), self.compile(f["type"])) for f in schema["fields"])

        def encode_record(record: Any) -> bytes:
            return b"".join([enc(record[name]) for name, enc in fields])

        cell.append(encode_record)
        return encode_record

    def _union(self, branches: list[Any]) -> Encoder:
        resolved = [self._names.resolve(b) for b in branches]
        kinds = [type_name(b) for b in resolved]
        if len(kinds) == 2 and "null" in kinds:
            null_index = kinds.index("null")
            other = 1 - null_index
            null_tag, other_tag = encode_long(null_index), encode_long(other)
            enc = self.compile(resolved[other])

            def encode_optional(value: Any) -> bytes:
                return null_tag if value is None else other_tag + enc(value)

            return encode_optional
        options = tuple(
            (_matcher(b, self._names), encode_long(i), self.compile(b)) for i, b in enumerate(resolved)
        )

        def encode_union(value: Any) -> bytes:
            for matches, tag, enc in options:
                if matches(value):
                    return tag + enc(value)
            raise ValueError(f"{value!r} matches no branch of the union {kinds}")

        return encode_union


def _encode_fixed(value: Any) -> bytes:
    return bytes(value)


def _array_encoder(items: Encoder) -> Encoder:
    def encode_array(value: Any) -> bytes:
        if not value:
            return b"\x00"
        return encode_long(len(value)) + b"".join([items(v) for v in value]) + b"\x00"

    return encode_array


def _map_encoder(values: Encoder) -> Encoder:
    def encode_map(value: Any) -> bytes:
        if not value:
            return b"\x00"
        body = b"".join([encode_string(k) + values(v) for k, v in value.items()])
        return encode_long(len(value)) + body + b"\x00"

    return encode_map


def _matcher(schema: Any, names: Names) -> Callable[[Any], bool]:  # noqa: PLR0911
    """Whether a Python value belongs to one union branch (first matching branch wins)."""
    kind = type_name(schema)
    if kind == "null":
        return lambda v: v is None
    if kind == "boolean":
        return lambda v: isinstance(v, bool)
    if kind == "int":
        return lambda v: isinstance(v, int) and not isinstance(v, bool) and INT32_MIN <= v <= INT32_MAX
    if kind == "long":
        return lambda v: isinstance(v, int) and not isinstance(v, bool)
    if kind in ("float", "double"):
        return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    if kind == "string":
        return lambda v: isinstance(v, str)
    if kind == "enum":
        symbols = frozenset(schema["symbols"])
        return lambda v: isinstance(v, str) and v in symbols
    if kind == "bytes":
        return lambda v: isinstance(v, (bytes, bytearray))
    if kind == "fixed":
        size = int(schema["size"])
        return lambda v: isinstance(v, (bytes, bytearray)) and len(v) == size
    if kind == "array":
        return lambda v: isinstance(v, (list, tuple))
    if kind == "map":
        return lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v)
    if kind == "record":
        wanted = frozenset(str(f["name"]) for f in schema["fields"])
        return lambda v: isinstance(v, dict) and frozenset(v) == wanted
    raise UnsupportedSchema(f"unsupported union branch {kind!r}")
