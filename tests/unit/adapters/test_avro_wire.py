from __future__ import annotations

import hashlib
import json

import fastavro
import pytest

from feature_store.adapters.avro_wire import (
    DeadLetterReason,
    DecodeError,
    WireDecoder,
    dead_letter,
    describe_error,
    encode,
    read_dead_letter,
    schema_id,
)
from feature_store.core.model import Source, SourceField, ValueType


def make_source(name: str, fields: list[dict[str, object]]) -> Source:
    schema = {"type": "record", "name": name, "fields": fields}
    text = json.dumps(schema, sort_keys=True)
    return Source(
        name=name,
        topic=f"events.{name}",
        schema_path=f"{name}.avsc",
        schema_json=text,
        schema_fingerprint=hashlib.sha256(text.encode()).hexdigest()[:8],
        event_time_field="event_time",
        watermark_delay_ms=5000,
        allowed_lateness_ms=60000,
        fields=(
            SourceField("user_id", ValueType.STRING, False),
            SourceField("event_time", ValueType.INT64, False),
        ),
    )


LIKE = make_source(
    "like",
    [
        {"name": "user_id", "type": "string"},
        {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    ],
)
REPORT = make_source(
    "report",
    [{"name": "reason", "type": "string"}, {"name": "event_time", "type": "long"}],
)
ALL = (LIKE, REPORT)


def like_bytes(record: dict[str, object]) -> bytes:
    return encode(fastavro.parse_schema(json.loads(LIKE.schema_json)), schema_id(LIKE), record)


def test_decodes_a_framed_event_with_event_time_as_int_millis() -> None:
    data = like_bytes({"user_id": "u1", "event_time": 1_700_000_000_123})

    assert WireDecoder(LIKE, ALL).decode(data) == {"user_id": "u1", "event_time": 1_700_000_000_123}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", DeadLetterReason.NOT_FRAMED),
        (b"\x01\x00\x00\x00\x01body", DeadLetterReason.NOT_FRAMED),
        (b"\x00\xff\xff\xff\xfe\x02a", DeadLetterReason.UNKNOWN_SCHEMA),
    ],
)
def test_rejects_unframed_and_unknown_schema(data: bytes, reason: DeadLetterReason) -> None:
    with pytest.raises(DecodeError) as info:
        WireDecoder(LIKE, ALL).decode(data)
    assert info.value.reason is reason


def test_an_event_of_another_source_is_a_schema_mismatch() -> None:
    data = encode(
        fastavro.parse_schema(json.loads(REPORT.schema_json)),
        schema_id(REPORT),
        {"reason": "spam", "event_time": 1},
    )

    with pytest.raises(DecodeError) as info:
        WireDecoder(LIKE, ALL).decode(data)

    assert info.value.reason is DeadLetterReason.SCHEMA_MISMATCH
    assert "report" in info.value.message


@pytest.mark.parametrize("cut", [1, 3])
def test_truncated_or_padded_bodies_are_undecodable(cut: int) -> None:
    good = like_bytes({"user_id": "user-with-a-long-id", "event_time": 5})
    for bad in (good[:-cut], good + b"\x00" * cut):
        with pytest.raises(DecodeError) as info:
            WireDecoder(LIKE, ALL).decode(bad)
        assert info.value.reason is DeadLetterReason.UNDECODABLE


def test_a_record_that_ends_early_says_so_and_no_object_address() -> None:
    f64 = make_source("f64", [{"name": "x", "type": "double"}, {"name": "event_time", "type": "long"}])
    schema = fastavro.parse_schema(json.loads(f64.schema_json))
    good = encode(schema, schema_id(f64), {"x": 1.5, "event_time": 5})
    messages = set()
    for _ in range(3):  # new decoder objects each time: an address would differ
        with pytest.raises(DecodeError) as info:
            WireDecoder(f64, (f64,)).decode(good[:7])  # the double cut short
        messages.add(info.value.message)
    assert len(messages) == 1
    (message,) = messages
    assert "0x" not in message
    assert "object at" not in message
    assert message.startswith("EOFError: ")
    assert message.endswith("the payload ends early")


def test_an_error_text_keeps_what_it_says_without_object_reprs() -> None:
    assert describe_error(ValueError("bad <foo.Bar object at 0xdeadbeef> here")) == "ValueError: bad here"
    assert describe_error(EOFError()) == "EOFError: the payload ends early"
    assert describe_error(KeyError("x")) == "KeyError: 'x'"


def test_dead_letter_keeps_original_bytes_and_origin() -> None:
    record = read_dead_letter(
        dead_letter(DeadLetterReason.UNDECODABLE, "boom", b"\x00\xffraw", "events.like", 1, 42)
    )

    assert record == {
        "reason": "undecodable",
        "message": "boom",
        "topic": "events.like",
        "partition": 1,
        "offset": 42,
        "payload": b"\x00\xffraw",
    }
