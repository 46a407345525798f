"""Registry commands: init, validate, plan, apply, history, rollback, list, describe.

Registry errors are printed as ``file:line:column: message`` on stderr; nothing prints a
traceback (unexpected exceptions become a one-line ``error:`` message and exit code 1).
Exit codes: 0 ok, 1 invalid registry or failure, 2 breaking changes (plan) or refused (apply).
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from feature_store.core.model import Feature, FeatureView, Registry, UnknownName, Window
from feature_store.core.ports import RegistrySnapshot, RegistryStore
from feature_store.definitions.apply import (
    ApplyPreview,
    ApplyRefused,
    ApplyResult,
    UnknownVersion,
    apply_registry,
    load_applied,
    preview_apply,
    preview_rollback,
    rollback_registry,
)
from feature_store.definitions.compiler import load_registry
from feature_store.definitions.durations import format_duration
from feature_store.definitions.errors import RegistryInvalid
from feature_store.definitions.plan import Level, Plan
from feature_store.definitions.scaffold import scaffold_registry
from feature_store.definitions.snapshot import (
    SnapshotError,
    entity_to_dict,
    feature_to_dict,
    registry_fingerprint,
    service_to_dict,
    source_to_dict,
    view_to_dict,
)
from feature_store.definitions.stores import (
    STORE_ENV,
    StoreUrlError,
    VersionConflict,
    apply_targets_for,
    open_registry_store,
    resolve_store_url,
)

REGISTRY_ENV = "FSTORE_REGISTRY"
EXIT_INVALID = 1
EXIT_BREAKING = 2

RegistryOpt = Annotated[
    Path,
    typer.Option(
        "--registry",
        "-r",
        envvar=REGISTRY_ENV,
        help="Registry folder (feature_store.yaml + YAML files).",
        show_default=True,
    ),
]
StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        envvar=STORE_ENV,
        help="Where applied versions live, e.g. file:.fstore/registry (cql://... once configured).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
VersionOpt = Annotated[
    int | None,
    typer.Option(
        "--version", min=1, help="Read this applied version from --store instead of the local registry."
    ),
]
AllowBreakingOpt = Annotated[
    bool, typer.Option("--allow-breaking", help="Apply even if the plan has breaking changes.")
]
MessageOpt = Annotated[str, typer.Option("--message", "-m", help="Why; recorded with the version.")]


class ListKind(StrEnum):
    entities = "entities"
    sources = "sources"
    views = "views"
    features = "features"
    services = "services"


class DescribeKind(StrEnum):
    entity = "entity"
    source = "source"
    view = "view"
    feature = "feature"
    service = "service"


def register(app: typer.Typer) -> None:
    """Attach the registry commands to the top-level app."""
    app.command("init")(init_cmd)
    app.command("validate")(validate_cmd)
    app.command("plan")(plan_cmd)
    app.command("apply")(apply_cmd)
    app.command("history")(history_cmd)
    app.command("rollback")(rollback_cmd)
    app.command("list")(list_cmd)
    app.command("describe")(describe_cmd)


# --- plumbing ------------------------------------------------------------------------------


def _out() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _err(message: str) -> None:
    typer.echo(message, err=True)


def _fail(message: str, code: int = EXIT_INVALID) -> NoReturn:
    _err(f"error: {message}")
    raise typer.Exit(code)


@contextmanager
def _guard() -> Iterator[None]:
    """Turn every failure into located errors or one line on stderr, and an exit code."""
    try:
        yield
    except (typer.Exit, typer.Abort, typer.TyperException):
        raise
    except RegistryInvalid as exc:
        for error in exc.errors:
            _err(str(error))
        count = len(exc.errors)
        _err(f"registry is invalid: {count} error{'s' if count != 1 else ''}")
        raise typer.Exit(EXIT_INVALID) from None
    except (
        StoreUrlError,
        SnapshotError,
        UnknownVersion,
        VersionConflict,
        UnknownName,
        FileExistsError,
    ) as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}")
    except Exception as exc:  # the CLI boundary: never a traceback
        _fail(f"unexpected {type(exc).__name__}: {exc}")


def _open_store(url: str | None) -> tuple[str, RegistryStore]:
    resolved = resolve_store_url(url)
    if resolved is None:
        _fail(f"no registry store: pass --store file:PATH (or set {STORE_ENV})")
    return resolved, open_registry_store(resolved)


def _whoami() -> str:
    explicit = os.environ.get("FSTORE_USER")
    if explicit:
        return explicit
    try:
        return getpass.getuser()
    except Exception:  # no user database entry (containers)
        return "unknown"


def _print_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True))


def _load_source(registry: Path, store: str | None, version: int | None) -> Registry:
    """The local registry, or an applied one when --version (or only --store) is given."""
    if version is None and store is None:
        return load_registry(registry)
    _, opened = _open_store(store)
    applied = load_applied(opened, version)
    if applied is None:
        _fail("nothing has been applied to this store yet")
    return applied


def _counts(reg: Registry) -> dict[str, int]:
    return {
        "entities": len(reg.entities),
        "sources": len(reg.sources),
        "views": len(reg.views),
        "features": sum(len(f.served_names) for v in reg.views for f in v.features),
        "services": len(reg.services),
    }


def _ms(value: int | None) -> str:
    return format_duration(value) if value is not None else "-"


def _time(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _table(*columns: str, **kwargs: Any) -> Table:
    table = Table(**kwargs)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _row(table: Table, *cells: object) -> None:
    table.add_row(*(Text("" if c is None else str(c)) for c in cells))


_PLAN_STYLE = {"+": "green", "-": "red", "~": "yellow"}


def _print_plan(plan: Plan, actions: Sequence[str] = ()) -> None:
    console = _out()
    for line in plan.render().splitlines():
        style = _PLAN_STYLE.get(line[:1], "")
        if "[BREAKING]" in line or "[ERROR]" in line:
            style = "bold red"
        console.print(Text(line, style=style))
    if actions:
        console.print(Text(""))
        console.print(Text("Side effects:"))
        for action in actions:
            console.print(Text(f"  * {action}"))


# --- init / validate -------------------------------------------------------------------------


def init_cmd(
    path: Annotated[Path, typer.Argument(help="Folder to create (must not exist, or be empty).")],
    project: Annotated[
        str | None, typer.Option("--project", help="Project name (default: from the folder name).")
    ] = None,
) -> None:
    """Scaffold a minimal, valid registry: an entity, a source with its Avro schema, a view, a service."""
    with _guard():
        written = scaffold_registry(path, project)
        console = _out()
        for file in written:
            console.print(Text(f"created {file}"))
        console.print(Text(f"Next: fstore validate -r {path}"))


def validate_cmd(registry: RegistryOpt = Path("registry"), as_json: JsonOpt = False) -> None:
    """Check the registry; print every error as file:line:column: message (exit 1), or a summary."""
    with _guard():
        try:
            reg = load_registry(registry)
        except RegistryInvalid as exc:
            if not as_json:
                raise
            _print_json({"valid": False, "errors": [_error_dict(e) for e in exc.errors]})
            raise typer.Exit(EXIT_INVALID) from None
        counts = _counts(reg)
        if as_json:
            _print_json(
                {
                    "valid": True,
                    "project": reg.project,
                    "counts": counts,
                    "fingerprint": registry_fingerprint(reg),
                }
            )
            return
        summary = ", ".join(f"{n} {k}" for k, n in counts.items())
        _out().print(Text(f"Registry {reg.project!r} is valid: {summary}."))


def _error_dict(error: Any) -> dict[str, Any]:
    return {"file": error.file, "line": error.line, "column": error.column, "message": error.message}


# --- plan / apply / history / rollback -------------------------------------------------------


def _plan_exit(plan: Plan) -> None:
    if plan.has_breaking:
        raise typer.Exit(EXIT_BREAKING)


def plan_cmd(
    registry: RegistryOpt = Path("registry"), store: StoreOpt = None, as_json: JsonOpt = False
) -> None:
    """Show what `apply` would change against the applied version (exit 2 if anything breaks)."""
    with _guard():
        reg = load_registry(registry)
        url, opened = _open_store(store)
        preview = preview_apply(opened, reg, apply_targets_for(url))
        if as_json:
            _print_json(
                {
                    **preview.plan.to_dict(),
                    "actions": list(preview.actions),
                    "fingerprint": preview.fingerprint,
                }
            )
        else:
            _print_plan(preview.plan, preview.actions)
    _plan_exit(preview.plan)


def _refused(exc: ApplyRefused, as_json: bool) -> NoReturn:
    if as_json:
        _print_json({"applied": False, "refused": str(exc), **exc.plan.to_dict()})
    else:
        _print_plan(exc.plan)
        _err("")
        _err(f"refused: {exc}")
        for change in exc.plan.breaking:
            if change.suggestion:
                level = "error" if change.level is Level.ERROR else "breaking"
                _err(f"  {change.kind} {change.name} ({level}): {change.suggestion}")
    raise typer.Exit(EXIT_BREAKING)


def _report_result(result: ApplyResult, as_json: bool, verb: str, done: str) -> None:
    snapshot = result.snapshot
    if as_json:
        _print_json(
            {
                "applied": snapshot is not None,
                "version": snapshot.version
                if snapshot
                else (result.preview.old.version if result.preview.old else None),
                "fingerprint": result.preview.fingerprint,
                "actions": list(result.preview.actions),
                **result.plan.to_dict(),
            }
        )
        return
    _print_plan(result.plan, result.preview.actions)
    console = _out()
    if snapshot is None:
        old = result.preview.old
        current = old.version if old is not None else "?"
        repaired = (
            " (the stores were repaired to match it: see the actions above)" if result.preview.actions else ""
        )
        console.print(Text(f"Nothing to {verb}: version {current} already has this content{repaired}."))
    else:
        console.print(Text(f"{done}: version {snapshot.version} ({snapshot.fingerprint[:12]})."))


def apply_cmd(
    registry: RegistryOpt = Path("registry"),
    store: StoreOpt = None,
    allow_breaking: AllowBreakingOpt = False,
    message: MessageOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Validate, plan and store the registry as a new numbered version (with its side effects)."""
    with _guard():
        reg = load_registry(registry)
        url, opened = _open_store(store)
        try:
            result = apply_registry(
                opened,
                reg,
                apply_targets_for(url),
                applied_by=_whoami(),
                message=message,
                allow_breaking=allow_breaking,
            )
        except ApplyRefused as exc:
            _refused(exc, as_json)
        _report_result(result, as_json, "apply", "Applied")


def rollback_cmd(
    version: Annotated[int, typer.Argument(min=1, help="The applied version to go back to.")],
    store: StoreOpt = None,
    allow_breaking: AllowBreakingOpt = False,
    message: MessageOpt = "",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show the plan.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Apply an old version again, as a new version (same plan checks as apply)."""
    with _guard():
        url, opened = _open_store(store)
        targets = apply_targets_for(url)
        if dry_run:
            preview: ApplyPreview = preview_rollback(opened, version, targets)
            if as_json:
                _print_json({**preview.plan.to_dict(), "actions": list(preview.actions)})
            else:
                _print_plan(preview.plan, preview.actions)
            _plan_exit(preview.plan)
            return
        try:
            result = rollback_registry(
                opened, version, targets, applied_by=_whoami(), message=message, allow_breaking=allow_breaking
            )
        except ApplyRefused as exc:
            _refused(exc, as_json)
        _report_result(result, as_json, "roll back", "Rolled back")


def history_cmd(store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """List the applied versions, oldest first."""
    with _guard():
        _, opened = _open_store(store)
        snapshots = list(opened.history())
        if as_json:
            _print_json([_snapshot_dict(s) for s in snapshots])
            return
        if not snapshots:
            _out().print(Text("Nothing applied yet."))
            return
        table = _table(
            "version", "applied at", "by", "fingerprint", "message", title="Applied registry versions"
        )
        latest = snapshots[-1].version
        for s in snapshots:
            mark = "*" if s.version == latest else ""
            _row(
                table,
                f"{s.version}{mark}",
                _time(s.applied_at_ms),
                s.applied_by,
                s.fingerprint[:12],
                s.message,
            )
        _out().print(table)


def _snapshot_dict(s: RegistrySnapshot) -> dict[str, Any]:
    return {
        "version": s.version,
        "applied_at_ms": s.applied_at_ms,
        "applied_by": s.applied_by,
        "message": s.message,
        "fingerprint": s.fingerprint,
    }


# --- list / describe ---------------------------------------------------------------------------


def _feature_rows(view: FeatureView) -> Iterator[tuple[str, Feature, Window]]:
    for feature in view.features:
        for window in feature.windows:
            yield feature.served_name(window), feature, window


def _served_dict(view: FeatureView, served: str, feature: Feature, window: Window) -> dict[str, Any]:
    return {
        "ref": f"{view.name}:{served}",
        "view": view.name,
        "feature": served,
        "declared_as": feature.name,
        "aggregation": feature.aggregation.value,
        "field": feature.input_field,
        "n": feature.last_n,
        "window": window.label,
        "window_ms": window.length_ms,
        "granularity_ms": window.granularity_ms,
        "type": feature.value_type.value,
        "where": feature.where,
        "description": feature.description,
    }


def list_cmd(
    kind: Annotated[ListKind, typer.Argument(help="What to list.", case_sensitive=False)],
    registry: RegistryOpt = Path("registry"),
    store: StoreOpt = None,
    version: VersionOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List entities, sources, views, features (served names) or services."""
    with _guard():
        reg = _load_source(registry, store, version)
        if kind is ListKind.features:
            rows = [_served_dict(v, s, f, w) for v in reg.views for s, f, w in _feature_rows(v)]
            if as_json:
                _print_json(rows)
                return
            table = _table("feature", "aggregation", "field", "window", "tiles", "type", "where")
            for r in rows:
                agg = r["aggregation"] + (f"({r['n']})" if r["n"] else "")
                _row(
                    table,
                    r["ref"],
                    agg,
                    r["field"] or "-",
                    r["window"],
                    _ms(r["granularity_ms"] or None),
                    r["type"],
                    r["where"] or "",
                )
            _out().print(table)
            return
        if as_json:
            encoders = {
                ListKind.entities: [entity_to_dict(e) for e in reg.entities],
                ListKind.sources: [source_to_dict(s) for s in reg.sources],
                ListKind.views: [view_to_dict(v) for v in reg.views],
                ListKind.services: [service_to_dict(s) for s in reg.services],
            }
            _print_json(encoders[kind])
            return
        if kind is ListKind.entities:
            table = _table("entity", "join keys", "description")
            for e in reg.entities:
                _row(table, e.name, ", ".join(f"{k}:{t.value}" for k, t in e.join_keys), e.description)
        elif kind is ListKind.sources:
            table = _table("source", "topic", "schema", "id", "event time", "watermark", "lateness", "filter")
            for s in reg.sources:
                _row(
                    table,
                    s.name,
                    s.topic,
                    s.schema_path,
                    s.schema_fingerprint,
                    s.event_time_field,
                    _ms(s.watermark_delay_ms),
                    _ms(s.allowed_lateness_ms),
                    s.filter or "",
                )
        elif kind is ListKind.views:
            table = _table("view", "entity", "source", "keys", "ttl", "online", "served")
            for v in reg.views:
                served = sum(len(f.served_names) for f in v.features)
                _row(
                    table,
                    v.name,
                    v.entity,
                    v.source,
                    ", ".join(v.entity_key_fields),
                    _ms(v.ttl_ms),
                    "yes" if v.online else "no",
                    served,
                )
        else:
            table = _table("service", "features", "owner", "description")
            for service in reg.services:
                _row(table, service.name, len(service.features), service.owner, service.description)
        _out().print(table)


def describe_cmd(
    kind: Annotated[DescribeKind, typer.Argument(help="Kind of object.", case_sensitive=False)],
    name: Annotated[str, typer.Argument(help="Its name; features as view:feature.")],
    registry: RegistryOpt = Path("registry"),
    store: StoreOpt = None,
    version: VersionOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one entity, source, view, feature (view:feature) or service in detail."""
    with _guard():
        reg = _load_source(registry, store, version)
        data = _describe(reg, kind, name)
        if as_json:
            _print_json(data)
            return
        console = _out()
        table = _table("property", "value", show_header=False, title=f"{kind.value} {name}")
        nested: list[tuple[str, list[dict[str, Any]]]] = []
        for key, value in data.items():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                nested.append((key, value))
                continue
            if key == "schema_json":
                continue
            _row(table, key, _show(value, key))
        console.print(table)
        for title, rows in nested:
            sub = _table(*rows[0].keys(), title=title)
            for r in rows:
                _row(sub, *(_show(v, k) for k, v in r.items()))
            console.print(sub)


def _show(value: object, key: str = "") -> str:
    if value is None:
        return "-"
    if key.endswith("_ms") and isinstance(value, int) and not isinstance(value, bool):
        return format_duration(value) if value else "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(":".join(v) if isinstance(v, list) else str(v) for v in value)
    return str(value)


def _describe(reg: Registry, kind: DescribeKind, name: str) -> dict[str, Any]:
    if kind is DescribeKind.entity:
        entity = reg.entity(name)
        data = entity_to_dict(entity)
        data["views"] = [v.name for v in reg.views if v.entity == name]
        return data
    if kind is DescribeKind.source:
        source = reg.source(name)
        data = source_to_dict(source)
        data["views"] = [v.name for v in reg.views_of_source(name)]
        return data
    if kind is DescribeKind.view:
        view = reg.view(name)
        data = view_to_dict(view)
        data["table"] = view.table
        data["features"] = [
            {k: v for k, v in _served_dict(view, s, f, w).items() if k in _FEATURE_COLUMNS}
            for s, f, w in _feature_rows(view)
        ]
        data["used_by"] = sorted({s.name for s in reg.services for r in s.features if r.view == name})
        return data
    if kind is DescribeKind.service:
        service = reg.service(name)
        data = service_to_dict(service)
        data["features"] = [_service_row(reg, str(r)) for r in service.features]
        return data
    view_name, sep, feature_name = name.partition(":")
    if not sep:
        _fail(f"name features as view:feature, e.g. {reg.views[0].name if reg.views else 'view'}:<feature>")
    view = reg.view(view_name)
    for served, feature, window in _feature_rows(view):
        if feature_name in (served, feature.name):
            data = (
                _served_dict(view, served, feature, window)
                if feature_name == served
                else feature_to_dict(feature)
            )
            data["used_by"] = sorted(
                {
                    s.name
                    for s in reg.services
                    for r in s.features
                    if r.view == view_name and r.feature in feature.served_names
                }
            )
            return data
    raise UnknownName("feature", name)


_FEATURE_COLUMNS = ("feature", "aggregation", "field", "window", "type", "where")


def _service_row(reg: Registry, ref: str) -> dict[str, Any]:
    view_name, _, served = ref.partition(":")
    try:
        view = reg.view(view_name)
    except UnknownName:
        return {"feature": ref, "type": "?"}
    for name, feature, window in _feature_rows(view):
        if name == served:
            return {"feature": ref, "type": feature.value_type.value, "window": window.label}
    return {"feature": ref, "type": "?", "window": "?"}
