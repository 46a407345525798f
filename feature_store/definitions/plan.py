"""What applying a registry would change, and which changes break running clients or data.

``plan_registry(old, new)`` is a pure diff of two compiled registries (``old`` is None before the
first apply). Each change is *safe*, *breaking* (it invalidates stored aggregates, or clients that
read what is removed; `apply` refuses it without ``--allow-breaking``) or an *error* (the new
registry itself is inconsistent, e.g. a service still uses a removed feature; never applied).
Breaking changes come with the reason and the usual way to get there without breaking anything.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from feature_store.core.model import (
    Entity,
    Feature,
    FeatureService,
    FeatureView,
    Registry,
    Source,
    Window,
)
from feature_store.core.predicates import PredicateError, canonical_predicate, predicate_fields
from feature_store.definitions.avro import AvroField, AvroSchemaError, analyse_schema
from feature_store.definitions.durations import format_duration


class Action(StrEnum):
    ADD = "add"
    CHANGE = "change"
    REMOVE = "remove"


class Level(StrEnum):
    SAFE = "safe"
    BREAKING = "breaking"
    ERROR = "error"


KINDS = ("project", "entity", "source", "view", "feature", "service")
_SYMBOL = {Action.ADD: "+", Action.CHANGE: "~", Action.REMOVE: "-"}
_KIND_TITLE = {
    "project": "project",
    "entity": "entity",
    "source": "source",
    "view": "feature view",
    "feature": "feature",
    "service": "feature service",
}


@dataclass(frozen=True, slots=True)
class Change:
    kind: str  # one of KINDS
    name: str  # features: "view:served_name"
    action: Action
    level: Level = Level.SAFE
    details: tuple[str, ...] = ()  # e.g. "ttl: 7d -> 30d"
    reason: str = ""  # why it is breaking / an error
    suggestion: str = ""  # how to get there without breaking anything

    @property
    def breaking(self) -> bool:
        return self.level is not Level.SAFE

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "action": self.action.value,
            "level": self.level.value,
            "breaking": self.breaking,
            "details": list(self.details),
            "reason": self.reason,
            "suggestion": self.suggestion,
        }


@dataclass(frozen=True, slots=True)
class Plan:
    project: str
    old_version: int | None  # None: nothing applied yet
    changes: tuple[Change, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.changes

    @property
    def has_breaking(self) -> bool:
        return any(c.breaking for c in self.changes)

    @property
    def has_errors(self) -> bool:
        return any(c.level is Level.ERROR for c in self.changes)

    @property
    def breaking(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.breaking)

    def count(self, action: Action) -> int:
        return sum(1 for c in self.changes if c.action is action)

    def to_dict(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "old_version": self.old_version,
            "summary": {
                "add": self.count(Action.ADD),
                "change": self.count(Action.CHANGE),
                "remove": self.count(Action.REMOVE),
                "breaking": sum(1 for c in self.changes if c.level is Level.BREAKING),
                "errors": sum(1 for c in self.changes if c.level is Level.ERROR),
            },
            "changes": [c.to_dict() for c in self.changes],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def render(self) -> str:
        return render_plan(self)


def render_plan(plan: Plan) -> str:
    """The plan as plain text (stable: used by golden tests and printed by `fstore plan`)."""
    base = f"v{plan.old_version}" if plan.old_version is not None else "nothing applied yet"
    lines = [f"Plan for project {plan.project!r} (applied: {base})"]
    if plan.is_empty:
        lines.append("No changes.")
        return "\n".join(lines) + "\n"
    summary = plan.to_dict()["summary"]
    lines.append(
        f"{summary['add']} to add, {summary['change']} to change, {summary['remove']} to remove; "
        f"{summary['breaking']} breaking, {summary['errors']} errors"
    )
    for kind in KINDS:
        group = [c for c in plan.changes if c.kind == kind]
        if not group:
            continue
        lines.append("")
        for change in group:
            flag = {Level.SAFE: "", Level.BREAKING: "  [BREAKING]", Level.ERROR: "  [ERROR]"}[change.level]
            lines.append(f"{_SYMBOL[change.action]} {_KIND_TITLE[kind]} {change.name}{flag}")
            lines.extend(f"    {d}" for d in change.details)
            if change.reason:
                lines.append(f"    why: {change.reason}")
            if change.suggestion:
                lines.append(f"    instead: {change.suggestion}")
    return "\n".join(lines) + "\n"


def plan_registry(old: Registry | None, new: Registry) -> Plan:
    """Diff ``old`` (the applied registry, or None) against ``new`` (the one to apply)."""
    empty = Registry(project=new.project, entities=(), sources=(), views=(), services=())
    base = old if old is not None else empty
    changes: list[Change] = []
    if old is not None and old.project != new.project:
        changes.append(
            Change(
                "project",
                new.project,
                Action.CHANGE,
                Level.BREAKING,
                (f"name: {old.project} -> {new.project}",),
                "stored features and applied versions are scoped by the project name",
                "keep the project name; start a separate registry for a new project",
            )
        )
    changes += _diff_named(base.entities, new.entities, "entity", _entity_change)
    changes += _diff_named(base.sources, new.sources, "source", lambda a, b: _source_change(a, b, base))
    changes += _diff_named(
        base.views, new.views, "view", _view_change, removed=_view_removed, added=_view_added
    )
    changes += _feature_changes(base, new)
    changes += _diff_named(base.services, new.services, "service", _service_change, removed=_service_removed)
    changes += _dangling_refs(new)
    order = {k: i for i, k in enumerate(KINDS)}
    changes.sort(key=lambda c: (order[c.kind], c.name, c.action.value))
    return Plan(new.project, old.version if old is not None else None, tuple(changes))


# --- generic diffing ---------------------------------------------------------------------------

N = TypeVar("N", Entity, Source, FeatureView, FeatureService)


def _diff_named(
    old: Sequence[N],
    new: Sequence[N],
    kind: str,
    changed: Callable[[N, N], Change | None],
    *,
    removed: Callable[[N], Change] | None = None,
    added: Callable[[N], Change] | None = None,
) -> list[Change]:
    before = {o.name: o for o in old}
    after = {n.name: n for n in new}
    out: list[Change] = []
    for name, item in after.items():
        if name not in before:
            out.append(added(item) if added else Change(kind, name, Action.ADD))
        elif before[name] != item:
            change = changed(before[name], item)
            if change is not None:
                out.append(change)
    for name, item in before.items():
        if name not in after:
            out.append(removed(item) if removed else Change(kind, name, Action.REMOVE))
    return out


@dataclass(slots=True)
class _Diff:
    """Collects the detail lines of one changed object and whether any of them breaks."""

    safe: list[str] = field(default_factory=list)
    breaking: list[str] = field(default_factory=list)

    def compare(self, label: str, old: object, new: object, *, breaking: bool = False) -> None:
        if old == new:
            return
        line = f"{label}: {_show(old)} -> {_show(new)}"
        (self.breaking if breaking else self.safe).append(line)

    def change(self, kind: str, name: str, reason: str, suggestion: str) -> Change | None:
        if self.breaking:
            return Change(
                kind, name, Action.CHANGE, Level.BREAKING, (*self.breaking, *self.safe), reason, suggestion
            )
        if self.safe:
            return Change(kind, name, Action.CHANGE, Level.SAFE, tuple(self.safe))
        return None


def _show(value: object) -> str:
    if value is None or value == "":
        return "(none)"
    if isinstance(value, tuple) and value and all(isinstance(p, tuple) and len(p) == 2 for p in value):
        return "{" + ", ".join(f"{k}: {v}" for k, v in value) + "}"
    if isinstance(value, tuple):
        return "(" + ", ".join(str(v) for v in value) + ")" if value else "(none)"
    if isinstance(value, str) and ("\n" in value or len(value) > 60):
        flat = " ".join(value.split())
        return repr(flat[:57] + "..." if len(flat) > 60 else flat)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _ms(value: int | None) -> str:
    return format_duration(value) if value is not None else "(none)"


# --- entities, sources, views, services ----------------------------------------------------


def _entity_change(old: Entity, new: Entity) -> Change | None:
    diff = _Diff()
    diff.compare(
        "join keys",
        tuple(f"{k} {t.value}" for k, t in old.join_keys),
        tuple(f"{k} {t.value}" for k, t in new.join_keys),
        breaking=True,
    )
    diff.compare("description", old.description, new.description)
    diff.compare("owner", old.owner, new.owner)
    return diff.change(
        "entity",
        new.name,
        "stored features are keyed by the join keys: existing rows would no longer be found",
        f"add a new entity (e.g. {new.name}_v2) with new feature views, and move services to them",
    )


def _source_change(old: Source, new: Source, base: Registry) -> Change | None:
    diff = _Diff()
    new_topic = "add a new source for the new topic with new feature views, and move services to them"
    diff.compare("topic", old.topic, new.topic, breaking=True)
    diff.compare("event time field", old.event_time_field, new.event_time_field, breaking=True)
    diff.compare("filter", old.filter, new.filter, breaking=_canonical(old.filter) != _canonical(new.filter))
    _schema_diff(old, new, base, diff)
    diff.compare("watermark delay", _ms(old.watermark_delay_ms), _ms(new.watermark_delay_ms))
    diff.compare("allowed lateness", _ms(old.allowed_lateness_ms), _ms(new.allowed_lateness_ms))
    diff.compare("dead-letter topic", old.dead_letter_topic, new.dead_letter_topic)
    diff.compare("schema path", old.schema_path, new.schema_path)
    diff.compare("description", old.description, new.description)
    diff.compare("owner", old.owner, new.owner)
    suggestion = new_topic
    if old.topic == new.topic and old.event_time_field == new.event_time_field:
        suggestion = (
            "keep the schema backward compatible: only add fields that are nullable or have a "
            "default, and keep fields that features read; or add a new source and views"
        )
        if _canonical(old.filter) != _canonical(new.filter):
            suggestion = "keep the source filter; filter new features with `where:` instead"
    return diff.change(
        "source",
        new.name,
        "the aggregates of every view of this source were computed from the old events",
        suggestion,
    )


def _canonical(predicate: str | None) -> str | None:
    if predicate is None:
        return None
    try:
        return canonical_predicate(predicate)
    except PredicateError:
        return predicate


def _fields_read(source: Source, registry: Registry) -> dict[str, list[str]]:
    """Source field -> what reads it (features, keys, filter, event time) in ``registry``."""
    used: dict[str, list[str]] = {}

    def note(name: str | None, who: str) -> None:
        if name is not None:
            used.setdefault(name, []).append(who)

    note(source.event_time_field, "the event time")
    for name in _predicate_fields(source.filter):
        note(name, "the source filter")
    for view in registry.views_of_source(source.name):
        for key in view.entity_key_fields:
            note(key, f"the entity key of view {view.name}")
        for feature in view.features:
            note(feature.input_field, f"feature {view.name}:{feature.name}")
            for name in _predicate_fields(feature.where):
                note(name, f"the where of {view.name}:{feature.name}")
    return used


def _predicate_fields(predicate: str | None) -> frozenset[str]:
    if predicate is None:
        return frozenset()
    try:
        return predicate_fields(predicate)
    except PredicateError:
        return frozenset()


def _schema_fields(source: Source) -> dict[str, AvroField] | None:
    try:
        info = analyse_schema(json.loads(source.schema_json))
    except (AvroSchemaError, ValueError):
        return None
    return {f.name: f for f in info.fields}


def _schema_diff(old: Source, new: Source, base: Registry, diff: _Diff) -> None:
    if old.schema_fingerprint == new.schema_fingerprint and old.schema_json == new.schema_json:
        return
    before, after = _schema_fields(old), _schema_fields(new)
    if before is None or after is None:  # cannot analyse: compare the compiled field lists
        before = {
            f.name: AvroField(f.name, f.type, f.nullable, f.type.value, None, False) for f in old.fields
        }
        after = {f.name: AvroField(f.name, f.type, f.nullable, f.type.value, None, False) for f in new.fields}
    used = _fields_read(old, base)
    changed = False
    for name in [*before, *(n for n in after if n not in before)]:
        line, breaking = _field_change(name, before.get(name), after.get(name), ", ".join(used.get(name, [])))
        if line:
            changed = True
            (diff.breaking if breaking else diff.safe).append(line)
    if changed or old.schema_fingerprint != new.schema_fingerprint:
        diff.safe.append(f"schema fingerprint: {old.schema_fingerprint} -> {new.schema_fingerprint}")
    else:
        diff.safe.append("schema: documentation or defaults changed")


def _field_change(name: str, old: AvroField | None, new: AvroField | None, readers: str) -> tuple[str, bool]:
    """One schema field's change as (detail line or "", breaking)."""
    if old is None:
        return _field_added(name, new)
    if new is None:
        if readers:
            return f"schema: removed field {name!r}, read by {readers}", True
        return f"schema: removed unused field {name!r}", False
    if (old.type, old.avro_type) == (new.type, new.avro_type):
        return "", False
    line = f"schema: field {name!r} type {old.avro_type} -> {new.avro_type}"
    widened = old.type == new.type and new.nullable >= old.nullable
    if widened and _promotable(old.avro_type, new.avro_type):
        return line, False
    return line + (f", read by {readers}" if readers else ""), True


def _field_added(name: str, new: AvroField | None) -> tuple[str, bool]:
    if new is None:
        return "", False
    if new.nullable or new.has_default:
        return f"schema: added field {name!r} ({new.avro_type})", False
    return (
        f"schema: added required field {name!r} ({new.avro_type}) without a default: "
        "events already in the topic do not have it"
    ), True


_PROMOTIONS = {("int", "long"), ("float", "double"), ("int", "double"), ("long", "double"), ("int", "float")}


def _promotable(old: str, new: str) -> bool:
    """Avro type promotions readers apply (int -> long ...), and null being added to a union."""

    def base(spelling: str) -> str:
        inner = spelling.removeprefix("union[").removesuffix("]")
        members = [m for m in inner.split(",") if m != "null"]
        return members[0] if len(members) == 1 else spelling

    a, b = base(old), base(new)
    return a == b or (a, b) in _PROMOTIONS


def _view_added(view: FeatureView) -> Change:
    served = [n for f in view.features for n in f.served_names]
    return Change("view", view.name, Action.ADD, details=(f"serves {len(served)}: {', '.join(served)}",))


def _view_removed(view: FeatureView) -> Change:
    served = [n for f in view.features for n in f.served_names]
    return Change(
        "view",
        view.name,
        Action.REMOVE,
        Level.BREAKING,
        (
            f"stops serving its {len(served)} features; its tiles in {view.table} are no longer written "
            "(windowed tiles expire by TTL, lifetime tiles stay until deleted)",
        ),
        "clients that read its features get errors, and its aggregates are lost",
        "remove its features from every service first; apply with --allow-breaking once no client reads it",
    )


def _view_change(old: FeatureView, new: FeatureView) -> Change | None:
    diff = _Diff()
    diff.compare("entity", old.entity, new.entity, breaking=True)
    diff.compare("source", old.source, new.source, breaking=True)
    diff.compare("entity key fields", old.entity_key_fields, new.entity_key_fields, breaking=True)
    diff.compare("ttl", _ms(old.ttl_ms), _ms(new.ttl_ms))
    diff.compare("online", old.online, new.online)
    diff.compare("tags", old.tags, new.tags)
    diff.compare("description", old.description, new.description)
    diff.compare("owner", old.owner, new.owner)
    return diff.change(
        "view",
        new.name,
        "its stored aggregates were computed for other keys or events",
        f"add a new feature view (e.g. {new.name}_v2) and move services to it",
    )


def _service_removed(service: FeatureService) -> Change:
    return Change(
        "service",
        service.name,
        Action.REMOVE,
        Level.BREAKING,
        (f"{len(service.features)} features",),
        "clients calling it get errors",
        "keep it until no client calls it, then apply with --allow-breaking",
    )


def _service_change(old: FeatureService, new: FeatureService) -> Change | None:
    diff = _Diff()
    old_refs = [str(r) for r in old.features]
    new_refs = [str(r) for r in new.features]
    gone = [r for r in old_refs if r not in new_refs]
    added = [r for r in new_refs if r not in old_refs]
    if gone:
        diff.breaking.append("features removed: " + ", ".join(gone))
    if added:
        diff.safe.append("features added: " + ", ".join(added))
    kept_old = [r for r in old_refs if r in new_refs]
    kept_new = [r for r in new_refs if r in old_refs]
    if kept_old != kept_new:
        diff.safe.append("feature order changed")
    diff.compare("tags", old.tags, new.tags)
    diff.compare("description", old.description, new.description)
    diff.compare("owner", old.owner, new.owner)
    return diff.change(
        "service",
        new.name,
        "its clients expect the removed features",
        f"add a new service version (e.g. {_next_version(new.name)}) with the new list, move clients, "
        "then remove the old one",
    )


def _next_version(name: str) -> str:
    stem, _, number = name.rpartition("_v")
    if stem and number.isdigit():
        return f"{stem}_v{int(number) + 1}"
    return f"{name}_v2"


def _dangling_refs(new: Registry) -> list[Change]:
    served = {(v.name, n) for v in new.views for f in v.features for n in f.served_names}
    out: list[Change] = []
    for service in new.services:
        missing = [str(r) for r in service.features if (r.view, r.feature) not in served]
        if missing:
            out.append(
                Change(
                    "service",
                    service.name,
                    Action.CHANGE,
                    Level.ERROR,
                    ("uses features that do not exist: " + ", ".join(missing),),
                    "the service would serve features that no view computes",
                    "remove them from the service, or keep the features",
                )
            )
    return out


# --- features ----------------------------------------------------------------------------------


def _served(views: Iterable[FeatureView]) -> dict[str, tuple[FeatureView, Feature, Window]]:
    return {f"{v.name}:{f.served_name(w)}": (v, f, w) for v in views for f in v.features for w in f.windows}


def _feature_changes(old: Registry, new: Registry) -> list[Change]:
    common = {v.name for v in old.views} & {v.name for v in new.views}
    before = _served(v for v in old.views if v.name in common)
    after = _served(v for v in new.views if v.name in common)
    used_by = _service_users(new.services)
    out: list[Change] = []
    for name, (_, feature, window) in after.items():
        if name not in before:
            out.append(Change("feature", name, Action.ADD, details=_feature_summary(feature, window)))
            continue
        _, old_feature, old_window = before[name]
        change = _feature_change(name, old_feature, old_window, feature, window)
        if change is not None:
            out.append(change)
    for name in before:
        if name in after:
            continue
        users = used_by.get(name, [])
        if users:
            out.append(
                Change(
                    "feature",
                    name,
                    Action.REMOVE,
                    Level.ERROR,
                    (f"still used by service {', '.join(users)}",),
                    "a service would serve a feature that is no longer computed",
                    f"remove it from {', '.join(users)} first (or publish a new service version without it)",
                )
            )
        else:
            out.append(
                Change(
                    "feature",
                    name,
                    Action.REMOVE,
                    Level.BREAKING,
                    (),
                    "clients reading it directly get errors, and its aggregates are lost",
                    "apply with --allow-breaking once no client reads it",
                )
            )
    return out


def _service_users(services: Iterable[FeatureService]) -> Mapping[str, list[str]]:
    users: dict[str, list[str]] = {}
    for service in services:
        for ref in service.features:
            users.setdefault(str(ref), []).append(service.name)
    return users


def _feature_summary(feature: Feature, window: Window) -> tuple[str, ...]:
    what = feature.aggregation.value
    if feature.last_n is not None:
        what += f"({feature.last_n})"
    if feature.input_field is not None:
        what += f" of {feature.input_field}"
    span = (
        "lifetime"
        if window.is_lifetime
        else f"{window.label} in {format_duration(window.granularity_ms)} tiles"
    )
    where = f" where {feature.where}" if feature.where else ""
    return (f"{what} over {span}{where} -> {feature.value_type.value}",)


def _feature_change(
    name: str, old: Feature, old_window: Window, new: Feature, window: Window
) -> Change | None:
    diff = _Diff()
    diff.compare("aggregation", old.aggregation.value, new.aggregation.value, breaking=True)
    diff.compare("field", old.input_field, new.input_field, breaking=True)
    diff.compare(
        "input type",
        old.input_type.value if old.input_type else None,
        new.input_type.value if new.input_type else None,
        breaking=True,
    )
    diff.compare("type", old.value_type.value, new.value_type.value, breaking=True)
    diff.compare("n", old.last_n, new.last_n, breaking=True)
    diff.compare("where", old.where, new.where, breaking=_canonical(old.where) != _canonical(new.where))
    diff.compare("window", _ms(old_window.length_ms), _ms(window.length_ms), breaking=True)
    diff.compare(
        "granularity",
        format_duration(old_window.granularity_ms),
        format_duration(window.granularity_ms),
        breaking=True,
    )
    diff.compare("tags", old.tags, new.tags)
    diff.compare("description", old.description, new.description)
    diff.compare("owner", old.owner, new.owner)
    return diff.change(
        "feature",
        name,
        "stored tiles were aggregated the old way; old and new values would mix",
        f"add a new feature name, e.g. {new.name}_v2, and move services to it",
    )
