"""Arrow schemas of archived events, derived from a source's Avro schema.

Logical types are stripped first, exactly as the job decodes (``timestamp-millis`` stays an int of
ms). Mapping: ``boolean`` -> bool, ``int``/``long`` -> int64 (one type, so an ``int`` -> ``long``
promotion between registry versions keeps one column type), ``float``/``double`` -> float64,
``string``/``enum`` -> string, ``bytes``/``fixed`` -> binary, arrays -> list, maps -> map<string,
T>, records -> struct, ``["null", T]`` -> T (nullable). Unions of several non-null types have no
faithful Arrow type: they are stored as JSON text (bytes as ``{"$bytes": hex}``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa

from feature_store.adapters.avro_wire import strip_logical_types
from feature_store.core.model import Source

PARTITION_COLUMN = "_partition"
OFFSET_COLUMN = "_offset"
RESERVED = (PARTITION_COLUMN, OFFSET_COLUMN)

_PRIMITIVES: dict[str, pa.DataType] = {
    "null": pa.null(),
    "boolean": pa.bool_(),
    "int": pa.int64(),
    "long": pa.int64(),
    "float": pa.float64(),
    "double": pa.float64(),
    "string": pa.string(),
    "bytes": pa.binary(),
}

Converter = Callable[[Any], Any]


def _identity(value: Any) -> Any:
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return {"$bytes": bytes(value).hex()}
    return repr(value)


def _to_json(value: Any) -> Any:
    return None if value is None else json.dumps(value, default=_json_default, sort_keys=True)


class _Mapper:
    def __init__(self) -> None:
        self.named: dict[str, Any] = {}

    def register(self, schema: dict[str, Any]) -> None:
        name = schema.get("name")
        if isinstance(name, str):
            namespace = schema.get("namespace")
            self.named[name] = schema
            self.named[name.rsplit(".", 1)[-1]] = schema
            if isinstance(namespace, str) and "." not in name:
                self.named[f"{namespace}.{name}"] = schema

    def map(self, avro: Any) -> tuple[pa.DataType, bool, Converter]:
        """(arrow type, nullable, converter from the fastavro value)."""
        if isinstance(avro, str):
            if avro in _PRIMITIVES:
                return _PRIMITIVES[avro], avro == "null", _identity
            if avro in self.named:
                return self._complex(self.named[avro], register=False)
            raise ValueError(f"unknown Avro type {avro!r}")
        if isinstance(avro, list):
            members = [m for m in avro if m != "null"]
            if len(members) == 1:
                arrow, _, convert = self.map(members[0])
                return arrow, True, convert
            if not members:
                return pa.null(), True, _identity
            for m in members:  # register named members so later references resolve
                if isinstance(m, dict):
                    self.map(m)
            return pa.string(), "null" in avro, _to_json
        if isinstance(avro, dict):
            return self._complex(avro, register=True)
        raise ValueError(f"unsupported Avro schema {avro!r}")

    def _complex(  # noqa: PLR0911 - one return per Avro shape
        self, avro: dict[str, Any], *, register: bool
    ) -> tuple[pa.DataType, bool, Converter]:
        kind = avro.get("type")
        if register and kind in ("record", "error", "enum", "fixed"):
            self.register(avro)
        if kind in ("record", "error"):
            fields = []
            converters: list[tuple[str, Converter]] = []
            for f in avro["fields"]:
                arrow, nullable, convert = self.map(f["type"])
                fields.append(pa.field(f["name"], arrow, nullable=nullable))
                if convert is not _identity:
                    converters.append((f["name"], convert))
            if not converters:
                return pa.struct(fields), False, _identity

            def convert_record(value: Any) -> Any:
                if value is None:
                    return None
                out = dict(value)
                for name, conv in converters:
                    out[name] = conv(out.get(name))
                return out

            return pa.struct(fields), False, convert_record
        if kind == "enum":
            return pa.string(), False, _identity
        if kind == "fixed":
            return pa.binary(), False, _identity
        if kind == "array":
            item, nullable, convert = self.map(avro["items"])
            arrow = pa.list_(pa.field("item", item, nullable=nullable))
            if convert is _identity:
                return arrow, False, _identity
            return arrow, False, lambda v: None if v is None else [convert(x) for x in v]
        if kind == "map":
            value, nullable, convert = self.map(avro["values"])
            arrow = pa.map_(pa.string(), pa.field("value", value, nullable=nullable))
            return arrow, False, lambda v: None if v is None else [(k, convert(x)) for k, x in v.items()]
        if isinstance(kind, str | list | dict):
            return self.map(kind)
        raise ValueError(f"unsupported Avro schema {avro!r}")


class EventSchema:
    """The Arrow schema of one source's archived events and how to build columns from records."""

    def __init__(self, source: Source) -> None:
        raw = strip_logical_types(json.loads(source.schema_json))
        mapper = _Mapper()
        mapper.register(raw)  # a field may refer to the record itself
        fields: list[pa.Field] = []
        converters: list[Converter] = []
        for spec in raw["fields"]:
            name = spec["name"]
            if name in RESERVED:
                raise ValueError(f"source {source.name!r}: field name {name!r} is reserved by the archive")
            arrow, _, convert = mapper.map(spec["type"])
            # every top-level column is nullable: files of several schema versions are read together
            fields.append(pa.field(name, arrow, nullable=True))
            converters.append(convert)
        self.source = source
        self.names: tuple[str, ...] = tuple(f.name for f in fields)
        self.converters: tuple[Converter, ...] = tuple(converters)
        self.fields: tuple[pa.Field, ...] = tuple(fields)
        self.schema = pa.schema(
            [
                *fields,
                pa.field(PARTITION_COLUMN, pa.int32(), False),
                pa.field(OFFSET_COLUMN, pa.int64(), False),
            ]
        )

    def new_columns(self) -> list[list[Any]]:
        return [[] for _ in range(len(self.names) + 2)]

    def append(self, columns: list[list[Any]], record: dict[str, Any], partition: int, offset: int) -> None:
        for i, (name, convert) in enumerate(zip(self.names, self.converters, strict=True)):
            value = record.get(name)
            columns[i].append(value if convert is _identity else convert(value))
        columns[-2].append(partition)
        columns[-1].append(offset)

    def table(self, columns: Sequence[list[Any]]) -> pa.Table:
        arrays = [pa.array(col, type=field.type) for col, field in zip(columns, self.schema, strict=True)]
        return pa.Table.from_arrays(arrays, schema=self.schema)


DEAD_LETTER_SCHEMA = pa.schema(
    [
        pa.field("reason", pa.string()),
        pa.field("message", pa.string()),
        pa.field("topic", pa.string()),
        pa.field("partition", pa.int32()),
        pa.field("offset", pa.int64()),
        pa.field("event_time", pa.int64()),  # decoded from the payload when possible
        pa.field("payload", pa.binary()),
        pa.field("_dlq_timestamp_ms", pa.int64()),
        pa.field(PARTITION_COLUMN, pa.int32(), False),  # of the dead-letter topic
        pa.field(OFFSET_COLUMN, pa.int64(), False),
    ]
)


def dead_letter_table(columns: Sequence[list[Any]]) -> pa.Table:
    arrays = [pa.array(col, type=f.type) for col, f in zip(columns, DEAD_LETTER_SCHEMA, strict=True)]
    return pa.Table.from_arrays(arrays, schema=DEAD_LETTER_SCHEMA)
