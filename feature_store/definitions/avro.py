"""Avro schemas of sources: loading ``.avsc`` files, field types, fingerprints, compatibility.

Field types are mapped to :class:`~feature_store.core.model.ValueType`: ``boolean`` -> bool,
``int``/``long`` -> int64 (logical dates and times included), ``float``/``double`` -> float64,
``string``/``enum``/``uuid`` -> string, ``bytes``/``fixed``/``decimal`` -> bytes, arrays of
those -> lists, and ``["null", T]`` -> T, nullable. Other shapes (maps, nested records,
multi-type unions) are kept as unsupported fields: the schema is valid, but features cannot
read them, and the error says why.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from fastavro.schema import parse_schema, to_parsing_canonical_form

from feature_store.core.model import ValueType

_PRIMITIVES: dict[str, ValueType | None] = {
    "null": None,
    "boolean": ValueType.BOOL,
    "int": ValueType.INT64,
    "long": ValueType.INT64,
    "float": ValueType.FLOAT64,
    "double": ValueType.FLOAT64,
    "string": ValueType.STRING,
    "bytes": ValueType.BYTES,
}


class AvroSchemaError(ValueError):
    """A schema that cannot be used; ``line``/``column`` point into the .avsc file when known."""

    def __init__(self, message: str, line: int = 1, column: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


@dataclass(frozen=True, slots=True)
class AvroField:
    name: str
    type: ValueType | None  # None: a shape features cannot read (see ``unsupported``)
    nullable: bool
    avro_type: str  # a short human spelling, e.g. "long (timestamp-millis)", "union[null,string]"
    logical_type: str | None
    has_default: bool
    unsupported: str = ""  # why ``type`` is None


@dataclass(frozen=True, slots=True)
class AvroSchemaInfo:
    name: str
    schema_json: str  # the schema as written, normalised: sorted keys, no whitespace
    fingerprint: str  # first 4 bytes of sha256 of the parsing canonical form, as 8 hex chars
    fields: tuple[AvroField, ...]

    def field(self, name: str) -> AvroField | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None

    @property
    def field_types(self) -> dict[str, ValueType]:
        return {f.name: f.type for f in self.fields if f.type is not None}


def load_avsc(path: Path) -> AvroSchemaInfo:
    """Read and analyse an ``.avsc`` file; raise ``AvroSchemaError`` (``FileNotFoundError`` if absent)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise AvroSchemaError(f"schema file is not UTF-8 text: {exc.reason}") from None
    except IsADirectoryError:
        raise AvroSchemaError("schema path is a directory, not an .avsc file") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AvroSchemaError(f"invalid JSON in Avro schema: {exc.msg}", exc.lineno, exc.colno) from None
    return analyse_schema(raw)


def analyse_schema(raw: object) -> AvroSchemaInfo:
    """Validate an Avro schema (a JSON value) that must be a record, and describe its fields."""
    if not isinstance(raw, dict) or raw.get("type") != "record":
        raise AvroSchemaError('the Avro schema of a source must be a record ({"type": "record", ...})')
    if not isinstance(raw.get("fields"), list):
        raise AvroSchemaError("the Avro record has no 'fields' list")
    named: dict[str, Any] = {}
    try:
        parsed = cast(dict[str, Any], parse_schema(raw, named_schemas=named))
        canonical = to_parsing_canonical_form(raw)
    except Exception as exc:  # fastavro raises a zoo of exception types for bad schemas
        # one line: the parser quotes names from the file as they are (newlines and all)
        detail = str(exc).encode("unicode_escape").decode("ascii")
        raise AvroSchemaError(f"invalid Avro schema: {type(exc).__name__}: {detail}") from None
    fields: list[AvroField] = []
    seen: set[str] = set()
    for spec in parsed["fields"]:
        name = str(spec["name"])
        if name in seen:
            raise AvroSchemaError(f"invalid Avro schema: duplicate field {name!r}")
        seen.add(name)
        fields.append(_describe_field(name, spec["type"], "default" in spec, named))
    return AvroSchemaInfo(
        name=str(parsed.get("name", "")),
        schema_json=json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
        fingerprint=schema_fingerprint(canonical),
        fields=tuple(fields),
    )


def schema_fingerprint(parsing_canonical_form: str) -> str:
    """First 4 bytes of the sha256 of the canonical form: the Confluent wire-format schema id."""
    return hashlib.sha256(parsing_canonical_form.encode("utf-8")).digest()[:4].hex()


def schema_id(fingerprint: str) -> int:
    """The fingerprint as the 4-byte big-endian integer written after the magic byte."""
    return int(fingerprint, 16)


def _describe_field(name: str, avro: object, has_default: bool, named: Mapping[str, Any]) -> AvroField:
    avro = _resolve(avro, named)
    if isinstance(avro, list):
        members = [_resolve(m, named) for m in avro]
        non_null = [m for m in members if m != "null"]
        spelled = "union[" + ",".join(_spell(m) for m in members) + "]"
        if len(non_null) != 1:
            return AvroField(
                name, None, "null" in members, spelled, None, has_default, "unions of several types"
            )
        inner = _describe_field(name, non_null[0], has_default, named)
        return AvroField(
            name,
            inner.type,
            len(non_null) < len(members),
            spelled,
            inner.logical_type,
            has_default,
            inner.unsupported,
        )
    value_type, logical, why = _classify(avro, named)
    return AvroField(name, value_type, False, _spell(avro), logical, has_default, why)


def _classify(  # noqa: PLR0911 - one return per Avro type shape
    avro: object, named: Mapping[str, Any]
) -> tuple[ValueType | None, str | None, str]:
    avro = _resolve(avro, named)
    if isinstance(avro, str):
        if avro == "null":
            return None, None, "the null type"
        return _PRIMITIVES.get(avro), None, "" if avro in _PRIMITIVES else f"type {avro}"
    if isinstance(avro, dict):
        kind = avro.get("type")
        logical = avro.get("logicalType")
        logical = logical if isinstance(logical, str) else None
        if kind == "enum":
            return ValueType.STRING, logical, ""
        if kind == "fixed":
            return ValueType.BYTES, logical, ""
        if kind == "array":
            item, _, why = _classify(avro.get("items"), named)
            if item is None or item.value.endswith("_list"):
                return None, None, f"arrays of {why or 'lists'}"
            return item.as_list(), None, ""
        if kind in ("map", "record", "error"):
            return None, None, f"{kind}s"
        if isinstance(kind, str):
            base, _, why = _classify(kind, named)
            return base, logical, why
    return None, None, f"type {_spell(avro)}"


def _resolve(avro: object, named: Mapping[str, Any]) -> object:
    if isinstance(avro, str) and avro not in _PRIMITIVES and avro in named:
        return named[avro]
    return avro


def _spell(avro: object) -> str:  # noqa: PLR0911 - one return per Avro type shape
    if isinstance(avro, str):
        return avro
    if isinstance(avro, list):
        return "union[" + ",".join(_spell(m) for m in avro) + "]"
    if isinstance(avro, dict):
        kind = avro.get("type")
        logical = avro.get("logicalType")
        if kind == "array":
            return f"array<{_spell(avro.get('items'))}>"
        if kind in ("enum", "fixed", "record") and "name" in avro:
            return f"{kind} {str(avro['name']).rsplit('.', 1)[-1]}"
        if isinstance(logical, str):
            return f"{_spell(kind)} ({logical})"
        return _spell(kind)
    return str(avro)
