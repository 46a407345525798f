"""Routing in the JVM: the plan the job's JVM router (jobs/jvm ``EventRouter``) follows.

On the SQL path the Python router was the job's bottleneck: decoding, filtering and folding each
event into one-event IRs cost ~100 µs of Python per event in the one embedded interpreter. For a
source whose every view merges in SQL (:mod:`tile_sql`), the JVM routes instead, from a plan this
module writes from the registry:

* **decode**: the source's Avro schema compiled to a small program (the record's fields in
  order, each a type node), read strictly and bounds-checked, reading only the fields the views
  use and skipping the rest (strings are still checked to be valid UTF-8);
* **lateness**: the same rule as :meth:`EventRouter.route` (behind the watermark *and* behind
  the newest event of the partition by more than the allowed lateness); such an event becomes
  the same dead letter;
* **filter and where**: the predicates as trees (:func:`predicate_tree`), with this package's
  semantics;
* **one-event IRs**: the row :meth:`SourceTilesSql.route_split` emits, column for column
  (counts, int64 values, ``avg``'s ``(value, 1)``, the one-event sketch's sparse entry from the
  core's hash, the ``order_key`` and codec bytes of ``last`` / ``last_n`` items).

The Python router stays the authority for everything else: a record the JVM does not route with
certainty (not framed, a schema id other than the source's own, anything its strict reader
refuses, a null event time or entity key, a NaN) goes to the Python router with the partition's
newest event time, which decodes it with fastavro and dead-letters it with the reason, or routes
it (e.g. a Schema Registry id). Every valid event thus gives the same rows whichever side routes
it, and the integration tests hold the two routers row for row equal.
"""

from __future__ import annotations

import json
from typing import Any, Final

from feature_store.adapters.avro_wire import schema_id, strip_logical_types
from feature_store.core.model import AggregationKind, Registry, ValueType
from feature_store.core.predicates import PredicateTreeError, predicate_fields, predicate_tree
from feature_store.stream.tile_sql import SourceTilesSql

_PRIMITIVES: Final = frozenset({"null", "boolean", "int", "long", "float", "double", "string", "bytes"})
_SCALARS: Final = frozenset(
    {ValueType.BOOL, ValueType.INT64, ValueType.FLOAT64, ValueType.STRING, ValueType.BYTES}
)
_KEY_TYPES: Final = frozenset({ValueType.STRING, ValueType.INT64})
_MAX_DEPTH: Final = 32


class NotRoutable(ValueError):
    """Why the JVM cannot route a source (it keeps the Python router)."""


def _type_node(  # noqa: PLR0911 - one return per Avro shape
    schema: Any, names: dict[str, Any], namespace: str, depth: int
) -> dict[str, Any]:
    if depth > _MAX_DEPTH:
        raise NotRoutable("the Avro schema nests too deeply (or is recursive)")
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return {"t": schema}
        full = schema if "." in schema or not namespace else f"{namespace}.{schema}"
        named = names.get(full, names.get(schema))
        if named is None:
            raise NotRoutable(f"unknown Avro type {schema!r}")
        return _type_node(named, names, namespace, depth + 1)
    if isinstance(schema, list):
        return {"t": "union", "branches": [_type_node(s, names, namespace, depth + 1) for s in schema]}
    kind = schema["type"]
    if kind in _PRIMITIVES:
        return {"t": kind}
    if kind == "array":
        return {"t": "array", "items": _type_node(schema["items"], names, namespace, depth + 1)}
    if kind == "map":
        return {"t": "map", "values": _type_node(schema["values"], names, namespace, depth + 1)}
    if kind in ("record", "error", "enum", "fixed"):
        name = schema["name"]
        inner = schema.get("namespace", namespace) if "." not in name else name.rpartition(".")[0]
        full = name if "." in name or not inner else f"{inner}.{name}"
        names[full] = schema
        if kind == "fixed":
            return {"t": "fixed", "size": int(schema["size"])}
        if kind == "enum":
            return {"t": "enum", "symbols": list(schema["symbols"])}
        return {
            "t": "record",
            "fields": [_type_node(f["type"], names, inner, depth + 1) for f in schema["fields"]],
        }
    return _type_node(kind, names, namespace, depth + 1)  # {"type": "SomeNamedType"}


def avro_program(schema_json: str, captured: list[str]) -> dict[str, Any]:
    """The record's fields as type nodes, in order; ``cap`` gives the slot of each captured
    (top-level) field. Logical types are read as their physical values, as the Python decoder
    does."""
    schema = strip_logical_types(json.loads(schema_json))
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise NotRoutable("the source's schema is not a record")
    name = schema["name"]
    namespace = schema.get("namespace", "") if "." not in name else name.rpartition(".")[0]
    names: dict[str, Any] = {name if "." in name or not namespace else f"{namespace}.{name}": schema}
    fields = []
    slots = {n: i for i, n in enumerate(captured)}
    for f in schema["fields"]:
        node = _type_node(f["type"], names, namespace, 1)
        if f["name"] in slots:
            node["cap"] = slots[f["name"]]
        fields.append(node)
    return {"fields": fields}


def _ir(kind: AggregationKind) -> str:
    if kind is AggregationKind.COUNT:
        return "count"
    if kind is AggregationKind.AVG:
        return "avg"
    if kind is AggregationKind.COUNT_DISTINCT:
        return "distinct"
    if kind in (AggregationKind.LAST, AggregationKind.LAST_N):
        return "last"
    return "value"  # int64 sum, min, max


def route_plan(registry: Registry, source_name: str, plan: SourceTilesSql) -> dict[str, Any]:
    """The JVM router's plan for the source; raises :class:`NotRoutable` when the JVM cannot
    route it (views on the Python keyed path, list-typed fields, keys other than string / int64)."""
    source = registry.source(source_name)
    views = registry.views_of_source(source_name)
    if set(plan.view_indices) != set(range(len(views))):
        raise NotRoutable("some of its views keep the Python keyed path")
    types = {f.name: f.type for f in source.fields}
    captured: list[str] = [source.event_time_field]

    def slot(name: str) -> int:
        field_type = types.get(name)
        if field_type not in _SCALARS:
            raise NotRoutable(f"field {name!r} is {field_type.value if field_type else 'unsupported'}")
        if name not in captured:
            captured.append(name)
        return captured.index(name)

    def tree(text: str | None) -> dict[str, Any] | None:
        if text is None:
            return None
        for name in predicate_fields(text):
            slot(name)
        try:
            return predicate_tree(text, {k: v for k, v in types.items() if v is not None})
        except PredicateTreeError as exc:
            raise NotRoutable(str(exc)) from exc

    view_plans = []
    for index in plan.view_indices:
        view = views[index]
        keys = []
        for key in view.entity_key_fields:
            if types.get(key) not in _KEY_TYPES:
                raise NotRoutable(f"entity key field {key!r} is not a string or int64")
            keys.append(slot(key))
        defs = []
        for d in plan.definitions(index):
            field, agg, where = d.definition.field, d.definition.aggregator, d.definition.where
            defs.append(
                {
                    "where": tree(where),
                    "field": None if field is None else slot(field),
                    "ir": _ir(agg.kind),
                    "float": agg.input_type is ValueType.FLOAT64,
                    "at": d.first_input,
                }
            )
        view_plans.append({"index": index, "keys": keys, "defs": defs})
    source_filter = tree(source.filter)
    return {
        "source": source.name,
        "topic": source.topic,
        "schema_id": schema_id(source),
        "lateness_ms": source.allowed_lateness_ms,
        "filter": source_filter,
        "columns": plan.input_count,
        "views": view_plans,
        "avro": avro_program(source.schema_json, captured),
        "fields": captured,  # the captured fields by slot (slot 0: the event time)
    }


__all__ = ["NotRoutable", "avro_program", "route_plan"]
