"""apply / rollback use cases over the file store, with recording side-effect targets."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from feature_store.adapters.file_registry_store import FileRegistryStore
from feature_store.core.model import Registry
from feature_store.core.ports import RegistryStore
from feature_store.definitions import stores
from feature_store.definitions.apply import (
    ApplyRefused,
    ApplyTarget,
    UnknownVersion,
    apply_registry,
    load_applied,
    preview_apply,
    rollback_registry,
)
from feature_store.definitions.compiler import load_registry
from feature_store.definitions.errors import VersionConflict
from feature_store.definitions.snapshot import registry_fingerprint, registry_to_json
from feature_store.definitions.stores import (
    StoreUrlError,
    apply_targets_for,
    open_registry_store,
    register_store_scheme,
)
from tests.unit.definitions.helpers import defs, write_registry


class FixedClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000_000

    def now_ms(self) -> int:
        self.now += 1000
        return self.now


@dataclass
class RecordingTarget:
    calls: list[tuple[int | None, str]] = field(default_factory=list)
    fail: bool = False

    def plan_changes(self, old: Registry | None, new: Registry) -> list[str]:
        return [
            f"create table fv_{v.name}"
            for v in new.views
            if old is None or v.name not in {o.name for o in old.views}
        ]

    def apply(self, old: Registry | None, new: Registry) -> None:
        if self.fail:
            raise RuntimeError("cassandra is down")
        self.calls.append((old.version if old else None, new.project))


@pytest.fixture
def store(tmp_path: Path) -> FileRegistryStore:
    return FileRegistryStore(tmp_path / "store", clock=FixedClock())


@pytest.fixture
def v1(tmp_path: Path) -> Registry:
    return load_registry(write_registry(tmp_path / "v1"))


@pytest.fixture
def breaking(tmp_path: Path) -> Registry:
    return load_registry(
        write_registry(tmp_path / "v2", {"defs.yaml": defs(("granularity: 1d", "granularity: 1h"))})
    )


def test_first_apply_creates_version_one(store: FileRegistryStore, v1: Registry) -> None:
    target = RecordingTarget()
    targets: list[ApplyTarget] = [target]
    preview = preview_apply(store, v1, targets)
    assert preview.actions == ("create table fv_user_clicks",)
    assert preview.old is None
    result = apply_registry(store, v1, targets, applied_by="alice", message="first")
    assert result.snapshot is not None
    assert result.snapshot.version == 1
    assert result.snapshot.applied_by == "alice"
    assert result.snapshot.fingerprint == registry_fingerprint(v1)
    assert target.calls == [(None, "demo")]
    assert load_applied(store) == replace(v1, version=1)
    assert (store.directory / "v000001.json").stat().st_mode & 0o222 == 0  # read-only


def test_apply_same_content_is_a_no_op(store: FileRegistryStore, v1: Registry) -> None:
    apply_registry(store, v1, applied_by="a")
    target = RecordingTarget()
    again = apply_registry(store, v1, [target], applied_by="a")
    assert again.snapshot is None
    assert again.preview.up_to_date
    assert target.calls == []
    assert [s.version for s in store.history()] == [1]


def test_applying_the_same_content_repairs_stores_that_drifted(
    store: FileRegistryStore, v1: Registry
) -> None:
    apply_registry(store, v1, applied_by="a")

    class Drifted(RecordingTarget):
        def plan_changes(self, old: Registry | None, new: Registry) -> list[str]:
            return ["create table fe_user"]  # e.g. dropped by hand, or a new storage layout

    target = Drifted()
    again = apply_registry(store, v1, [target], applied_by="a")
    assert again.snapshot is None
    assert again.preview.up_to_date
    assert again.preview.actions == ("create table fe_user",)
    assert [call[0] for call in target.calls] == [1]  # repaired against the applied version
    assert [s.version for s in store.history()] == [1]


def test_breaking_changes_are_refused_unless_allowed(
    store: FileRegistryStore, v1: Registry, breaking: Registry
) -> None:
    apply_registry(store, v1, applied_by="a")
    target = RecordingTarget()
    with pytest.raises(ApplyRefused, match="1 breaking change") as info:
        apply_registry(store, breaking, [target], applied_by="a")
    assert info.value.plan.has_breaking
    assert target.calls == []
    assert len(store.history()) == 1
    result = apply_registry(store, breaking, [target], applied_by="a", allow_breaking=True, message="tiles")
    assert result.snapshot is not None
    assert result.snapshot.version == 2
    assert target.calls == [(1, "demo")]


def test_errors_are_refused_even_when_breaking_is_allowed(store: FileRegistryStore, v1: Registry) -> None:
    apply_registry(store, v1, applied_by="a")
    view = v1.view("user_clicks")
    broken = replace(v1, views=(replace(view, features=view.features[:1]),))
    with pytest.raises(ApplyRefused, match="errors"):
        apply_registry(store, broken, applied_by="a", allow_breaking=True)


def test_failed_target_records_nothing(store: FileRegistryStore, v1: Registry) -> None:
    with pytest.raises(RuntimeError, match="cassandra is down"):
        apply_registry(store, v1, [RecordingTarget(fail=True)], applied_by="a")
    assert store.latest() is None


def test_rollback_creates_a_new_version_equal_to_the_old_one(
    store: FileRegistryStore, v1: Registry, breaking: Registry
) -> None:
    first = apply_registry(store, v1, applied_by="a").snapshot
    apply_registry(store, breaking, applied_by="a", allow_breaking=True)
    with pytest.raises(ApplyRefused):
        rollback_registry(store, 1, applied_by="b")  # back to 1d tiles is breaking too
    result = rollback_registry(store, 1, applied_by="b", message="oops", allow_breaking=True)
    assert result.snapshot is not None
    assert first is not None
    assert result.snapshot.version == 3
    assert result.snapshot.content_json == first.content_json
    assert result.snapshot.fingerprint == first.fingerprint
    assert result.snapshot.message == "rollback to v1: oops"
    assert load_applied(store, 3) == replace(v1, version=3)
    with pytest.raises(UnknownVersion):
        rollback_registry(store, 9, applied_by="b")


def test_concurrent_writers_cannot_share_a_version(store: FileRegistryStore, v1: Registry) -> None:
    text = registry_to_json(v1)
    fingerprint = registry_fingerprint(v1)
    store.put(text, fingerprint, "a", "")
    slow = FileRegistryStore(store.directory)
    slow._versions = list  # type: ignore[method-assign]  # it has not seen version 1 yet
    with pytest.raises(VersionConflict):
        slow.put(text, fingerprint, "b", "")
    with pytest.raises(ValueError, match="fingerprint"):
        store.put(text, "0" * 64, "a", "")


def test_history_and_get(store: FileRegistryStore, v1: Registry) -> None:
    assert store.history() == []
    assert store.latest() is None
    assert store.get(1) is None
    apply_registry(store, v1, applied_by="a", message="one")
    (history,) = store.history()
    assert history.message == "one"
    assert store.get(1) == history
    assert history.applied_at_ms == 1_700_000_001_000


def test_open_registry_store(tmp_path: Path) -> None:
    opened = open_registry_store(f"file:{tmp_path}/s")
    assert isinstance(opened, FileRegistryStore)
    assert opened.directory == tmp_path / "s"
    assert isinstance(open_registry_store(f"file://{tmp_path}/s"), FileRegistryStore)
    assert apply_targets_for(f"file:{tmp_path}") == []
    with pytest.raises(StoreUrlError, match=r"unsupported registry store URL .*file:\.\.\."):
        open_registry_store("nosuch://localhost:9042/fs")
    with pytest.raises(StoreUrlError):
        open_registry_store("file:")


def test_register_store_scheme(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stores, "_SCHEMES", dict(stores._SCHEMES))
    target = RecordingTarget()

    def opener(rest: str) -> RegistryStore:
        return FileRegistryStore(tmp_path / rest.strip("/"))

    register_store_scheme("memtest", opener, lambda _rest: [target])
    assert isinstance(open_registry_store("memtest://x"), FileRegistryStore)
    assert apply_targets_for("memtest://x") == [target]
