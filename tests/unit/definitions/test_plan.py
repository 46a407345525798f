"""Plans between registries; the text rendering is compared with golden files.

Regenerate the golden files after an intended change with::

    FSTORE_REGEN_GOLDEN=1 .venv/bin/pytest tests/unit/definitions/test_plan.py
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from feature_store.core.model import Registry
from feature_store.definitions.compiler import load_registry
from feature_store.definitions.plan import Action, Level, Plan, plan_registry
from tests.unit.definitions.helpers import CLICKS_SCHEMA, defs, write_registry

GOLDEN = Path(__file__).parent / "golden"
REGEN_ENV = "FSTORE_REGEN_GOLDEN"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.txt"
    if os.environ.get(REGEN_ENV) == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"missing golden file {path}; run with {REGEN_ENV}=1 to create it"
    assert text == path.read_text(encoding="utf-8"), f"plan differs from {path} (regenerate: {REGEN_ENV}=1)"


def schema_with(*, fields: list[dict[str, object]] | None = None, drop: str | None = None) -> str:
    schema = json.loads(json.dumps(CLICKS_SCHEMA))
    schema["fields"] = [f for f in schema["fields"] if f["name"] != drop] + (fields or [])
    return json.dumps(schema, indent=2)


def compile_minimal(tmp_path: Path, name: str, **files: str) -> Registry:
    return load_registry(write_registry(tmp_path / name, files))


@pytest.fixture
def base(tmp_path: Path) -> Registry:
    return replace(compile_minimal(tmp_path, "base"), version=1)


def test_initial_plan(tmp_path: Path) -> None:
    plan = plan_registry(None, compile_minimal(tmp_path, "new"))
    assert plan.old_version is None
    assert {c.action for c in plan.changes} == {Action.ADD}
    assert not plan.has_breaking
    check_golden("initial", plan.render())


def test_no_changes(base: Registry, tmp_path: Path) -> None:
    plan = plan_registry(base, compile_minimal(tmp_path, "same"))
    assert plan.is_empty
    assert not plan.has_breaking
    check_golden("no_changes", plan.render())


def test_safe_changes(base: Registry, tmp_path: Path) -> None:
    text = defs(
        ("    source: clicks\n", "    source: clicks\n    ttl: 30d\n    description: Clicks of a user.\n"),
        (
            "        windows: [1h, 24h]\n",
            "        windows: [1h, 24h, 7d]\n        description: All clicks.\n",
        ),
        (
            "feature_services:\n",
            "      - name: pages\n        aggregation: count_distinct\n        field: page\n"
            "        windows: [24h]\nfeature_services:\n",
        ),
        (
            "      - user_clicks:spend_7d\n",
            "      - user_clicks:spend_7d\n      - user_clicks:clicks_7d\n"
            "  - name: svc_pages\n    features: [user_clicks:pages_24h]\n",
        ),
        ("    event_time: ts\n", "    event_time: ts\n    watermark_delay: 10s\n"),
    )
    nullable = schema_with(fields=[{"name": "country", "type": ["null", "string"], "default": None}])
    plan = plan_registry(
        base, compile_minimal(tmp_path, "new", **{"defs.yaml": text, "clicks.avsc": nullable})
    )
    assert not plan.has_breaking, plan.render()
    check_golden("safe_changes", plan.render())


def test_breaking_changes(base: Registry, tmp_path: Path) -> None:
    text = defs(
        ("        aggregation: count\n", "        aggregation: count\n        where: referrer != null\n"),
        ("granularity: 1d", "granularity: 1h"),
        ("    topic: events.clicks\n", "    topic: events.clicks_v2\n"),
    )
    required = schema_with(fields=[{"name": "session_id", "type": "string"}])
    plan = plan_registry(
        base, compile_minimal(tmp_path, "new", **{"defs.yaml": text, "clicks.avsc": required})
    )
    assert plan.has_breaking
    assert not plan.has_errors
    breaking = {(c.kind, c.name) for c in plan.breaking}
    assert breaking == {
        ("source", "clicks"),
        ("feature", "user_clicks:clicks_1h"),
        ("feature", "user_clicks:clicks_24h"),
        ("feature", "user_clicks:spend_7d"),
    }
    feature = next(c for c in plan.changes if c.name == "user_clicks:spend_7d")
    assert feature.suggestion == "add a new feature name, e.g. spend_v2, and move services to it"
    check_golden("breaking_changes", plan.render())


def test_schema_changes(base: Registry, tmp_path: Path) -> None:
    # 'amount' is read by feature spend: removing it breaks; 'referrer' is unused: safe
    text = defs(("        field: amount\n", "        field: cents\n"))
    schema = schema_with(drop="amount", fields=[{"name": "cents", "type": ["null", "long"], "default": None}])
    schema = schema.replace('"name": "referrer"', '"name": "referer"')
    plan = plan_registry(base, compile_minimal(tmp_path, "new", **{"defs.yaml": text, "clicks.avsc": schema}))
    source = next(c for c in plan.changes if c.kind == "source")
    assert source.level is Level.BREAKING
    assert "schema: removed field 'amount', read by feature user_clicks:spend" in source.details
    assert "schema: removed unused field 'referrer'" in source.details
    check_golden("schema_changes", plan.render())


@pytest.mark.parametrize(
    ("old_type", "new_type", "level"),
    [
        ("int", "long", Level.SAFE),
        ("long", ["null", "long"], Level.SAFE),
        (["null", "long"], "long", Level.BREAKING),
        ("long", "double", Level.BREAKING),  # int64 -> float64 changes the feature's type
    ],
)
def test_field_type_changes(tmp_path: Path, old_type: object, new_type: object, level: Level) -> None:
    def schema(amount_type: object) -> str:
        fields = [
            {"name": "amount", "type": amount_type} if f["name"] == "amount" else f
            for f in CLICKS_SCHEMA["fields"]
        ]
        return json.dumps({**CLICKS_SCHEMA, "fields": fields})

    old = compile_minimal(tmp_path, "old", **{"clicks.avsc": schema(old_type)})
    new = compile_minimal(tmp_path, "new", **{"clicks.avsc": schema(new_type)})
    source = next(c for c in plan_registry(old, new).changes if c.kind == "source")
    assert source.level is level, source


def test_removals(base: Registry, tmp_path: Path) -> None:
    text = defs(
        ("      - user_clicks:spend_7d\n", ""),
        (
            "      - name: spend\n        aggregation: sum\n        field: amount\n"
            '        where: page == "checkout"\n        windows: [{length: 7d, granularity: 1d}]\n',
            "",
        ),
        ("        windows: [1h, 24h]\n", "        windows: [1h]\n"),
    )
    plan = plan_registry(base, compile_minimal(tmp_path, "new", **{"defs.yaml": text}))
    removed = {c.name: c.level for c in plan.changes if c.action is Action.REMOVE}
    assert removed == {"user_clicks:clicks_24h": Level.BREAKING, "user_clicks:spend_7d": Level.BREAKING}
    service = next(c for c in plan.changes if c.kind == "service")
    assert service.level is Level.BREAKING
    assert service.suggestion.startswith("add a new service version (e.g. svc_v2)")
    check_golden("removals", plan.render())


def test_removed_feature_still_used_is_an_error(base: Registry) -> None:
    view = base.view("user_clicks")
    broken = replace(base, views=(replace(view, features=view.features[:1]),), version=None)
    plan = plan_registry(base, broken)
    assert plan.has_errors
    errors = {(c.kind, c.name) for c in plan.changes if c.level is Level.ERROR}
    assert errors == {("feature", "user_clicks:spend_7d"), ("service", "svc")}
    check_golden("errors", plan.render())


def test_removing_a_view_and_service(base: Registry) -> None:
    plan = plan_registry(base, replace(base, views=(), services=(), sources=(), entities=(), version=None))
    assert [(c.kind, c.action, c.level) for c in plan.changes] == [
        ("entity", Action.REMOVE, Level.SAFE),
        ("source", Action.REMOVE, Level.SAFE),
        ("view", Action.REMOVE, Level.BREAKING),
        ("service", Action.REMOVE, Level.BREAKING),
    ]


def test_whitespace_in_predicates_is_not_a_change(base: Registry, tmp_path: Path) -> None:
    text = defs(('where: page == "checkout"', "where: page   ==   'checkout'"))
    plan = plan_registry(base, compile_minimal(tmp_path, "new", **{"defs.yaml": text}))
    assert not plan.has_breaking
    assert [c.level for c in plan.changes] == [Level.SAFE]


def test_plan_json(base: Registry, tmp_path: Path) -> None:
    text = defs(("granularity: 1d", "granularity: 1h"))
    plan: Plan = plan_registry(base, compile_minimal(tmp_path, "new", **{"defs.yaml": text}))
    data = json.loads(plan.to_json())
    assert data["old_version"] == 1
    assert data["summary"] == {"add": 0, "change": 1, "remove": 0, "breaking": 1, "errors": 0}
    assert data["changes"][0]["details"] == ["granularity: 1d -> 1h"]
    assert data["changes"][0]["breaking"] is True


def test_example_registry_against_nothing(example_registry_dir: Path) -> None:
    plan = plan_registry(None, load_registry(example_registry_dir))
    assert not plan.has_breaking
    assert plan.count(Action.ADD) > 20
