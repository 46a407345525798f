"""Deterministic JSON for compiled registries: what `fstore apply` stores and runtimes load.

``registry_to_json`` writes sorted keys and a fixed layout, so equal registries give equal text
and equal fingerprints; ``registry_from_json`` reads it back into an equal ``Registry``. The
applied version number is not part of the content (it belongs to the store's snapshot), so
re-applying an old registry produces the same fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from feature_store.core.model import (
    AggregationKind,
    Entity,
    Feature,
    FeatureRef,
    FeatureService,
    FeatureView,
    Registry,
    Source,
    SourceField,
    ValueType,
    Window,
)
from feature_store.core.ports import RegistrySnapshot

FORMAT_VERSION = 1

JsonObject = dict[str, Any]


class SnapshotError(ValueError):
    """Snapshot text that is not a registry this code can read."""


# --- encoding ----------------------------------------------------------------------------------


def _pairs(pairs: tuple[tuple[str, str], ...]) -> list[list[str]]:
    return [[k, v] for k, v in pairs]


def entity_to_dict(e: Entity) -> JsonObject:
    return {
        "name": e.name,
        "join_keys": [[k, t.value] for k, t in e.join_keys],
        "description": e.description,
        "owner": e.owner,
    }


def source_to_dict(s: Source) -> JsonObject:
    return {
        "name": s.name,
        "topic": s.topic,
        "schema_path": s.schema_path,
        "schema_json": s.schema_json,
        "schema_fingerprint": s.schema_fingerprint,
        "event_time_field": s.event_time_field,
        "watermark_delay_ms": s.watermark_delay_ms,
        "allowed_lateness_ms": s.allowed_lateness_ms,
        "fields": [{"name": f.name, "type": f.type.value, "nullable": f.nullable} for f in s.fields],
        "filter": s.filter,
        "dead_letter_topic": s.dead_letter_topic,
        "description": s.description,
        "owner": s.owner,
    }


def window_to_dict(w: Window) -> JsonObject:
    return {"length_ms": w.length_ms, "granularity_ms": w.granularity_ms, "label": w.label}


def feature_to_dict(f: Feature) -> JsonObject:
    return {
        "name": f.name,
        "aggregation": f.aggregation.value,
        "input_field": f.input_field,
        "input_type": f.input_type.value if f.input_type is not None else None,
        "value_type": f.value_type.value,
        "windows": [window_to_dict(w) for w in f.windows],
        "last_n": f.last_n,
        "where": f.where,
        "tags": _pairs(f.tags),
        "description": f.description,
        "owner": f.owner,
    }


def view_to_dict(v: FeatureView) -> JsonObject:
    return {
        "name": v.name,
        "entity": v.entity,
        "source": v.source,
        "entity_key_fields": list(v.entity_key_fields),
        "ttl_ms": v.ttl_ms,
        "features": [feature_to_dict(f) for f in v.features],
        "tags": _pairs(v.tags),
        "description": v.description,
        "owner": v.owner,
        "online": v.online,
    }


def service_to_dict(s: FeatureService) -> JsonObject:
    return {
        "name": s.name,
        "features": [str(r) for r in s.features],
        "description": s.description,
        "owner": s.owner,
        "tags": _pairs(s.tags),
    }


def registry_to_dict(reg: Registry) -> JsonObject:
    return {
        "format": FORMAT_VERSION,
        "project": reg.project,
        "entities": [entity_to_dict(e) for e in reg.entities],
        "sources": [source_to_dict(s) for s in reg.sources],
        "views": [view_to_dict(v) for v in reg.views],
        "services": [service_to_dict(s) for s in reg.services],
    }


def registry_to_json(reg: Registry) -> str:
    """Canonical JSON text of ``reg`` (sorted keys, two-space indent, trailing newline)."""
    return json.dumps(registry_to_dict(reg), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def content_fingerprint(content_json: str) -> str:
    """sha256 (hex) of snapshot text: ``RegistrySnapshot.fingerprint``."""
    return hashlib.sha256(content_json.encode("utf-8")).hexdigest()


def registry_fingerprint(reg: Registry) -> str:
    return content_fingerprint(registry_to_json(reg))


# --- decoding ----------------------------------------------------------------------------------

T = TypeVar("T")


def _get(obj: Mapping[str, Any], key: str, kind: type[T] | tuple[type, ...], where: str) -> T:
    if key not in obj:
        raise SnapshotError(f"{where}: missing {key!r}")
    value = obj[key]
    if isinstance(value, bool) and kind in (int, (int, type(None))):
        raise SnapshotError(f"{where}.{key}: expected {kind}, got a boolean")
    if not isinstance(value, kind):
        raise SnapshotError(f"{where}.{key}: unexpected {type(value).__name__}")
    return value  # type: ignore[return-value]


def _str(obj: Mapping[str, Any], key: str, where: str) -> str:
    return _get(obj, key, str, where)


def _opt_str(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    value: str | None = _get(obj, key, (str, type(None)), where)
    return value


def _int(obj: Mapping[str, Any], key: str, where: str) -> int:
    return _get(obj, key, int, where)


def _opt_int(obj: Mapping[str, Any], key: str, where: str) -> int | None:
    value: int | None = _get(obj, key, (int, type(None)), where)
    return value


def _objects(obj: Mapping[str, Any], key: str, where: str) -> list[Mapping[str, Any]]:
    items = _get(obj, key, list, where)
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise SnapshotError(f"{where}.{key}[{i}]: expected an object")
    return items


def _strings(obj: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    items = _get(obj, key, list, where)
    if not all(isinstance(i, str) for i in items):
        raise SnapshotError(f"{where}.{key}: expected a list of strings")
    return tuple(items)


def _pair_list(obj: Mapping[str, Any], key: str, where: str) -> tuple[tuple[str, str], ...]:
    items = _get(obj, key, list, where)
    out: list[tuple[str, str]] = []
    for item in items:
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)):
            raise SnapshotError(f"{where}.{key}: expected [name, value] pairs")
        out.append((item[0], item[1]))
    return tuple(out)


def _enum(factory: Callable[[str], T], value: str, where: str) -> T:
    try:
        return factory(value)
    except ValueError:
        raise SnapshotError(f"{where}: unknown value {value!r}") from None


def _entity(d: Mapping[str, Any]) -> Entity:
    where = f"entity {d.get('name')!r}"
    keys = _get(d, "join_keys", list, where)
    join_keys: list[tuple[str, ValueType]] = []
    for k in keys:
        if not (isinstance(k, list) and len(k) == 2 and all(isinstance(x, str) for x in k)):
            raise SnapshotError(f"{where}: join_keys must be [name, type] pairs")
        join_keys.append((k[0], _enum(ValueType, k[1], where)))
    return Entity(
        _str(d, "name", where), tuple(join_keys), _str(d, "description", where), _str(d, "owner", where)
    )


def _source(d: Mapping[str, Any]) -> Source:
    where = f"source {d.get('name')!r}"
    fields = tuple(
        SourceField(
            _str(f, "name", where),
            _enum(ValueType, _str(f, "type", where), where),
            _get(f, "nullable", bool, where),
        )
        for f in _objects(d, "fields", where)
    )
    return Source(
        name=_str(d, "name", where),
        topic=_str(d, "topic", where),
        schema_path=_str(d, "schema_path", where),
        schema_json=_str(d, "schema_json", where),
        schema_fingerprint=_str(d, "schema_fingerprint", where),
        event_time_field=_str(d, "event_time_field", where),
        watermark_delay_ms=_int(d, "watermark_delay_ms", where),
        allowed_lateness_ms=_int(d, "allowed_lateness_ms", where),
        fields=fields,
        filter=_opt_str(d, "filter", where),
        dead_letter_topic=_str(d, "dead_letter_topic", where),
        description=_str(d, "description", where),
        owner=_str(d, "owner", where),
    )


def _feature(d: Mapping[str, Any], view: str) -> Feature:
    where = f"feature {view}.{d.get('name')}"
    input_type = _opt_str(d, "input_type", where)
    return Feature(
        name=_str(d, "name", where),
        aggregation=_enum(AggregationKind, _str(d, "aggregation", where), where),
        input_field=_opt_str(d, "input_field", where),
        input_type=_enum(ValueType, input_type, where) if input_type is not None else None,
        value_type=_enum(ValueType, _str(d, "value_type", where), where),
        windows=tuple(
            Window(_opt_int(w, "length_ms", where), _int(w, "granularity_ms", where), _str(w, "label", where))
            for w in _objects(d, "windows", where)
        ),
        last_n=_opt_int(d, "last_n", where),
        where=_opt_str(d, "where", where),
        tags=_pair_list(d, "tags", where),
        description=_str(d, "description", where),
        owner=_str(d, "owner", where),
    )


def _view(d: Mapping[str, Any]) -> FeatureView:
    where = f"feature view {d.get('name')!r}"
    name = _str(d, "name", where)
    return FeatureView(
        name=name,
        entity=_str(d, "entity", where),
        source=_str(d, "source", where),
        entity_key_fields=_strings(d, "entity_key_fields", where),
        ttl_ms=_opt_int(d, "ttl_ms", where),
        features=tuple(_feature(f, name) for f in _objects(d, "features", where)),
        tags=_pair_list(d, "tags", where),
        description=_str(d, "description", where),
        owner=_str(d, "owner", where),
        online=_get(d, "online", bool, where),
    )


def _service(d: Mapping[str, Any]) -> FeatureService:
    where = f"feature service {d.get('name')!r}"
    try:
        refs = tuple(FeatureRef.parse(r) for r in _strings(d, "features", where))
    except ValueError as exc:
        raise SnapshotError(f"{where}: {exc}") from None
    return FeatureService(
        name=_str(d, "name", where),
        features=refs,
        description=_str(d, "description", where),
        owner=_str(d, "owner", where),
        tags=_pair_list(d, "tags", where),
    )


def registry_from_dict(data: Mapping[str, Any], *, version: int | None = None) -> Registry:
    fmt = data.get("format")
    if fmt != FORMAT_VERSION:
        raise SnapshotError(
            f"unsupported registry snapshot format {fmt!r} (this code reads {FORMAT_VERSION})"
        )
    where = "registry"
    return Registry(
        project=_str(data, "project", where),
        entities=tuple(_entity(e) for e in _objects(data, "entities", where)),
        sources=tuple(_source(s) for s in _objects(data, "sources", where)),
        views=tuple(_view(v) for v in _objects(data, "views", where)),
        services=tuple(_service(s) for s in _objects(data, "services", where)),
        version=version,
    )


def registry_from_json(text: str, *, version: int | None = None) -> Registry:
    """Read ``registry_to_json`` output back (``version`` is set on the result when given)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SnapshotError(f"registry snapshot is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SnapshotError("registry snapshot must be a JSON object")
    return registry_from_dict(data, version=version)


def registry_from_snapshot(snapshot: RegistrySnapshot) -> Registry:
    """The registry of an applied version, checked against its fingerprint, with ``version`` set."""
    actual = content_fingerprint(snapshot.content_json)
    if actual != snapshot.fingerprint:
        raise SnapshotError(
            f"registry version {snapshot.version} is corrupt: fingerprint {actual[:12]} "
            f"does not match the recorded {snapshot.fingerprint[:12]}"
        )
    return registry_from_json(snapshot.content_json, version=snapshot.version)
