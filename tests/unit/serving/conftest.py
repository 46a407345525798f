from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from feature_store.adapters.file_registry_store import FileRegistryStore
from feature_store.core.model import Registry
from feature_store.serving.client import FeatureClient
from feature_store.serving.store import InMemoryTileReader
from feature_store.serving.testing import ManualClock, ServerThread, test_settings
from tests.unit.serving.support import NOW, applied_store, example_events, fill_reader


@pytest.fixture(scope="session")
def applied(tmp_path_factory: pytest.TempPathFactory) -> tuple[FileRegistryStore, Registry]:
    return applied_store(tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="session")
def events(applied: tuple[FileRegistryStore, Registry]) -> dict[str, list[dict[str, Any]]]:
    return example_events(applied[1])


def make_reader(registry: Registry, events: dict[str, list[dict[str, Any]]]) -> InMemoryTileReader:
    reader = InMemoryTileReader()
    fill_reader(reader, registry, events)
    return reader


@pytest.fixture(scope="module")
def served(
    applied: tuple[FileRegistryStore, Registry], events: dict[str, list[dict[str, Any]]]
) -> Iterator[ServerThread]:
    """A shared server over the example data; tests using it must not change its state."""
    store, registry = applied
    with ServerThread(
        test_settings(max_batch_size=50),
        registry_store=store,
        reader=make_reader(registry, events),
        clock=ManualClock(NOW),
    ) as st:
        yield st


@pytest.fixture(scope="module")
def client(served: ServerThread) -> Iterator[FeatureClient]:
    with FeatureClient(served.target, timeout_s=5) as c:
        yield c


@pytest.fixture
def registry_dir(tmp_path: Path) -> Path:
    return tmp_path / "registry-store"
