"""Avro events in the Confluent wire format, and dead-letter records for those that fail.

Wire format: magic byte 0, a 4-byte big-endian schema id, then the Avro binary
body. Without a Schema Registry the id is the source's schema fingerprint (the
first 4 bytes of the sha256 of the schema's canonical form), so producer and job
agree through the applied registry alone. With a Confluent-compatible Schema
Registry configured, other ids are looked up there and decoded with that writer
schema, resolved to the source's schema (see ``adapters.schema_registry``).

Decoding reads logical types as their physical values (timestamp-millis stays an
int of ms): the job works in integer milliseconds and skips datetime objects.
"""

from __future__ import annotations

import base64
import io
import json
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import fastavro

from feature_store.adapters.schema_registry import SchemaRegistryClient
from feature_store.core.model import Source

MAGIC = 0
_HEADER = struct.Struct(">bI")


class DeadLetterReason(StrEnum):
    NOT_FRAMED = "not_confluent_framed"
    UNKNOWN_SCHEMA = "unknown_schema_id"
    SCHEMA_MISMATCH = "schema_mismatch"
    UNDECODABLE = "undecodable"
    MISSING_EVENT_TIME = "missing_event_time"
    MISSING_ENTITY_KEY = "missing_entity_key"
    TOO_LATE = "later_than_allowed_lateness"


class DecodeError(ValueError):
    def __init__(self, reason: DeadLetterReason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message


def schema_id(source: Source) -> int:
    return int(source.schema_fingerprint, 16)


def strip_logical_types(schema: Any) -> Any:
    """The schema without its ``logicalType`` annotations: values read as their physical types."""
    if isinstance(schema, dict):
        return {k: strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [strip_logical_types(s) for s in schema]
    return schema


def encode(source_schema: Any, sid: int, record: Mapping[str, Any]) -> bytes:
    buf = io.BytesIO()
    buf.write(_HEADER.pack(MAGIC, sid))
    fastavro.schemaless_writer(buf, source_schema, dict(record))
    return buf.getvalue()


@dataclass(frozen=True, slots=True)
class _Known:
    source: str
    schema: Any


@dataclass(frozen=True, slots=True)
class _Evolved:
    """A writer schema from the Schema Registry, resolved to the source's schema on read."""

    writer: Any


class WireDecoder:
    """Decodes the events of one source; knows every registered schema id to tell mismatches apart."""

    def __init__(
        self,
        source: Source,
        all_sources: tuple[Source, ...],
        schema_registry: SchemaRegistryClient | None = None,
    ) -> None:
        self._source = source.name
        self._known: dict[int, _Known] = {}
        for s in all_sources:
            parsed = fastavro.parse_schema(strip_logical_types(json.loads(s.schema_json)))
            self._known[schema_id(s)] = _Known(s.name, parsed)
        self._reader = self._known[schema_id(source)].schema
        self._schema_registry = schema_registry
        self._evolved: dict[int, _Evolved | DecodeError] = {}

    def _from_schema_registry(self, sid: int) -> _Evolved:
        """The writer schema of an id the applied registry does not know (cached, errors too)."""
        cached = self._evolved.get(sid)
        if cached is None:
            cached = self._evolved[sid] = self._lookup(sid)
        if isinstance(cached, DecodeError):
            raise cached
        return cached

    def _lookup(self, sid: int) -> _Evolved | DecodeError:
        if self._schema_registry is None:
            return DecodeError(
                DeadLetterReason.UNKNOWN_SCHEMA, f"schema id {sid} is not in the applied registry"
            )
        text = self._schema_registry.writer_schema(sid)
        if text is None:
            # not cached here: the registry may learn the id later (the client throttles asking)
            raise DecodeError(
                DeadLetterReason.UNKNOWN_SCHEMA,
                f"schema id {sid} is neither in the applied registry nor an Avro schema in the schema "
                f"registry {self._schema_registry.base_url}",
            )
        try:
            writer = fastavro.parse_schema(strip_logical_types(json.loads(text)))
        except Exception as exc:  # any parse failure: the id's schema is unusable here
            return DecodeError(
                DeadLetterReason.SCHEMA_MISMATCH, f"schema id {sid}: unusable writer schema ({exc})"
            )
        return _Evolved(writer)

    def decode(self, data: bytes) -> dict[str, Any]:
        if len(data) < _HEADER.size or data[0] != MAGIC:
            raise DecodeError(
                DeadLetterReason.NOT_FRAMED, f"{len(data)} bytes without the magic byte 0 header"
            )
        sid = _HEADER.unpack_from(data)[1]
        known = self._known.get(sid)
        reader: Any = None  # the writer's own schema: ids of the applied registry
        if known is None:
            writer: Any = self._from_schema_registry(sid).writer
            reader = self._reader
        elif known.source != self._source:
            raise DecodeError(
                DeadLetterReason.SCHEMA_MISMATCH,
                f"schema id {sid} belongs to source {known.source!r}, not {self._source!r}",
            )
        else:
            writer = known.schema
        buf = io.BytesIO(data)
        buf.seek(_HEADER.size)
        try:
            record = fastavro.schemaless_reader(buf, writer, reader)
        except fastavro.read.SchemaResolutionError as exc:
            raise DecodeError(
                DeadLetterReason.SCHEMA_MISMATCH,
                f"schema id {sid} cannot be read as source {self._source!r}: {exc}",
            ) from exc
        except Exception as exc:  # fastavro raises many types on corrupt input
            raise DecodeError(DeadLetterReason.UNDECODABLE, describe_error(exc)) from exc
        if buf.tell() != len(data):
            raise DecodeError(
                DeadLetterReason.UNDECODABLE, f"{len(data) - buf.tell()} trailing bytes after record"
            )
        if not isinstance(record, dict):
            raise DecodeError(DeadLetterReason.UNDECODABLE, "the payload is not an Avro record")
        return record


_OBJECT_REPR = re.compile(r"\s*(?:from\s+)?<[\w.]+ object at 0x[0-9a-fA-F]+>")


def describe_error(exc: Exception) -> str:
    """A decoder's error as a dead letter's message: its type and text, without the object reprs
    some carry (``cannot read float from <_io.BytesIO object at 0x…>``): an address says nothing
    to a reader and differs from one run to the next."""
    text = _OBJECT_REPR.sub("", str(exc))
    if isinstance(exc, EOFError):
        text = f"{text}: the payload ends early" if text else "the payload ends early"
    return f"{type(exc).__name__}: {text}"


def dead_letter(
    reason: DeadLetterReason, message: str, payload: bytes, topic: str, partition: int, offset: int
) -> bytes:
    """The dead-letter record: JSON with the reason, where the event came from and its original bytes."""
    return json.dumps(
        {
            "reason": reason.value,
            "message": message,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "payload_base64": base64.b64encode(payload).decode("ascii"),
        },
        separators=(",", ":"),
    ).encode()


def read_dead_letter(value: bytes) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(value)
    record["payload"] = base64.b64decode(record.pop("payload_base64"))
    return record
