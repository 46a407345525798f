"""The example registry and the scaffold compile into the expected core.model objects."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
from fastavro.schema import to_parsing_canonical_form

from feature_store.core.model import (
    AggregationKind,
    FeatureRef,
    Registry,
    ValueType,
    Window,
)
from feature_store.definitions.compiler import check_registry, load_registry
from feature_store.definitions.scaffold import scaffold_registry
from tests.unit.definitions.helpers import CLICKS_SCHEMA, write_registry

H = 3_600_000
D = 24 * H


@pytest.fixture(scope="module")
def example(example_registry_dir: Path) -> Registry:
    return load_registry(example_registry_dir)


def _walk(value: object) -> None:
    """Everything compiled is frozen dataclasses, tuples and plain scalars: no pydantic, no lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        assert type(value).__dataclass_params__.frozen  # type: ignore[attr-defined]
        for f in dataclasses.fields(value):
            _walk(getattr(value, f.name))
    elif isinstance(value, tuple):
        for item in value:
            _walk(item)
    else:
        assert value is None or isinstance(value, str | int | bool), type(value)


def test_example_registry_compiles(example: Registry) -> None:
    assert example.project == "matchchat"
    assert {e.name for e in example.entities} == {"user", "user_pair"}
    assert {s.name for s in example.sources} == {
        "match_request",
        "match_accept",
        "chat_message",
        "video_call_end",
        "like",
        "report",
        "purchase",
    }
    assert len(example.views) >= 4
    assert {s.name for s in example.services} >= {"ranking_v1", "abuse_v1"}
    served = sum(len(f.served_names) for v in example.views for f in v.features)
    assert 30 <= served <= 45
    _walk(example)


def test_example_is_sorted_and_services_resolve(example: Registry) -> None:
    for items in (example.entities, example.sources, example.views, example.services):
        names = [i.name for i in items]
        assert names == sorted(names)
    for service in example.services:
        for ref in service.features:
            assert any(ref.feature in f.served_names for f in example.view(ref.view).features)


def test_example_sources(example: Registry) -> None:
    source = example.source("match_accept")
    assert source.topic == "events.match_accept"
    assert source.dead_letter_topic == "events.match_accept.dlq"
    assert source.watermark_delay_ms == 5_000
    assert source.allowed_lateness_ms == 60_000
    assert source.schema_path == "matching/match_accept.avsc"
    assert source.field_type("accepted") is ValueType.BOOL
    assert source.field_type("event_time") is ValueType.INT64
    assert example.source("report").allowed_lateness_ms == 5 * 60_000
    assert example.source("purchase").filter == 'currency == "USD"'
    rating = next(f for f in example.source("video_call_end").fields if f.name == "rating")
    assert rating.nullable
    assert rating.type is ValueType.INT64


def test_example_features(example: Registry) -> None:
    answers = example.view("user_match_answers")
    assert answers.entity_key_fields == ("accepter_id",)
    accepted = answers.features[0]
    assert accepted.served_names == ("matches_accepted_1h", "matches_accepted_24h")
    assert accepted.where == "accepted == true"
    assert accepted.windows == (Window(H, 5 * 60_000, "1h"), Window(D, H, "24h"))

    calls = example.view("user_calls")
    by_name = {f.name: f for f in calls.features}
    assert by_name["call_duration_avg"].value_type is ValueType.FLOAT64
    assert by_name["recent_partners"].aggregation is AggregationKind.LAST_N
    assert by_name["recent_partners"].last_n == 10
    assert by_name["recent_partners"].value_type is ValueType.STRING_LIST
    assert by_name["calls_lifetime"].served_names == ("calls_lifetime",)
    assert by_name["calls_lifetime"].windows[0].is_lifetime
    assert by_name["distinct_partners"].aggregation is AggregationKind.COUNT_DISTINCT

    pair = example.view("pair_calls")
    assert pair.entity == "user_pair"
    assert pair.entity_key_fields == ("user_id", "partner_id")
    assert FeatureRef("pair_calls", "pair_calls_lifetime") in example.service("pair_v1").features


def test_fingerprint_is_the_confluent_schema_id(tmp_path: Path) -> None:
    registry = load_registry(write_registry(tmp_path))
    canonical = to_parsing_canonical_form(CLICKS_SCHEMA)
    expected = hashlib.sha256(canonical.encode()).digest()[:4].hex()
    source = registry.source("clicks")
    assert source.schema_fingerprint == expected
    assert json.loads(source.schema_json) == CLICKS_SCHEMA
    assert source.fields[-1].nullable


def test_defaults_owner_and_entity_keys_by_name(tmp_path: Path) -> None:
    registry = load_registry(write_registry(tmp_path))
    view = registry.view("user_clicks")
    assert view.entity_key_fields == ("user_id",)
    assert view.owner == "team@example.com"
    assert view.ttl_ms is None
    assert registry.service("svc").features == (
        FeatureRef("user_clicks", "clicks_1h"),
        FeatureRef("user_clicks", "spend_7d"),
    )


def test_scaffold_is_valid_and_never_overwrites(tmp_path: Path) -> None:
    root = tmp_path / "My Registry"
    files = scaffold_registry(root)
    assert {f.name for f in files} == {"feature_store.yaml", "example.yaml", "page_view.avsc"}
    registry, errors = check_registry(root)
    assert errors == []
    assert registry is not None
    assert registry.project == "my_registry"
    assert (
        len(registry.entities) == len(registry.sources) == len(registry.views) == len(registry.services) == 1
    )
    with pytest.raises(FileExistsError):
        scaffold_registry(root)


def test_yml_files_in_subfolders_and_hidden_folders_ignored(tmp_path: Path) -> None:
    root = write_registry(tmp_path)
    (root / "more").mkdir()
    (root / "more" / "extra.yml").write_text(
        "entities:\n  - name: account\n    join_keys: [{name: account_id}]\n", encoding="utf-8"
    )
    (root / ".git").mkdir()
    (root / ".git" / "junk.yaml").write_text("this: [is not valid", encoding="utf-8")
    registry = load_registry(root)
    assert {e.name for e in registry.entities} == {"account", "user"}
    assert registry.entity("account").join_keys == (("account_id", ValueType.STRING),)
