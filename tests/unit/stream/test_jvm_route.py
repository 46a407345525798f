"""The JVM router's plan: which sources the JVM routes, and the shapes of what it is given."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from feature_store.core.model import ValueType
from feature_store.core.predicates import PredicateError, PredicateTreeError, predicate_tree
from feature_store.definitions.compiler import load_registry
from feature_store.stream.feature_job import sql_view_indices
from feature_store.stream.jvm_route import NotRoutable, avro_program, route_plan
from feature_store.stream.tile_sql import SourceTilesSql

ROOT = Path(__file__).resolve().parents[3]
TYPES = {
    "n": ValueType.INT64,
    "x": ValueType.FLOAT64,
    "s": ValueType.STRING,
    "b": ValueType.BYTES,
    "f": ValueType.BOOL,
    "tags": ValueType.STRING_LIST,
}


def test_every_source_of_the_example_registry_is_routed_in_the_jvm() -> None:
    registry = load_registry(ROOT / "registry")
    for source in registry.sources:
        indices = sql_view_indices(registry, source.name)
        if not indices:
            continue
        plan = route_plan(registry, source.name, SourceTilesSql(registry, source.name, "ks", indices))
        assert plan["fields"][0] == source.event_time_field
        assert json.loads(json.dumps(plan)) == plan  # plain JSON
        # every captured field is read from exactly one top-level field of the record
        caps = sorted(f["cap"] for f in plan["avro"]["fields"] if "cap" in f)
        assert caps == list(range(len(plan["fields"])))


def test_predicate_trees_spell_out_each_comparison() -> None:
    assert predicate_tree("0 < n <= 1.5 and not f", TYPES) == {
        "and": [
            {
                "and": [
                    {"cmp": "<", "left": {"value": {"int": 0}}, "right": {"field": "n"}},
                    {"cmp": "<=", "left": {"field": "n"}, "right": {"value": {"float": 4609434218613702656}}},
                ]
            },
            {"not": {"flag": "f"}},
        ]
    }
    assert predicate_tree("null != s", TYPES) == {"null": "s", "negate": True}
    assert predicate_tree("s is null", TYPES) == {"null": "s", "negate": False}
    assert predicate_tree("b in [b'a'] or true", TYPES) == {
        "or": [{"cmp": "in", "left": {"field": "b"}, "right": {"values": [{"bytes": "61"}]}}, {"const": True}]
    }


def test_predicates_the_tree_cannot_express_or_that_are_invalid_are_refused() -> None:
    with pytest.raises(PredicateTreeError, match="list"):
        predicate_tree("'vip' in tags", TYPES)
    with pytest.raises(PredicateTreeError, match="int64"):
        predicate_tree("n < 99999999999999999999", TYPES)
    with pytest.raises(PredicateError):
        predicate_tree("n < 's'", TYPES)


def test_avro_programs_resolve_named_types_and_mark_captured_fields() -> None:
    schema = {
        "type": "record",
        "name": "E",
        "namespace": "ns",
        "fields": [
            {"name": "k", "type": {"type": "enum", "name": "K", "symbols": ["a"]}},
            {"name": "k2", "type": ["null", "K"]},
            {"name": "h", "type": {"type": "fixed", "name": "H", "size": 2}},
            {"name": "h2", "type": "ns.H"},
            {"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        ],
    }
    program = avro_program(json.dumps(schema), ["t", "k2"])
    assert program["fields"] == [
        {"t": "enum", "symbols": ["a"]},
        {"t": "union", "branches": [{"t": "null"}, {"t": "enum", "symbols": ["a"]}], "cap": 1},
        {"t": "fixed", "size": 2},
        {"t": "fixed", "size": 2},
        {"t": "long", "cap": 0},
    ]


def test_a_recursive_schema_is_not_routed() -> None:
    schema = {
        "type": "record",
        "name": "Node",
        "fields": [{"name": "next", "type": ["null", "Node"]}],
    }
    with pytest.raises(NotRoutable, match="recursive"):
        avro_program(json.dumps(schema), [])
