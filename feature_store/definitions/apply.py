"""The apply / rollback use cases: plan against the applied version, run side effects, record.

Side effects (creating CQL tables, Kafka topics...) are :class:`ApplyTarget` s supplied by the
caller; this module only knows the ``RegistryStore`` port. Order: plan, refuse errors (always) and
breaking changes (unless allowed), let every target apply, then store the new version, so a
recorded version always has its tables and topics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from feature_store.core.model import Registry
from feature_store.core.ports import RegistrySnapshot, RegistryStore
from feature_store.definitions.plan import Plan, plan_registry
from feature_store.definitions.snapshot import (
    content_fingerprint,
    registry_from_snapshot,
    registry_to_json,
)


class ApplyTarget(Protocol):
    """Something `apply` changes besides the registry store (tables, topics, jobs...)."""

    def plan_changes(self, old: Registry | None, new: Registry) -> list[str]:
        """Human descriptions of what ``apply`` would do (empty: nothing)."""
        ...

    def apply(self, old: Registry | None, new: Registry) -> None:
        """Do it; must be idempotent (a failed apply is simply run again)."""
        ...


class ApplyRefused(Exception):
    """The plan has errors, or breaking changes that were not allowed; nothing was changed."""

    def __init__(self, message: str, plan: Plan) -> None:
        super().__init__(message)
        self.plan = plan


class UnknownVersion(LookupError):
    def __init__(self, version: int) -> None:
        super().__init__(f"registry version {version} does not exist")
        self.version = version


@dataclass(frozen=True, slots=True)
class ApplyPreview:
    old: Registry | None  # the applied registry (None: nothing applied yet)
    new: Registry
    plan: Plan
    actions: tuple[str, ...]  # what the targets will do
    content_json: str
    fingerprint: str
    old_fingerprint: str | None = None

    @property
    def up_to_date(self) -> bool:
        """The applied version already has exactly this content."""
        return self.old_fingerprint == self.fingerprint


@dataclass(frozen=True, slots=True)
class ApplyResult:
    preview: ApplyPreview
    snapshot: RegistrySnapshot | None  # None: already up to date, nothing stored

    @property
    def plan(self) -> Plan:
        return self.preview.plan


def load_applied(store: RegistryStore, version: int | None = None) -> Registry | None:
    """The applied registry (latest, or ``version``), or None when nothing was applied yet."""
    if version is None:
        snapshot = store.latest()
        return registry_from_snapshot(snapshot) if snapshot is not None else None
    snapshot = store.get(version)
    if snapshot is None:
        raise UnknownVersion(version)
    return registry_from_snapshot(snapshot)


def preview_apply(
    store: RegistryStore,
    new: Registry,
    targets: Sequence[ApplyTarget] = (),
    *,
    content_json: str | None = None,
) -> ApplyPreview:
    """Plan ``new`` against the latest applied version, and ask each target what it would do."""
    latest = store.latest()
    old = registry_from_snapshot(latest) if latest is not None else None
    content = content_json if content_json is not None else registry_to_json(new)
    plan = plan_registry(old, new)
    actions = tuple(action for target in targets for action in target.plan_changes(old, new))
    return ApplyPreview(
        old,
        new,
        plan,
        actions,
        content,
        content_fingerprint(content),
        latest.fingerprint if latest is not None else None,
    )


def check_allowed(plan: Plan, *, allow_breaking: bool) -> None:
    """Raise ApplyRefused for errors, and for breaking changes unless ``allow_breaking``."""
    if plan.has_errors:
        raise ApplyRefused("the plan has errors; fix the registry first", plan)
    if plan.has_breaking and not allow_breaking:
        count = len(plan.breaking)
        raise ApplyRefused(
            f"the plan has {count} breaking change{'s' if count != 1 else ''}; make the change "
            "non-breaking as suggested, or re-run with --allow-breaking",
            plan,
        )


def _execute(
    store: RegistryStore,
    preview: ApplyPreview,
    targets: Sequence[ApplyTarget],
    *,
    applied_by: str,
    message: str,
    allow_breaking: bool,
) -> ApplyResult:
    check_allowed(preview.plan, allow_breaking=allow_breaking)
    if preview.up_to_date:
        if preview.actions:
            # this content is applied, but the stores drifted from it (a table or topic removed
            # by hand, or a new storage layout): repair them; the version history stays as it is
            for target in targets:
                target.apply(preview.old, preview.new)
        return ApplyResult(preview, None)
    for target in targets:
        target.apply(preview.old, preview.new)
    snapshot = store.put(preview.content_json, preview.fingerprint, applied_by, message)
    return ApplyResult(preview, snapshot)


def apply_registry(
    store: RegistryStore,
    new: Registry,
    targets: Sequence[ApplyTarget] = (),
    *,
    applied_by: str,
    message: str = "",
    allow_breaking: bool = False,
) -> ApplyResult:
    """Apply ``new``: refuse per the plan, run the targets, store a new numbered version."""
    preview = preview_apply(store, new, targets)
    return _execute(
        store, preview, targets, applied_by=applied_by, message=message, allow_breaking=allow_breaking
    )


def preview_rollback(store: RegistryStore, version: int, targets: Sequence[ApplyTarget] = ()) -> ApplyPreview:
    snapshot = store.get(version)
    if snapshot is None:
        raise UnknownVersion(version)
    target = registry_from_snapshot(snapshot)
    return preview_apply(store, target, targets, content_json=snapshot.content_json)


def rollback_registry(
    store: RegistryStore,
    version: int,
    targets: Sequence[ApplyTarget] = (),
    *,
    applied_by: str,
    message: str = "",
    allow_breaking: bool = False,
) -> ApplyResult:
    """Store a new version whose content equals ``version``'s, after the same plan checks as apply."""
    preview = preview_rollback(store, version, targets)
    text = f"rollback to v{version}" + (f": {message}" if message else "")
    return _execute(
        store, preview, targets, applied_by=applied_by, message=text, allow_breaking=allow_breaking
    )
