"""Shared by the serving tests: the example registry applied to a file store, events, ground truth."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from feature_store.adapters.file_registry_store import FileRegistryStore
from feature_store.core.keys import entity_key_bytes
from feature_store.core.lookup import FieldStatus, newest_event_ms, resolve
from feature_store.core.model import Registry
from feature_store.core.predicates import compile_predicate
from feature_store.core.tiles import TileKey, TileState, ViewAggregator
from feature_store.definitions.apply import apply_registry
from feature_store.definitions.compiler import load_registry
from feature_store.serving.store import InMemoryTileReader
from feature_store.serving.testing import random_events, tiles_from_events

ROOT = Path(__file__).resolve().parents[3]
HOUR = 3_600_000
DAY = 24 * HOUR
NOW = 1_750_000_123_456  # a fixed "now" for the ManualClock
USERS = [f"u{i}" for i in range(8)]


def example_registry() -> Registry:
    return load_registry(ROOT / "registry")


def applied_store(directory: Path, registry: Registry | None = None) -> tuple[FileRegistryStore, Registry]:
    store = FileRegistryStore(directory)
    reg = registry or example_registry()
    result = apply_registry(store, reg, applied_by="tests", message="serving tests")
    assert result.snapshot is not None
    from dataclasses import replace  # noqa: PLC0415

    return store, replace(reg, version=result.snapshot.version)


def example_events(
    registry: Registry, n_per_source: int = 120, seed: int = 7
) -> dict[str, list[dict[str, Any]]]:
    """Events of every source over the 3 days before NOW, among USERS (u7 never appears)."""
    return {
        s.name: random_events(s, n_per_source, USERS[:-1], NOW, 3 * DAY, seed=seed + i)
        for i, s in enumerate(registry.sources)
    }


def fill_reader(
    reader: InMemoryTileReader, registry: Registry, events: Mapping[str, list[dict[str, Any]]]
) -> None:
    for view in registry.views:
        for key, tiles in tiles_from_events(registry, view.name, events[view.source]).items():
            for tk, payload in tiles.items():
                reader.put(view, key, tk, payload)


def core_tiles(
    registry: Registry, view_name: str, events: Iterable[Mapping[str, Any]], entity: Sequence[object]
) -> dict[TileKey, TileState]:
    """Ground truth tiles of one entity, folded by the core without encoding."""
    view = registry.view(view_name)
    source = registry.source(view.source)
    types = {f.name: f.type for f in source.fields}
    keep = compile_predicate(source.filter, types) if source.filter else None
    agg = ViewAggregator(view, types)
    wanted = entity_key_bytes(entity)
    tiles: dict[TileKey, TileState] = {}
    for event in events:
        if keep is not None and not keep(event):
            continue
        if entity_key_bytes([event[k] for k in view.entity_key_fields]) == wanted:
            agg.update(tiles, event, int(event[source.event_time_field]))
    return tiles


def expected(
    registry: Registry,
    events: Mapping[str, list[dict[str, Any]]],
    refs: Sequence[str],
    entity: Mapping[str, object],
    t_ms: int,
) -> list[tuple[Any, FieldStatus, int]]:
    """(value, status, event time) per ref for one entity: ViewAggregator.read + lookup.resolve."""
    out: list[tuple[Any, FieldStatus, int]] = []
    for ref in refs:
        view_name, _, feature = ref.partition(":")
        view = registry.view(view_name)
        join_keys = registry.entity(view.entity).join_keys
        key = [entity[k] for k, _ in join_keys]
        tiles = core_tiles(registry, view_name, events[view.source], key)
        agg = ViewAggregator(view, {f.name: f.type for f in registry.source(view.source).fields})
        i = agg.served_names.index(feature)
        if not tiles:
            out.append((None, FieldStatus.NOT_FOUND, 0))
            continue
        res = resolve(agg.read(tiles, t_ms), newest_event_ms(tiles.values()), view.ttl_ms, t_ms)
        out.append((res.values[i], res.statuses[i], res.event_times_ms[i]))
    return out
