"""Lookup plans: what a request for a feature service (or a list of feature refs) reads and returns.

A :class:`LookupPlan` is compiled once per (registry version, feature service) or (registry
version, ref list) and reused by every request: the views to read with their
:class:`ViewAggregator`, where each requested feature sits in the view's read and in the response,
and which entity join keys (with their types) the request must carry. Requests never parse the
registry.

:class:`CompiledRegistry` holds one applied registry version with an aggregator per online view,
every feature service's plan pre-compiled, and a bounded LRU of ad-hoc ref-list plans.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from feature_store.core.lookup import FieldStatus, Resolved, not_found
from feature_store.core.model import (
    Entity,
    Feature,
    FeatureRef,
    FeatureService,
    FeatureView,
    Registry,
    UnknownName,
    ValueType,
    Window,
)
from feature_store.core.tiles import ViewAggregator, served_windows
from feature_store.serving.values import LIST_TYPES, VALUE_FIELD

__all__ = [
    "Column",
    "CompiledRegistry",
    "LookupPlan",
    "PlanError",
    "PlanErrorKind",
    "ViewPlan",
    "compile_plan",
]

MAX_REF_PLANS = 1024  # ad-hoc ref lists cached per registry version (LRU)


class PlanErrorKind(Enum):
    INVALID = "invalid"  # malformed request: bad ref syntax, duplicates, empty list
    NOT_FOUND = "not_found"  # a service, view or feature the registry does not define


class PlanError(Exception):
    def __init__(self, kind: PlanErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True, slots=True)
class Column:
    """One requested feature: its name in the response and where its value comes from."""

    name: str  # "view:feature", as in GetOnlineFeaturesResponse.feature_names
    view_index: int  # into LookupPlan.views
    output_index: int  # into the view's ViewRead.values
    value_type: ValueType
    feature: Feature
    window: Window


@dataclass(frozen=True, slots=True)
class ViewPlan:
    view: FeatureView
    aggregator: ViewAggregator
    entity: Entity
    key_group: int  # into LookupPlan.key_groups: views of the same entity share entity-key bytes
    granularities: frozenset[int]  # tile granularities this registry version can decode
    not_found: Resolved  # shared, never mutated: the answer when the store has no tile
    error: Resolved  # shared, never mutated: the answer when the read failed

    @property
    def ttl_ms(self) -> int | None:
        return self.view.ttl_ms


@dataclass(frozen=True, slots=True)
class LookupPlan:
    registry_version: int
    service: str | None  # None for an ad-hoc ref list
    views: tuple[ViewPlan, ...]
    columns: tuple[Column, ...]
    feature_names: tuple[str, ...]
    # the request columns needed, (join key, type), in first-use order
    join_keys: tuple[tuple[str, ValueType], ...]
    # distinct entity-key layouts: each a tuple of indexes into join_keys, in entity key order
    key_groups: tuple[tuple[int, ...], ...]
    # per view: (response column position, output index) pairs, in response order
    view_columns: tuple[tuple[tuple[int, int], ...], ...]
    value_types: tuple[ValueType, ...]  # per response column
    # per response column: (view index, output index, Value field name, is a list type)
    colspec: tuple[tuple[int, int, str, bool], ...]

    @property
    def metric_label(self) -> str:
        return self.service if self.service is not None else "_refs"


def _aggregator(registry: Registry, view: FeatureView) -> ViewAggregator:
    source = registry.source(view.source)
    return ViewAggregator(view, {f.name: f.type for f in source.fields})


def _error(n: int) -> Resolved:
    return Resolved([None] * n, [FieldStatus.ERROR] * n, [0] * n)


def _parse_refs(refs: Sequence[str]) -> list[FeatureRef]:
    if not refs:
        raise PlanError(PlanErrorKind.INVALID, "features.refs is empty: name at least one 'view:feature'")
    parsed: list[FeatureRef] = []
    for text in refs:
        try:
            parsed.append(FeatureRef.parse(text))
        except ValueError as exc:
            raise PlanError(PlanErrorKind.INVALID, str(exc)) from None
    return parsed


def _key_group(entity: Entity, join_keys: list[tuple[str, ValueType]]) -> tuple[int, ...]:
    """Indexes of ``entity``'s join keys in ``join_keys`` (appending new ones), in key order."""
    group: list[int] = []
    for key, key_type in entity.join_keys:
        for i, (known, known_type) in enumerate(join_keys):
            if known == key:
                if known_type is not key_type:
                    raise PlanError(
                        PlanErrorKind.INVALID,
                        f"join key {key!r} is {known_type.value} in one entity and "
                        f"{key_type.value} in entity {entity.name!r}; request them separately",
                    )
                group.append(i)
                break
        else:
            group.append(len(join_keys))
            join_keys.append((key, key_type))
    return tuple(group)


def compile_plan(
    registry: Registry,
    refs: Sequence[FeatureRef],
    aggregators: dict[str, ViewAggregator],
    *,
    service: str | None = None,
) -> LookupPlan:
    """Compile the plan of ``refs`` (``view:*`` expands to every served feature of the view)."""
    version = registry.version if registry.version is not None else 0
    view_index: dict[str, int] = {}
    views: list[ViewPlan] = []
    columns: list[Column] = []
    join_keys: list[tuple[str, ValueType]] = []
    key_groups: list[tuple[int, ...]] = []
    seen: set[str] = set()
    for ref in refs:
        try:
            view = registry.view(ref.view)
        except UnknownName as exc:
            raise PlanError(PlanErrorKind.NOT_FOUND, f"{exc} in feature reference '{ref}'") from None
        if not view.online:
            raise PlanError(PlanErrorKind.NOT_FOUND, f"feature view {view.name!r} is not served online")
        vi = view_index.get(view.name)
        if vi is None:
            agg = aggregators.get(view.name)
            if agg is None:
                agg = aggregators[view.name] = _aggregator(registry, view)
            entity = registry.entity(view.entity)
            group = _key_group(entity, join_keys)
            if group not in key_groups:
                key_groups.append(group)
            vi = view_index[view.name] = len(views)
            views.append(
                ViewPlan(
                    view=view,
                    aggregator=agg,
                    entity=entity,
                    key_group=key_groups.index(group),
                    granularities=frozenset(agg.granularities_ms),
                    not_found=not_found(len(agg.served_names)),
                    error=_error(len(agg.served_names)),
                )
            )
        agg = views[vi].aggregator
        names = agg.served_names if ref.feature == "*" else (ref.feature,)
        windows = served_windows(view)
        for name in names:
            try:
                out = agg.served_names.index(name)
            except ValueError:
                raise PlanError(
                    PlanErrorKind.NOT_FOUND, f"feature view {view.name!r} has no feature {name!r}"
                ) from None
            full = f"{view.name}:{name}"
            if full in seen:
                raise PlanError(PlanErrorKind.INVALID, f"feature {full!r} is requested twice")
            seen.add(full)
            feature, window = windows[out]
            columns.append(Column(full, vi, out, agg.value_types[out], feature, window))
    view_columns = tuple(
        tuple((pos, c.output_index) for pos, c in enumerate(columns) if c.view_index == vi)
        for vi in range(len(views))
    )
    return LookupPlan(
        registry_version=version,
        service=service,
        views=tuple(views),
        columns=tuple(columns),
        feature_names=tuple(c.name for c in columns),
        join_keys=tuple(join_keys),
        key_groups=tuple(key_groups),
        view_columns=view_columns,
        value_types=tuple(c.value_type for c in columns),
        colspec=tuple(
            (c.view_index, c.output_index, VALUE_FIELD[c.value_type], c.value_type in LIST_TYPES)
            for c in columns
        ),
    )


class CompiledRegistry:
    """One applied registry version, ready to serve: aggregators and plans built once."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.version = registry.version if registry.version is not None else 0
        self._aggregators: dict[str, ViewAggregator] = {
            v.name: _aggregator(registry, v) for v in registry.views if v.online
        }
        self._services: dict[str, LookupPlan] = {}
        self.service_errors: dict[str, str] = {}  # services that cannot be served, and why
        for svc in registry.services:
            try:
                self._services[svc.name] = compile_plan(
                    registry, svc.features, self._aggregators, service=svc.name
                )
            except PlanError as exc:
                self.service_errors[svc.name] = exc.message
        # service -> its served feature names ("view:feature"), for token checks of ad-hoc lists
        self.service_features: dict[str, frozenset[str]] = {
            name: frozenset(plan.feature_names) for name, plan in self._services.items()
        }
        self._refs: OrderedDict[tuple[str, ...], LookupPlan] = OrderedDict()
        self._lock = threading.Lock()  # ref plans may be compiled from the CLI's threads too

    @property
    def services(self) -> tuple[FeatureService, ...]:
        return self.registry.services

    @property
    def views(self) -> tuple[FeatureView, ...]:
        return tuple(v for v in self.registry.views if v.online)

    def service_plan(self, name: str) -> LookupPlan:
        plan = self._services.get(name)
        if plan is not None:
            return plan
        error = self.service_errors.get(name)
        if error is not None:
            raise PlanError(PlanErrorKind.NOT_FOUND, f"feature service {name!r} cannot be served: {error}")
        raise PlanError(PlanErrorKind.NOT_FOUND, f"unknown feature service {name!r}")

    def refs_plan(self, refs: Sequence[str]) -> LookupPlan:
        key = tuple(refs)
        with self._lock:
            plan = self._refs.get(key)
            if plan is not None:
                self._refs.move_to_end(key)
                return plan
        plan = compile_plan(self.registry, _parse_refs(refs), self._aggregators)
        with self._lock:
            self._refs[key] = plan
            if len(self._refs) > MAX_REF_PLANS:
                self._refs.popitem(last=False)
        return plan
