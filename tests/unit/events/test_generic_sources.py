"""Sources the app script does not know still get valid events, filled by type and field name."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import fastavro
import pytest

from feature_store.adapters.avro_wire import WireDecoder, encode, schema_id
from feature_store.core.model import Registry
from feature_store.definitions.compiler import load_registry
from feature_store.events.generator import EventGenerator, EventKind, GeneratedEvent, GeneratorConfig
from tests.unit.events.conftest import START_MS

DATA = Path(__file__).parent / "data"
CONFIG = GeneratorConfig(seed=2, rate=1000.0, users=2_000, start_ms=START_MS, warmup_s=10)

EXTRAS_YAML = """
sources:
  - name: profile_update
    topic: events.profile_update
    schema: profile_update.avsc
    event_time: occurred_at

feature_views:
  - name: user_profile_updates
    entity: user
    source: profile_update
    features:
      - name: profile_updates
        aggregation: count
        windows: [24h]
"""


def registry_with(tmp_path: Path, example_registry_dir: Path, *, keep_example: bool = True) -> Path:
    root = tmp_path / "registry"
    if keep_example:
        shutil.copytree(example_registry_dir, root)
    else:
        root.mkdir()
        for name in ("feature_store.yaml", "entities.yaml"):
            shutil.copy(example_registry_dir / name, root / name)
    (root / "extras").mkdir()
    shutil.copy(DATA / "profile_update.avsc", root / "extras" / "profile_update.avsc")
    (root / "extras" / "extras.yaml").write_text(EXTRAS_YAML)
    return root


def check_round_trip(registry: Registry, events: list[GeneratedEvent]) -> Counter[str]:
    decoders = {s.name: WireDecoder(s, registry.sources) for s in registry.sources}
    schemas = {s.name: fastavro.parse_schema(json.loads(s.schema_json)) for s in registry.sources}
    seen: Counter[str] = Counter()
    for e in events:
        assert e.kind is EventKind.VALID
        assert e.record is not None
        assert decoders[e.source].decode(e.value) == e.record
        assert e.value == encode(schemas[e.source], schema_id(registry.source(e.source)), e.record)
        seen[e.source] += 1
    return seen


def test_a_new_source_in_the_yaml_gets_events(tmp_path: Path, example_registry_dir: Path) -> None:
    registry = load_registry(registry_with(tmp_path, example_registry_dir))
    events = list(EventGenerator(registry, CONFIG).events(max_events=10_000))

    seen = check_round_trip(registry, events)
    assert seen["profile_update"] > 300
    assert set(seen) == {s.name for s in registry.sources}


def test_generic_values_follow_types_and_names(tmp_path: Path, example_registry_dir: Path) -> None:
    registry = load_registry(registry_with(tmp_path, example_registry_dir))
    records = [
        e.record
        for e in EventGenerator(registry, CONFIG).events(max_events=20_000)
        if e.source == "profile_update" and e.record is not None
    ]
    ids = set(EventGenerator(registry, CONFIG).population.ids)

    for r in records:
        assert r["user_id"] in ids  # the actor
        assert r["viewedUserId"] in ids  # a person-like id, camelCase
        assert r["viewedUserId"] != r["user_id"]
        assert r["device_id"].startswith("device-")  # not a person: an opaque id
        assert abs(r["occurred_at"] - START_MS) < 60_000  # the event time field named in the YAML
        assert START_MS - 60_000 <= r["occurred_at"] <= START_MS + 20_000
        assert 18 <= r["age"] < 70
        assert 0.0 <= r["match_ratio"] <= 1.0
        assert r["status"] in ("active", "away", "banned")
        assert len(r["avatar_hash"]) == 4
        assert set(r["home"]) == {"lat", "lon"}
        assert -90 <= r["home"]["lat"] <= 90
        assert r["nothing"] is None
    nullable = [r["country"] for r in records]
    assert 0.1 < sum(c is None for c in nullable) / len(nullable) < 0.4  # nullable unions: sometimes null
    assert {type(r["anything"]) for r in records} >= {type(None), str, int, bool}
    assert len({r["event_id"] for r in records}) == len(records)


def test_a_registry_without_scripted_sources_still_gets_events(
    tmp_path: Path, example_registry_dir: Path
) -> None:
    registry = load_registry(registry_with(tmp_path, example_registry_dir, keep_example=False))
    events = list(EventGenerator(registry, CONFIG).events(max_events=2_000))

    assert check_round_trip(registry, events) == {"profile_update": 2_000}


def test_a_scripted_source_with_a_changed_schema_falls_back_per_field(
    tmp_path: Path, example_registry_dir: Path
) -> None:
    root = registry_with(tmp_path, example_registry_dir)
    like_path, request_path = root / "matching" / "like.avsc", root / "matching" / "match_request.avsc"
    like = json.loads(like_path.read_text())
    like["fields"] = [f for f in like["fields"] if f["name"] != "super_like"]  # a scripted field is gone
    like["fields"].append({"name": "comment", "type": ["null", "string"], "default": None})  # a new one
    like_path.write_text(json.dumps(like))
    request = json.loads(request_path.read_text())
    for f in request["fields"]:
        if f["name"] == "surface":  # the script's symbols no longer fit
            f["type"] = {"type": "enum", "name": "Surface", "symbols": ["home", "search"]}
        if f["name"] == "platform":  # the script's null no longer fits
            f["type"] = "string"
            del f["default"]
    request_path.write_text(json.dumps(request))
    matching = root / "matching" / "matching.yaml"
    matching.write_text(matching.read_text().replace("where: super_like", "where: user_id != ''"))
    registry = load_registry(root)
    events = list(EventGenerator(registry, CONFIG).events(max_events=10_000))

    check_round_trip(registry, events)
    likes = [e.record for e in events if e.source == "like" and e.record is not None]
    requests = [e.record for e in events if e.source == "match_request" and e.record is not None]
    assert len(likes) > 100
    assert all("super_like" not in r for r in likes)
    assert {r["comment"] is None for r in likes} == {True, False}
    assert {r["surface"] for r in requests} == {"home", "search"}
    assert {r["platform"] for r in requests} == {"ios", "android", "web"}
    assert all(r["user_id"] != r["target_id"] for r in requests)  # the rest is still scripted


def test_an_empty_registry_is_refused(tmp_path: Path, example_registry_dir: Path) -> None:
    registry = load_registry(registry_with(tmp_path, example_registry_dir, keep_example=False))
    empty = Registry(registry.project, registry.entities, (), (), ())

    with pytest.raises(ValueError, match="no sources"):
        EventGenerator(empty, CONFIG)
