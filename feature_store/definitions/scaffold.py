"""`fstore init`: a minimal, valid registry to start from."""

from __future__ import annotations

import json
import re
from pathlib import Path

from feature_store.definitions.specs import check_name

PROJECT_YAML = """\
# The feature registry of project {project}.
# Every *.yaml file below this folder may define entities:, sources:, feature_views: and
# feature_services:. Check with `fstore validate`, preview with `fstore plan`, ship with `fstore apply`.
project: {project}
description: ""
defaults:
  watermark_delay: 5s      # how far event time may run behind the newest event seen
  allowed_lateness: 1m     # later events still update their tiles; older ones go to the DLQ
"""

EXAMPLE_YAML = """\
entities:
  - name: user
    join_keys:
      - {name: user_id, type: string}
    description: A person using the app.

sources:
  - name: page_view
    topic: events.page_view
    schema: page_view.avsc          # relative to this file
    event_time: event_time          # a long of epoch milliseconds
    description: A user looked at a page.

feature_views:
  - name: user_page_views
    entity: user
    source: page_view
    entity_keys: {user_id: user_id} # entity join key -> source field
    ttl: 30d
    features:
      - name: page_views
        aggregation: count
        windows: [1h, 24h]          # served as page_views_1h, page_views_24h
      - name: time_on_page_avg_ms
        aggregation: avg
        field: duration_ms
        windows: [{length: 7d, granularity: 1d}]
      - name: long_views
        aggregation: count
        where: duration_ms >= 30000
        windows: [24h]
      - name: last_page
        aggregation: last
        field: page                 # no windows: lifetime, served as last_page

feature_services:
  - name: example_v1
    description: Everything above, for a first model.
    features:
      - user_page_views:*
"""

PAGE_VIEW_SCHEMA = {
    "type": "record",
    "name": "PageView",
    "namespace": "events",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "user_id", "type": "string"},
        {"name": "page", "type": "string"},
        {"name": "duration_ms", "type": "long"},
        {"name": "referrer", "type": ["null", "string"], "default": None},
    ],
}


def project_name_for(path: Path) -> str:
    """A valid project name derived from a folder name (``My Registry`` -> ``my_registry``)."""
    name = re.sub(r"[^a-z0-9_]+", "_", path.resolve().name.lower()).strip("_")
    if not name or not name[0].isalpha():
        name = f"project_{name}".rstrip("_")
    try:
        return check_name(name[:48])
    except ValueError:
        return "feature_project"


def scaffold_registry(path: Path, project: str | None = None) -> list[Path]:
    """Write a minimal registry into ``path`` (new or empty); never overwrites anything."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"{path} already exists and is not an empty folder; nothing was written")
    name = check_name(project) if project is not None else project_name_for(path)
    files = {
        path / "feature_store.yaml": PROJECT_YAML.format(project=name),
        path / "example.yaml": EXAMPLE_YAML,
        path / "page_view.avsc": json.dumps(PAGE_VIEW_SCHEMA, indent=2) + "\n",
    }
    path.mkdir(parents=True, exist_ok=True)
    for file, text in files.items():
        with file.open("x", encoding="utf-8") as out:
            out.write(text)
    return list(files)
