"""Helpers to run a real FeatureServer in-process from synchronous code (tests, benchmarks, tools).

:class:`ServerThread` runs the server's asyncio loop in a daemon thread, so a test talks to it
with the blocking :class:`~feature_store.serving.client.FeatureClient` over a real localhost
port. :class:`ManualClock` is a clock tests move by hand. :func:`tiles_from_events` folds events
into encoded tiles with the core (what the feature job writes), for an ``InMemoryTileReader``
or a direct ``INSERT``.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Coroutine, Iterable, Mapping
from typing import Any, TypeVar

from feature_store.core.keys import entity_key_bytes
from feature_store.core.model import Registry, Source, ValueType
from feature_store.core.predicates import compile_predicate
from feature_store.core.tiles import TileKey, TileState, ViewAggregator
from feature_store.serving.server import FeatureServer
from feature_store.serving.settings import ServeSettings

__all__ = ["ManualClock", "ServerThread", "random_events", "test_settings", "tiles_from_events"]

_T = TypeVar("_T")


class ManualClock:
    def __init__(self, now_ms: int) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now


def test_settings(**overrides: Any) -> ServeSettings:
    """Settings for an in-process server: any free port, no metrics port, no reload, no gc tuning."""
    values: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "metrics_port": None,
        "reload_interval_s": 0,
        "tune_gc": False,
        "shutdown_grace_s": 0,
    }
    values.update(overrides)
    return ServeSettings(**values)


test_settings.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


_LOOP: asyncio.AbstractEventLoop | None = None
_LOOP_LOCK = threading.Lock()


def shared_loop() -> asyncio.AbstractEventLoop:
    """One event loop thread per process for every in-process server: grpc.aio does not support
    several loops running at once in a process."""
    global _LOOP  # noqa: PLW0603 - a process-wide singleton
    with _LOOP_LOCK:
        if _LOOP is None:
            _LOOP = asyncio.new_event_loop()
            threading.Thread(target=_LOOP.run_forever, name="feature-server-loop", daemon=True).start()
        return _LOOP


class ServerThread:
    """``with ServerThread(settings, reader=..., registry_store=...) as st: st.target``.

    The server runs on the process's shared loop thread (:func:`shared_loop`)."""

    def __init__(self, settings: ServeSettings, **server_kwargs: Any) -> None:
        self.settings = settings
        self._kwargs = server_kwargs
        self.loop = shared_loop()
        self.server: FeatureServer

    def call(self, coro: Coroutine[Any, Any, _T], timeout_s: float = 30.0) -> _T:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def start(self) -> ServerThread:
        async def make() -> FeatureServer:
            server = FeatureServer(self.settings, **self._kwargs)
            await server.start()
            return server

        self.server = self.call(make())
        return self

    def stop(self) -> None:
        self.call(self.server.stop(0))

    @property
    def target(self) -> str:
        return self.server.target

    def wait_serving(self, timeout_s: float = 30.0) -> None:
        """Block until the registry is loaded and the online store connected."""
        deadline = time.monotonic() + timeout_s
        while not (self.server.reader.connected and self.server.versions.current is not None):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"server not serving after {timeout_s}s: registry {self.server.versions.last_error}"
                )
            time.sleep(0.05)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def tiles_from_events(
    registry: Registry, view_name: str, events: Iterable[Mapping[str, Any]]
) -> dict[bytes, dict[TileKey, bytes]]:
    """entity key -> tile key -> encoded payload, folding ``events`` with the core, as the job does."""
    view = registry.view(view_name)
    source = registry.source(view.source)
    agg = ViewAggregator(view, {f.name: f.type for f in source.fields})
    types = {f.name: f.type for f in source.fields}
    keep = compile_predicate(source.filter, types) if source.filter else None
    states: dict[bytes, dict[TileKey, TileState]] = {}
    for event in events:
        if keep is not None and not keep(event):
            continue
        key = entity_key_bytes([event[k] for k in view.entity_key_fields])
        agg.update(states.setdefault(key, {}), event, int(event[source.event_time_field]))
    return {
        key: {tk: agg.encode(tk[0], state) for tk, state in tiles.items()} for key, tiles in states.items()
    }


_WORDS = {
    "ended_by": ["partner", "self", "network"],
    "reason": ["spam", "nudity", "harassment", "underage", "other"],
    "currency": ["USD", "USD", "EUR"],
}


def random_events(
    source: Source, n: int, users: list[str], now_ms: int, span_ms: int, seed: int = 0
) -> list[dict[str, Any]]:
    """``n`` events of ``source`` in ``[now - span, now)``; every ``*_id`` string field is a user id."""
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    events: list[dict[str, Any]] = []
    for i in range(n):
        event: dict[str, Any] = {}
        for f in source.fields:
            if f.name == source.event_time_field:
                event[f.name] = now_ms - span_ms + rng.randrange(span_ms)
            elif f.nullable and rng.random() < 0.1:
                event[f.name] = None
            elif f.name == "event_id":
                event[f.name] = f"{source.name}-{seed}-{i}"
            elif f.type is ValueType.STRING:
                words = _WORDS.get(f.name)
                event[f.name] = rng.choice(words) if words else rng.choice(users)
            elif f.type is ValueType.INT64:
                event[f.name] = rng.randrange(1, 600)
            elif f.type is ValueType.BOOL:
                event[f.name] = rng.random() < 0.5
            elif f.type is ValueType.FLOAT64:
                event[f.name] = rng.random() * 100
            else:
                event[f.name] = rng.randbytes(4)
        events.append(event)
    return events
