"""What an export of one feature service computes: views, output columns, join keys.

Pure (no pandas/pyarrow/DuckDB), so the audit and tests can use it cheaply.

Output columns
    For each feature of the service, in service order: ``<name>`` (the value, typed like the
    served value) and ``<name>__status`` (the :class:`~feature_store.core.lookup.FieldStatus`
    name: ``PRESENT``, ``NOT_FOUND``, ``NULL_VALUE``, ``OUTSIDE_MAX_AGE`` or ``ERROR``), plus
    ``<name>__event_time_ms`` when asked for. ``<name>`` is the served feature name
    (``matches_accepted_1h``), or ``<view>__<feature>`` with ``full_names``; a clash between two
    views' names, or with a spine column, is an error that suggests ``--full-names``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from feature_store.core.lookup import FieldStatus
from feature_store.core.model import Entity, FeatureView, Registry, Source, UnknownName, ValueType
from feature_store.core.tiles import ViewAggregator

STATUS_SUFFIX = "__status"
EVENT_TIME_SUFFIX = "__event_time_ms"
STATUS_NAMES: tuple[str, ...] = ("UNSPECIFIED", *(s.name for s in FieldStatus))  # index = enum value


class ExportPlanError(ValueError):
    """The service cannot be exported as asked (unknown name, clashing columns...)."""


@dataclass(frozen=True, slots=True)
class OutputColumn:
    name: str
    ref: str  # "view:feature", as the server names it
    view: str
    feature: str  # the served name
    output_index: int  # into the view's ViewAggregator.served_names
    value_type: ValueType

    @property
    def status_name(self) -> str:
        return self.name + STATUS_SUFFIX

    @property
    def event_time_name(self) -> str:
        return self.name + EVENT_TIME_SUFFIX


@dataclass(frozen=True, slots=True)
class ViewJob:
    view: FeatureView
    entity: Entity
    source: Source
    columns: tuple[OutputColumn, ...]  # the requested features of this view
    # entity key fields of every view of the source: the job dead-letters an event for all
    # views when any of them is null or "" (stream.tile_writer.EventRouter)
    source_key_fields: tuple[str, ...] = ()

    @property
    def output_indexes(self) -> tuple[int, ...]:
        return tuple(c.output_index for c in self.columns)


@dataclass(frozen=True, slots=True)
class ExportPlan:
    registry: Registry
    service: str
    views: tuple[ViewJob, ...]
    columns: tuple[OutputColumn, ...]  # in service order
    join_keys: tuple[tuple[str, ValueType], ...]  # spine columns needed, first-use order
    event_times: bool = False

    def output_names(self) -> list[str]:
        names: list[str] = []
        for c in self.columns:
            names += [c.name, c.status_name]
            if self.event_times:
                names.append(c.event_time_name)
        return names


def field_types(source: Source) -> dict[str, ValueType]:
    return {f.name: f.type for f in source.fields}


def plan_export(
    registry: Registry,
    service_name: str,
    *,
    full_names: bool = False,
    event_times: bool = False,
    spine_columns: Sequence[str] = (),
) -> ExportPlan:
    try:
        service = registry.service(service_name)
    except UnknownName:
        known = ", ".join(sorted(s.name for s in registry.services)) or "none"
        raise ExportPlanError(f"unknown feature service {service_name!r}; defined: {known}") from None
    jobs: dict[str, tuple[FeatureView, Entity, Source, ViewAggregator, list[OutputColumn]]] = {}
    columns: list[OutputColumn] = []
    join_keys: dict[str, ValueType] = {}
    for ref in service.features:
        try:
            view = registry.view(ref.view)
        except UnknownName as exc:
            raise ExportPlanError(f"{exc} in feature reference '{ref}' of service {service_name!r}") from None
        if view.name not in jobs:
            entity = registry.entity(view.entity)
            source = registry.source(view.source)
            for key, vt in entity.join_keys:
                seen = join_keys.setdefault(key, vt)
                if seen is not vt:
                    raise ExportPlanError(
                        f"join key {key!r} is {seen.value} in one entity and {vt.value} in entity "
                        f"{entity.name!r}; export the views separately"
                    )
            jobs[view.name] = (view, entity, source, ViewAggregator(view, field_types(source)), [])
        _, _, _, agg, view_columns = jobs[view.name]
        names = agg.served_names if ref.feature == "*" else (ref.feature,)
        for served in names:
            if served not in agg.served_names:
                raise ExportPlanError(
                    f"feature view {view.name!r} has no feature {served!r} (service {service_name!r})"
                )
            index = agg.served_names.index(served)
            column = OutputColumn(
                name=f"{view.name}__{served}" if full_names else served,
                ref=f"{view.name}:{served}",
                view=view.name,
                feature=served,
                output_index=index,
                value_type=agg.value_types[index],
            )
            if any(c.ref == column.ref for c in columns):
                raise ExportPlanError(f"feature {column.ref!r} is listed twice in service {service_name!r}")
            columns.append(column)
            view_columns.append(column)
    plan = ExportPlan(
        registry=registry,
        service=service_name,
        views=tuple(
            ViewJob(v, e, s, tuple(cols), _source_key_fields(registry, s))
            for v, e, s, _, cols in jobs.values()
        ),
        columns=tuple(columns),
        join_keys=tuple(join_keys.items()),
        event_times=event_times,
    )
    _check_names(plan, spine_columns, full_names)
    return plan


def _source_key_fields(registry: Registry, source: Source) -> tuple[str, ...]:
    fields: dict[str, None] = {}
    for view in registry.views_of_source(source.name):
        fields.update(dict.fromkeys(view.entity_key_fields))
    return tuple(fields)


def _check_names(plan: ExportPlan, spine_columns: Sequence[str], full_names: bool) -> None:
    seen: dict[str, str] = {}
    spine = set(spine_columns)
    for column in plan.columns:
        names = [column.name, column.status_name] + ([column.event_time_name] if plan.event_times else [])
        for name in names:
            if name in seen:
                hint = "" if full_names else "; pass --full-names to name columns <view>__<feature>"
                raise ExportPlanError(
                    f"output column {name!r} of {column.ref} clashes with {seen[name]}{hint}"
                )
            if name in spine:
                hint = "" if full_names else " or pass --full-names"
                raise ExportPlanError(
                    f"output column {name!r} of {column.ref} clashes with a spine column; rename it{hint}"
                )
            seen[name] = column.ref
