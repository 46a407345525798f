from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from feature_store.core.model import Registry
from feature_store.core.ports import RegistrySnapshot
from feature_store.definitions.compiler import load_registry
from feature_store.definitions.snapshot import (
    SnapshotError,
    content_fingerprint,
    registry_fingerprint,
    registry_from_json,
    registry_from_snapshot,
    registry_to_json,
)


@pytest.fixture(scope="module")
def example(example_registry_dir: Path) -> Registry:
    return load_registry(example_registry_dir)


def test_round_trip_is_equal(example: Registry) -> None:
    text = registry_to_json(example)
    assert registry_from_json(text) == example
    assert registry_to_json(registry_from_json(text)) == text


def test_json_is_deterministic_and_sorted(example: Registry, example_registry_dir: Path) -> None:
    text = registry_to_json(example)
    assert registry_to_json(load_registry(example_registry_dir)) == text
    data = json.loads(text)
    assert list(data) == sorted(data)
    assert data["format"] == 1
    assert "version" not in data


def test_version_is_not_content(example: Registry) -> None:
    applied = replace(example, version=7)
    assert registry_fingerprint(applied) == registry_fingerprint(example)
    assert registry_from_json(registry_to_json(applied), version=7) == applied


def test_fingerprint_is_sha256_of_text(example: Registry) -> None:
    text = registry_to_json(example)
    assert registry_fingerprint(example) == content_fingerprint(text)
    assert len(content_fingerprint(text)) == 64


def test_snapshot_is_checked_against_its_fingerprint(example: Registry) -> None:
    text = registry_to_json(example)
    good = RegistrySnapshot(3, 0, "me", "", text, content_fingerprint(text))
    assert registry_from_snapshot(good).version == 3
    with pytest.raises(SnapshotError, match="corrupt"):
        registry_from_snapshot(replace(good, content_json=text.replace("matchchat", "other")))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("not json", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ('{"format": 99}', "unsupported registry snapshot format"),
        ('{"format": 1, "project": "p", "entities": {}}', "registry.entities: unexpected dict"),
        (
            '{"format": 1, "project": "p", "entities": [{"name": "e", "join_keys": [["k", "nope"]],'
            ' "description": "", "owner": ""}], "sources": [], "views": [], "services": []}',
            "unknown value 'nope'",
        ),
    ],
)
def test_bad_snapshots_raise_snapshot_error(text: str, fragment: str) -> None:
    with pytest.raises(SnapshotError, match=fragment):
        registry_from_json(text)
