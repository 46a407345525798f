"""The replay (no DuckDB) against the definition: fold every event <= t, read once, resolve."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feature_store.core.model import Registry
from feature_store.core.tiles import TileKey, TileState
from feature_store.export.replay import ViewReplay, brute_force, history_ms, stored_newest
from tests.unit.export.support import HOUR, MINUTE, T0, make_registry, random_events

_REGISTRY: Registry | None = None


def registry() -> Registry:
    global _REGISTRY  # noqa: PLW0603 - built once per session; hypothesis forbids function fixtures
    if _REGISTRY is None:
        import tempfile  # noqa: PLC0415

        _REGISTRY = make_registry(Path(tempfile.mkdtemp()) / "registry")
    return _REGISTRY


def run_replay(view_name: str, events: list[dict[str, Any]], spine: list[tuple[str, int]]) -> list[list[Any]]:
    reg = registry()
    view = reg.view(view_name)
    source = reg.source(view.source)
    n_served = len(view.features) and sum(len(f.windows) for f in view.features)
    replay = ViewReplay(view, source, range(n_served))
    key_field = view.entity_key_fields[0]
    evs = sorted(
        ((e[key_field], e["event_time"], i, e) for i, e in enumerate(events) if e.get(key_field)),
        key=lambda x: (x[0], x[1], x[2]),
    )
    rows = sorted(range(len(spine)), key=lambda j: spine[j])
    out = replay.run(
        [e[0] for e in evs],
        [e[1] for e in evs],
        [[e[3].get(f) for e in evs] for f in replay.fields],
        [spine[j][0] for j in rows],
        [spine[j][1] for j in rows],
    )
    result: list[list[Any]] = [[] for _ in spine]
    for pos, j in enumerate(rows):
        result[j] = [(out.values[k][pos], int(out.statuses[k][pos])) for k in range(n_served)]
    return result


def expected(view_name: str, events: list[dict[str, Any]], entity: str, t: int) -> list[tuple[Any, int]]:
    reg = registry()
    view = reg.view(view_name)
    key_field = view.entity_key_fields[0]
    mine = [(e, e["event_time"]) for e in events if e.get(key_field) == entity]
    return brute_force(view, reg.source(view.source), mine, t)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    n_events=st.integers(0, 120),
    times=st.lists(st.integers(-2 * HOUR, 30 * HOUR), min_size=1, max_size=30),
)
def test_replay_equals_brute_force(seed: int, n_events: int, times: list[int]) -> None:
    rng = random.Random(seed)
    events = random_events(rng, n_events, users=3, span_ms=26 * HOUR)
    spine = [(f"u{rng.randrange(4)}", T0 + t) for t in times]
    for view_name in ("v_user", "v_peer"):
        view_spine = spine if view_name == "v_user" else [(f"p{int(u[1:])}", t) for u, t in spine]
        got = run_replay(view_name, events, view_spine)
        for (entity, t), row in zip(view_spine, got, strict=True):
            assert row == expected(view_name, events, entity, t), (view_name, entity, t)


@settings(max_examples=60, deadline=None)
@given(
    keys=st.lists(st.tuples(st.sampled_from([0, 300_000, 600_000, HOUR]), st.integers(0, 48)), max_size=40),
    t=st.integers(0, 48 * HOUR),
)
def test_stored_tiles_shortcut_matches_the_definition(keys: list[tuple[int, int]], t: int) -> None:
    view = registry().view("v_user")
    replay = ViewReplay(view, registry().source("ev"), [0])
    agg = replay.aggregator
    tiles: dict[TileKey, TileState] = {}
    for g, k in keys:
        if g not in agg.granularities_ms:
            continue
        start = 0 if g == 0 else k * g
        if start > t:
            continue  # the replay never holds tiles after t
        tile = agg.new_tile(g)
        tile.last_ms[0] = start + (k % 7)
        tiles[(g, start)] = tile
    grans = tuple(g for g, _ in replay._ranges)
    cs = tuple(t - t % g for g in grans)
    assert replay._newest(tiles, cs) == stored_newest(view, tiles, t)


def test_history_bounds_the_events_a_view_needs() -> None:
    reg = registry()
    assert history_ms(reg.view("v_user")) is None  # lifetime features need everything
    assert history_ms(reg.view("v_peer")) == 35 * MINUTE  # 6 tiles of 5 minutes, kept 5 more


@pytest.mark.parametrize("spine_order", ["sorted", "duplicates"])
def test_repeated_times_and_entities_without_events(spine_order: str) -> None:
    rng = random.Random(3)
    events = random_events(rng, 60, users=2, span_ms=3 * HOUR, dirty=False)
    spine = [("u0", T0 + HOUR), ("u0", T0 + HOUR), ("u9", T0 + HOUR), ("u1", T0 + 2 * HOUR)]
    if spine_order == "duplicates":
        spine = spine + spine
    got = run_replay("v_user", events, spine)
    for (entity, t), row in zip(spine, got, strict=True):
        assert row == expected("v_user", events, entity, t)
    assert all(status == 2 for _, status in got[2])  # u9: NOT_FOUND everywhere


def test_a_window_of_only_nan_keeps_its_event_time() -> None:
    """min / max of float64 skip NaN, so a slot can hold events and a None IR: the read still
    reports their newest event time."""
    reg = registry()
    view = reg.view("v_user")
    replay = ViewReplay(view, reg.source("ev"), [0])
    base = random_events(random.Random(5), 1, users=1, dirty=False)[0]
    tiles: dict[TileKey, TileState] = {}
    for t in (T0, T0 + 11 * MINUTE):
        replay.aggregator.update(tiles, dict(base, amount=float("nan")), t)
    read = replay.aggregator.read(tiles, T0 + 12 * MINUTE)
    at = replay.aggregator.served_names.index("amount_min_1h")
    assert (read.values[at], read.last_event_ms[at]) == (None, T0 + 11 * MINUTE)
