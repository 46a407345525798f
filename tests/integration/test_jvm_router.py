"""The job's JVM router (jobs/jvm ``EventRouter``) routes exactly as the Python router.

Random records of a source whose fields cover every Avro shape (unions, enums, fixed, arrays,
maps, nested records, float and double, unicode) and whose views use every SQL-merged IR and
every kind of predicate, plus broken records (bit flips, truncation, trailing bytes, other
schema ids, no framing, null keys, NaN) and late ones, go through the JVM router (its stdin
harness) and, for what it hands over, through the Python router as the job wires them. The
result must equal the Python router's alone, record for record: the same one-event IR rows
(:meth:`SourceTilesSql.route`) or the same dead letter, byte for byte. One JVM, no services.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from feature_store.adapters.avro_wire import _HEADER, MAGIC, dead_letter, encode, schema_id
from feature_store.core.model import Registry
from feature_store.definitions.compiler import load_registry
from feature_store.stream.jvm_route import NotRoutable, route_plan
from feature_store.stream.tile_sql import SourceTilesSql
from feature_store.stream.tile_writer import NO_WATERMARK, DeadLetter, EventRouter
from tests.integration.test_jvm_tile_encoder import _field, run_harness

pytestmark = pytest.mark.integration

MINUTE = 60_000
T0 = 1_700_000_000_000

SCHEMA = {
    "type": "record",
    "name": "Ev",
    "namespace": "test.events",
    "fields": [
        {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "user_id", "type": ["null", "string"], "default": None},
        {"name": "peer", "type": "long"},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "n", "type": "long"},
        {"name": "m", "type": ["null", "int"], "default": None},
        {"name": "x", "type": ["null", "double"], "default": None},
        {"name": "f32", "type": "float"},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["a", "b", "c"]}},
        {"name": "attrs", "type": {"type": "map", "values": "long"}},
        {"name": "flag", "type": "boolean"},
        {"name": "country", "type": "string"},
        {"name": "blob", "type": "bytes"},
        {"name": "fx", "type": {"type": "fixed", "name": "Four", "size": 4}},
        {
            "name": "inner",
            "type": {
                "type": "record",
                "name": "Inner",
                "fields": [
                    {"name": "k", "type": "test.events.Kind"},
                    {"name": "z", "type": ["null", "Four"]},
                ],
            },
        },
        {"name": "kind2", "type": ["null", "Kind"], "default": None},
    ],
}

WHERES = [
    "n > 10",
    "0 <= n < 25 and not flag",
    "x >= 0.5",
    "x < n",
    "m == null or m > -3",
    "m != null and m in [1, 2, 3]",
    "kind in ['a', 'c']",
    "kind not in ['b']",
    "country > 'FR'",
    "country <= 'é'",
    "blob < b'\\\\x80'",  # YAML double quotes: the predicate reads b'\\x80'
    "blob == b''",
    "fx != null and f32 > 0.25",
    "n == 3.0 or x == 3",
    "flag == true",
    "flag",
    "not (n > 5 or kind2 == 'b')",
    "kind2 != null",
    "user_id >= 'u3'",
]

COUNTS = "".join(
    f'      - {{name: c{i}, aggregation: count, where: "{w}", windows: [{{length: 1h, granularity: 5m}}]}}\n'
    for i, w in enumerate(WHERES)
)
VIEWS = f"""
sources:
  - name: ev
    topic: test.ev
    schema: ev.avsc
    event_time: event_time
    allowed_lateness: 10m
    filter: country != "XX"
feature_views:
  - name: counts
    entity: user
    source: ev
    features:
{COUNTS}
  - name: values
    entity: user
    source: ev
    features:
      - {{name: n_sum, aggregation: sum, field: n, windows: [1h]}}
      - {{name: m_min, aggregation: min, field: m, windows: [1h]}}
      - {{name: m_max, aggregation: max, field: m, where: "kind != 'a'"}}
      - {{name: n_avg, aggregation: avg, field: n, windows: [{{length: 2h, granularity: 1h}}]}}
      - {{name: m_count, aggregation: count, field: m, windows: [1h]}}
  - name: distinct
    entity: peer
    source: ev
    features:
      - {{name: kinds, aggregation: count_distinct, field: kind, windows: [1h]}}
      - {{name: blobs, aggregation: count_distinct, field: blob, windows: [1h]}}
      - {{name: ns, aggregation: count_distinct, field: n}}
      - {{name: users, aggregation: count_distinct, field: user_id, windows: [1h]}}
  - name: lasts
    entity: pair
    source: ev
    features:
      - {{name: last_x, aggregation: last, field: x, windows: [1h]}}
      - {{name: last_country, aggregation: last, field: country}}
      - {{name: recent_blobs, aggregation: last_n, n: 3, field: blob, windows: [1h]}}
      - {{name: last_flag, aggregation: last, field: flag, where: "n > 3"}}
      - {{name: last_m, aggregation: last, field: m}}
      - {{name: recent_fx, aggregation: last_n, n: 2, field: fx}}
"""

ENTITIES = """
entities:
  - name: user
    join_keys: [{name: user_id, type: string}]
  - name: peer
    join_keys: [{name: peer, type: int64}]
  - name: pair
    join_keys: [{name: user_id, type: string}, {name: peer, type: int64}]
"""


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    root = tmp_path_factory.mktemp("registry")
    (root / "feature_store.yaml").write_text("project: jvmroute\n")
    (root / "entities.yaml").write_text(ENTITIES)
    (root / "ev.yaml").write_text(VIEWS)
    (root / "ev.avsc").write_text(json.dumps(SCHEMA))
    return load_registry(root)


def plan_of(registry: Registry) -> SourceTilesSql:
    return SourceTilesSql(registry, "ev", "ks", range(len(registry.views_of_source("ev"))))


TEXTS = ["", "FR", "XX", "DE", "é", "zz", "\U0001f600", "\uff41", "\ud7ff", "GB"]


def random_event(rng: random.Random) -> dict[str, Any]:
    floats = [None, 0.0, -0.0, 0.5, 3.0, -2.25, 1e300, math.inf, -math.inf, 7.0, 2.5e-320, math.nan]
    return {
        "event_time": T0 + rng.randrange(-30 * MINUTE, 30 * MINUTE),
        "user_id": rng.choice([None, ""]) if rng.random() < 0.04 else rng.choice(["u1", "u3", "u9", "ü"]),
        "peer": rng.choice([0, -1, 7, 2**62, -(2**63)]),
        "tags": [rng.choice(TEXTS) for _ in range(rng.randrange(3))],
        "n": rng.choice([-5, 0, 3, 4, 11, 24, 25, 2**63 - 1, -(2**63)]),
        "m": rng.choice([None, -3, -2, 1, 3, 2**31 - 1, -(2**31)]),
        "x": rng.choice(floats),
        "f32": rng.choice([0.0, 0.25, 0.3, -1.5, 1e30]),
        "kind": rng.choice("abc"),
        "attrs": {rng.choice(TEXTS): rng.randrange(-9, 9) for _ in range(rng.randrange(3))},
        "flag": rng.random() < 0.5,
        "country": rng.choice(TEXTS),
        "blob": rng.choice([b"", b"\x00", b"\x7f", b"\x80\x01", bytes(range(20))]),
        "fx": rng.choice([b"abcd", b"\xff\x00\xff\x00"]),
        "inner": {"k": rng.choice("abc"), "z": rng.choice([None, b"wxyz"])},
        "kind2": rng.choice([None, "a", "b"]),
    }


def broken(rng: random.Random, good: bytes, other_id: int) -> bytes:
    how = rng.randrange(6)
    if how == 0:  # a bit flip in the body
        data = bytearray(good)
        i = rng.randrange(5, len(data))
        data[i] ^= 1 << rng.randrange(8)
        return bytes(data)
    if how == 1:
        return good[: rng.randrange(len(good))]
    if how == 2:
        return good + b"\x00"
    if how == 3:
        return _HEADER.pack(MAGIC, other_id) + good[5:]
    if how == 4:
        return b"\x01" + good[1:]
    return bytes(rng.randrange(256) for _ in range(rng.randrange(40)))


def python_result(router: EventRouter, plan: SourceTilesSql, record: tuple[bytes, int, int, int]) -> str:
    payload, partition, offset, watermark = record
    result = router.route(payload, partition, offset, watermark)
    if isinstance(result, DeadLetter):
        return (
            "D;" + dead_letter(result.reason, result.message, payload, "test.ev", partition, offset).decode()
        )
    rows = [plan.route(r) for r in result]
    return "R;" + "|".join(_field(r) for r in rows if r is not None)


def test_the_jvm_router_routes_every_record_as_the_python_router(registry: Registry) -> None:
    plan = plan_of(registry)
    source = registry.source("ev")
    schema = json.loads(source.schema_json)
    sid = schema_id(source)
    rng = random.Random(3)
    records: list[tuple[bytes, int, int, int]] = []
    offsets = [0, 0]
    watermark = NO_WATERMARK
    newest = T0 - 30 * MINUTE
    for i in range(4000):
        event = random_event(rng)
        if rng.random() < 0.05:  # late: well behind the newest event so far
            event["event_time"] = newest - rng.randrange(5 * MINUTE, 30 * MINUTE)
        else:
            event["event_time"] = newest = newest + rng.randrange(-2 * MINUTE, 3 * MINUTE)
        payload = encode(schema, sid, event)
        if rng.random() < 0.1:
            payload = broken(rng, payload, sid ^ 1)
        if i % 50 == 0:
            watermark = newest - 5 * MINUTE
        partition = rng.randrange(2)
        records.append((payload, partition, offsets[partition], watermark))
        offsets[partition] += 1

    got = run_harness(
        "EventRouter",
        [json.dumps(route_plan(registry, "ev", plan))]
        + [f"{p.hex()};{part};{off};{w}" for p, part, off, w in records],
    )[: len(records)]

    alone = EventRouter(registry, "ev")
    behind = EventRouter(registry, "ev")  # the job's Python router behind the JVM one
    kinds = {"R": 0, "D": 0, "F": 0}
    for record, jvm in zip(records, got, strict=True):
        want = python_result(alone, plan, record)
        kind, _, rest = jvm.partition(";")
        kinds[kind] += 1
        if kind == "F":
            behind.observe(record[1], int(rest))
        assert (python_result(behind, plan, record) if kind == "F" else jvm) == want, record
    # the JVM routed the bulk itself and judged some events late
    assert kinds["R"] > 3000, kinds
    assert kinds["D"] > 20, kinds
    assert 200 < kinds["F"] < 800, kinds


def test_a_source_the_jvm_cannot_route_says_why(tmp_path: Path, registry: Registry) -> None:
    plan = SourceTilesSql(registry, "ev", "ks", [0])
    with pytest.raises(NotRoutable, match="Python keyed path"):
        route_plan(registry, "ev", plan)
