"""The generator's compiled Avro encoder writes exactly fastavro's bytes."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feature_store.events.avro_codec import (
    UnsupportedSchema,
    compile_encoder,
    compile_record_encoder,
    encode_long,
    encode_string,
    encode_string_memo,
)


def reference(schema: Any, value: Any) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), value)
    return buf.getvalue()


LONG = {"type": "record", "name": "L", "fields": [{"name": "v", "type": "long"}]}
STRING = {"type": "record", "name": "S", "fields": [{"name": "v", "type": "string"}]}


@pytest.mark.parametrize(
    "n", [0, 1, -1, 63, -64, 64, 8191, -8192, 8192, -8193, 1 << 20, 1_767_225_600_000, 2**63 - 1, -(2**63)]
)
def test_longs_at_the_edges(n: int) -> None:
    assert encode_long(n) == reference(LONG, {"v": n})


@settings(max_examples=300, deadline=None)
@given(st.integers(-(2**63), 2**63 - 1), st.text(max_size=300))
def test_longs_and_strings(n: int, s: str) -> None:
    assert encode_long(n) == reference(LONG, {"v": n})
    assert encode_string(s) == reference(STRING, {"v": s}) == encode_string_memo(s)


KITCHEN_SINK: dict[str, Any] = {
    "type": "record",
    "name": "Sink",
    "namespace": "t",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "n", "type": "int"},
        {"name": "big", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "b", "type": "boolean"},
        {"name": "raw", "type": "bytes"},
        {"name": "nothing", "type": "null"},
        {"name": "color", "type": {"type": "enum", "name": "Color", "symbols": ["red", "green"]}},
        {"name": "color2", "type": ["null", "Color"]},
        {"name": "opt_after", "type": ["string", "null"]},
        {"name": "multi", "type": ["null", "string", "long", "boolean", "double"]},
        {"name": "str_or_enum", "type": ["Color", "string"]},
        {"name": "hash", "type": {"type": "fixed", "name": "H", "size": 3}},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "counts", "type": {"type": "map", "values": "long"}},
        {
            "name": "point",
            "type": {"type": "record", "name": "P", "fields": [{"name": "x", "type": "double"}]},
        },
        {"name": "maybe_point", "type": ["null", "P", {"type": "map", "values": "int"}]},
        {"name": "long_text", "type": "string"},
    ],
}


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {
            "color2": "green",
            "opt_after": None,
            "multi": "x",
            "str_or_enum": "blue",
            "maybe_point": {"x": 2.0},
        },
        {"multi": 12, "maybe_point": {"a": 1, "b": -2}, "tags": [], "counts": {}},
        {"multi": True, "n": -(2**31), "big": -5},
        {"multi": 2.5, "n": 2**31 - 1, "raw": b"", "long_text": "ü" * 9000},
    ],
)
def test_the_record_encoder_matches_fastavro(overrides: dict[str, Any]) -> None:
    record = {
        "id": "019b76da-a777-780b-87b9-7dafac59d156",
        "n": 42,
        "big": 1_767_225_600_123,
        "f": 1.5,
        "d": -3.25e10,
        "b": True,
        "raw": b"\x00\xff",
        "nothing": None,
        "color": "red",
        "color2": None,
        "opt_after": "here",
        "multi": None,
        "str_or_enum": "green",
        "hash": b"abc",
        "tags": ["a", "bb"],
        "counts": {"k": 1, "l": -(2**40)},
        "point": {"x": 0.5},
        "maybe_point": None,
        "long_text": "short",
        **overrides,
    }
    assert compile_record_encoder(KITCHEN_SINK)(record) == reference(KITCHEN_SINK, record)


def test_recursive_records() -> None:
    node = {
        "type": "record",
        "name": "Node",
        "fields": [{"name": "v", "type": "long"}, {"name": "next", "type": ["null", "Node"]}],
    }
    value = {"v": 1, "next": {"v": 2, "next": {"v": 3, "next": None}}}

    assert compile_record_encoder(node)(value) == reference(node, value)


def test_a_value_outside_every_branch_is_an_error() -> None:
    encoder = compile_encoder(["null", "long", "string"])

    with pytest.raises(ValueError, match="matches no branch"):
        encoder(b"bytes")


def test_unknown_named_types_and_non_records_are_refused() -> None:
    with pytest.raises(UnsupportedSchema, match="unknown named type"):
        compile_encoder({"type": "record", "name": "R", "fields": [{"name": "x", "type": "Missing"}]})
    with pytest.raises(UnsupportedSchema, match="must be a record"):
        compile_record_encoder("long")
