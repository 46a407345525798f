"""Schema ids resolved through a Confluent-compatible Schema Registry.

Confluent's Schema Registry is not on the package registries this project installs from, so the
tests run a small HTTP server speaking its read API (``GET /schemas/ids/{id}``, JSON answers and
404 for unknown ids) over a real socket; the client and decoder under test are the real ones.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import fastavro
import pytest

from feature_store.adapters.avro_wire import DeadLetterReason, DecodeError, WireDecoder, encode
from feature_store.adapters.schema_registry import SchemaRegistryClient, SchemaRegistryConfig
from tests.unit.adapters.test_avro_wire import ALL, LIKE, REPORT

# a newer version of the like schema: one more field, with a default (backward compatible)
LIKE_V2 = {
    "type": "record",
    "name": "like",
    "fields": [
        {"name": "user_id", "type": "string"},
        {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "client", "type": "string", "default": "web"},
    ],
}
# renames user_id away: cannot be read as the registry's like schema
LIKE_BROKEN = {
    "type": "record",
    "name": "like",
    "fields": [{"name": "uid", "type": "string"}, {"name": "event_time", "type": "long"}],
}


class _Registry(ThreadingHTTPServer):
    schemas: dict[int, Any]
    requests: list[str]
    down: bool


class _Handler(BaseHTTPRequestHandler):
    server: _Registry

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        if self.server.down:
            self.send_error(503)
            return
        prefix = "/schemas/ids/"
        sid = int(self.path[len(prefix) :]) if self.path.startswith(prefix) else -1
        schema = self.server.schemas.get(sid)
        if schema is None:
            body = json.dumps({"error_code": 40403, "message": "Schema not found"}).encode()
            self.send_response(404)
        else:
            answer = (
                schema
                if isinstance(schema, dict) and "schemaType" in schema
                else {"schema": json.dumps(schema)}
            )
            body = json.dumps(answer).encode()
            self.send_response(200)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def registry() -> Iterator[_Registry]:
    server = _Registry(("127.0.0.1", 0), _Handler)
    server.schemas = {
        101: LIKE_V2,
        102: LIKE_BROKEN,
        103: json.loads(REPORT.schema_json),
        104: {"schemaType": "PROTOBUF", "schema": "syntax = 'proto3';"},
    }
    server.requests = []
    server.down = False
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def client(server: _Registry, **kw: Any) -> SchemaRegistryClient:
    host, port = server.server_address[:2]
    return SchemaRegistryClient(SchemaRegistryConfig(f"http://{host!s}:{port}", **kw))


def framed(schema: Any, sid: int, record: dict[str, Any]) -> bytes:
    return encode(fastavro.parse_schema(schema), sid, record)


def test_an_evolved_writer_schema_is_read_as_the_sources_schema(registry: _Registry) -> None:
    decoder = WireDecoder(LIKE, ALL, client(registry))
    data = framed(LIKE_V2, 101, {"user_id": "u1", "event_time": 1_700_000_000_123, "client": "ios"})

    first = decoder.decode(data)
    again = decoder.decode(data)

    assert first == again == {"user_id": "u1", "event_time": 1_700_000_000_123}
    assert registry.requests == ["/schemas/ids/101"]  # looked up once


@pytest.mark.parametrize(
    ("sid", "schema", "record", "reason", "fragment"),
    [
        (102, LIKE_BROKEN, {"uid": "u", "event_time": 1}, DeadLetterReason.SCHEMA_MISMATCH, "cannot be read"),
        (
            103,
            json.loads(REPORT.schema_json),
            {"reason": "spam", "event_time": 1},
            DeadLetterReason.SCHEMA_MISMATCH,
            "cannot be read",
        ),
        (104, LIKE_V2, {"user_id": "u", "event_time": 1}, DeadLetterReason.UNKNOWN_SCHEMA, "schema registry"),
        (999, LIKE_V2, {"user_id": "u", "event_time": 1}, DeadLetterReason.UNKNOWN_SCHEMA, "schema registry"),
    ],
    ids=["incompatible", "other-record", "not-avro", "unknown-id"],
)
def test_ids_the_registry_cannot_resolve_are_dead_letters_with_a_reason(
    registry: _Registry,
    sid: int,
    schema: Any,
    record: dict[str, Any],
    reason: DeadLetterReason,
    fragment: str,
) -> None:
    decoder = WireDecoder(LIKE, ALL, client(registry))

    with pytest.raises(DecodeError) as caught:
        decoder.decode(framed(schema, sid, record))

    assert caught.value.reason is reason
    assert fragment in caught.value.message
    assert str(sid) in caught.value.message


def test_without_a_schema_registry_foreign_ids_stay_unknown(registry: _Registry) -> None:
    with pytest.raises(DecodeError) as caught:
        WireDecoder(LIKE, ALL).decode(framed(LIKE_V2, 101, {"user_id": "u", "event_time": 1}))

    assert caught.value.reason is DeadLetterReason.UNKNOWN_SCHEMA
    assert registry.requests == []


def test_unknown_ids_are_asked_again_only_after_the_negative_ttl(registry: _Registry) -> None:
    schemas = client(registry, negative_ttl_s=3600)

    assert schemas.writer_schema(555) is None
    assert schemas.writer_schema(555) is None
    assert registry.requests == ["/schemas/ids/555"]
    assert client(registry, negative_ttl_s=0).writer_schema(555) is None


def test_an_unreachable_registry_is_waited_for_not_dead_lettered(registry: _Registry) -> None:
    registry.down = True
    schemas = client(registry, retry_interval_s=0.05)
    threading.Timer(0.3, lambda: setattr(registry, "down", False)).start()

    text = schemas.writer_schema(101)

    assert text is not None
    assert json.loads(text) == LIKE_V2
    assert len(registry.requests) >= 2  # failed at least once, then answered


def test_credentials_go_in_a_header_and_never_into_the_logged_url() -> None:
    schemas = SchemaRegistryClient(SchemaRegistryConfig("https://svc:s3cret@sr.example:8081/base/"))

    assert schemas.base_url == "https://sr.example:8081/base"
    with pytest.raises(ValueError, match="http"):
        SchemaRegistryClient(SchemaRegistryConfig("sr.example:8081"))


def test_the_applied_registry_still_wins_for_its_own_ids(registry: _Registry) -> None:
    like = framed(
        json.loads(LIKE.schema_json), int(LIKE.schema_fingerprint, 16), {"user_id": "u", "event_time": 5}
    )

    assert WireDecoder(LIKE, ALL, client(registry)).decode(like) == {"user_id": "u", "event_time": 5}
    assert registry.requests == []
