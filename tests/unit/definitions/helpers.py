"""A small valid registry, written into a temporary folder, for error and fuzz tests."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PROJECT_YAML = "project: demo\nowner: team@example.com\n"

# Line numbers matter: tests point at them.
DEFS_YAML = """\
entities:
  - name: user
    join_keys:
      - {name: user_id, type: string}
sources:
  - name: clicks
    topic: events.clicks
    schema: clicks.avsc
    event_time: ts
feature_views:
  - name: user_clicks
    entity: user
    source: clicks
    features:
      - name: clicks
        aggregation: count
        windows: [1h, 24h]
      - name: spend
        aggregation: sum
        field: amount
        where: page == "checkout"
        windows: [{length: 7d, granularity: 1d}]
feature_services:
  - name: svc
    features:
      - user_clicks:clicks_1h
      - user_clicks:spend_7d
"""

CLICKS_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Click",
    "fields": [
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "user_id", "type": "string"},
        {"name": "page", "type": "string"},
        {"name": "amount", "type": "long"},
        {"name": "referrer", "type": ["null", "string"], "default": None},
    ],
}
CLICKS_AVSC = json.dumps(CLICKS_SCHEMA, indent=2) + "\n"

MINIMAL: dict[str, str] = {
    "feature_store.yaml": PROJECT_YAML,
    "defs.yaml": DEFS_YAML,
    "clicks.avsc": CLICKS_AVSC,
}


def write_registry(root: Path, files: Mapping[str, str | None] | None = None) -> Path:
    """MINIMAL with ``files`` overriding (None deletes a file), written under ``root``."""
    content: dict[str, str | None] = {**MINIMAL, **(files or {})}
    root.mkdir(parents=True, exist_ok=True)
    for name, text in content.items():
        if text is None:
            continue
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def defs(*replacements: tuple[str, str]) -> str:
    """DEFS_YAML with each ``(old, new)`` replaced (``old`` must occur)."""
    text = DEFS_YAML
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text
