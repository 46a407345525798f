"""The server's port to the online store: asynchronous single-partition reads of an entity's tiles.

:class:`TileReader` is what the request path needs: ``read(view, entity_key)`` returns an
``asyncio.Future`` of the entity's tile rows in that view, resolved on the server's event loop.
Two implementations:

- :class:`CqlTileReader`: the CQL store (ScyllaDB / Cassandra) through the driver's
  ``execute_async``. Reads asked for in the same event-loop iteration are coalesced per
  (entity table, entity key) into ONE partition read of all the views asked for
  (``feature_view IN ?``): a request for 20 features of 10 views of one user is one store
  read. The driver's ``ResponseFuture`` is bridged to asyncio with ``add_callbacks`` and a
  batched ``loop.call_soon_threadsafe``. It connects in a background thread and keeps retrying,
  so the server starts (NOT_SERVING) while the store is down and serves as soon as it answers;
  once connected, the driver reconnects to nodes by itself.
- :class:`InMemoryTileReader`: tiles held in a dict, for tests and to benchmark the server
  without a store. An integration test proves both return the same rows for the same tiles.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from feature_store.adapters.cql import CqlConfig, make_cluster
from feature_store.adapters.cql_online_store import CqlOnlineStore, TileRows
from feature_store.core.model import FeatureView
from feature_store.core.tiles import TileKey

__all__ = ["CqlTileReader", "InMemoryTileReader", "StoreUnavailable", "TileReader", "TileRows"]

log = logging.getLogger(__name__)


class StoreUnavailable(Exception):
    """The online store cannot be read right now (not connected, or every node is down)."""


class TileReader(Protocol):
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Begin connecting (non-blocking); reads before that fail with StoreUnavailable."""
        ...

    @property
    def connected(self) -> bool: ...

    def prepare(self, views: Sequence[FeatureView]) -> None:
        """Get ready to read these views (prepared statements); blocking, call off the loop."""
        ...

    def read(self, view: FeatureView, entity_key: bytes) -> asyncio.Future[TileRows]:
        """The entity's tiles in this view as ((granularity_ms, tile_start_ms), payload) rows."""
        ...

    def close(self) -> None: ...


class CqlTileReader:
    """Reads tiles from the CQL store with the driver's async API (see the module docstring)."""

    def __init__(
        self,
        config: CqlConfig,
        *,
        request_timeout_s: float = 1.0,
        retry_interval_s: float = 2.0,
        on_connected: Callable[[], None] | None = None,
    ) -> None:
        self._config = dataclasses.replace(config, request_timeout_s=request_timeout_s)
        self._retry_interval_s = retry_interval_s
        self._on_connected = on_connected
        self._loop: asyncio.AbstractEventLoop | None = None
        self._completions: _Completions | None = None
        self._cluster: Any = None
        self._store: CqlOnlineStore | None = None
        self._views: dict[str, FeatureView] = {}
        # reads asked for in this loop iteration: (table, entity key) -> view name -> futures
        self._pending: dict[tuple[str, bytes], dict[str, list[asyncio.Future[TileRows]]]] = {}
        self._flush_scheduled = False
        self.partition_reads = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str = "not connected yet"

    @property
    def connected(self) -> bool:
        return self._store is not None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._completions = _Completions(loop)
        self._thread = threading.Thread(target=self._connect_loop, name="cql-connect", daemon=True)
        self._thread.start()

    def _connect_loop(self) -> None:
        from cassandra.query import tuple_factory  # noqa: PLC0415 - driver import kept off module import

        while not self._closed.is_set():
            cluster = make_cluster(self._config)
            cluster.profile_manager.default.row_factory = tuple_factory
            try:
                session = cluster.connect()
                store = CqlOnlineStore(session, self._config.keyspace)
                with self._lock:
                    store.prepare(tuple(self._views.values()))
            except Exception as exc:  # any driver failure means: retry later
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("online store %s not reachable, retrying: %s", self._describe(), self.last_error)
                cluster.shutdown()
                self._closed.wait(self._retry_interval_s)
                continue
            with self._lock:
                if self._closed.is_set():
                    cluster.shutdown()
                    return
                self._cluster, self._store = cluster, store
            log.info("online store %s connected", self._describe())
            if self._on_connected is not None and self._loop is not None:
                self._loop.call_soon_threadsafe(self._on_connected)
            return

    def _describe(self) -> str:
        hosts = ",".join(self._config.hosts)
        return f"cql://{hosts}:{self._config.port}/{self._config.keyspace}"

    def prepare(self, views: Sequence[FeatureView]) -> None:
        with self._lock:
            for view in views:
                self._views[view.name] = view
            store = self._store
        if store is not None:
            store.prepare(tuple(views))

    def read(self, view: FeatureView, entity_key: bytes) -> asyncio.Future[TileRows]:
        loop = self._loop
        assert loop is not None, "start() the reader first"
        fut: asyncio.Future[TileRows] = loop.create_future()
        if self._store is None:
            fut.set_exception(StoreUnavailable(f"online store not connected ({self.last_error})"))
            return fut
        waiting = self._pending.get((view.table, entity_key))
        if waiting is None:
            waiting = self._pending[(view.table, entity_key)] = {}
            if not self._flush_scheduled:
                self._flush_scheduled = True
                loop.call_soon(self._flush)
        waiting.setdefault(view.name, []).append(fut)
        return fut

    def _flush(self) -> None:
        """Issue one partition read per (table, entity key) asked for since the last flush."""
        self._flush_scheduled = False
        pending, self._pending = self._pending, {}
        store, completions = self._store, self._completions
        assert completions is not None
        for (table, entity_key), waiting in pending.items():
            if store is None:
                error = StoreUnavailable(f"online store not connected ({self.last_error})")
                completions.put_many([(f, error) for futs in waiting.values() for f in futs])
                continue
            try:
                response = store.read_views_async(table, sorted(waiting), entity_key)
            except Exception as exc:  # e.g. NoHostAvailable raised synchronously
                error = StoreUnavailable(f"{type(exc).__name__}: {exc}")
                completions.put_many([(f, error) for futs in waiting.values() for f in futs])
                continue
            self.partition_reads += 1
            _bridge(response, waiting, completions)

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            cluster, self._cluster, self._store = self._cluster, None, None
        if cluster is not None:
            cluster.shutdown()


class _Completions:
    """Hands driver-thread completions to the event loop in batches.

    ``loop.call_soon_threadsafe`` writes to the loop's self-pipe on every call; with hundreds
    of reads per request that is hundreds of wake-ups. Completions are queued instead, and one
    wake-up drains everything that finished meanwhile.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: list[tuple[asyncio.Future[TileRows], TileRows | BaseException]] = []
        self._lock = threading.Lock()
        self._scheduled = False

    def put_many(self, items: list[tuple[asyncio.Future[TileRows], TileRows | BaseException]]) -> None:
        with self._lock:
            self._items.extend(items)
            if self._scheduled:
                return
            self._scheduled = True
        self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            items, self._items = self._items, []
            self._scheduled = False
        for fut, outcome in items:
            if fut.done():
                continue
            if isinstance(outcome, BaseException):
                fut.set_exception(outcome)
            else:
                fut.set_result(outcome)


def _bridge(
    response: Any, waiting: dict[str, list[asyncio.Future[TileRows]]], completions: _Completions
) -> None:
    """Resolve every view's futures from one driver ResponseFuture (callbacks on driver threads).

    Rows are (feature_view, granularity_ms, tile_start_ms, payload), grouped by view; a view
    with no rows resolves to ``[]``.
    """
    by_view: dict[str, TileRows] = {name: [] for name in waiting}

    def on_rows(page: Iterable[Sequence[Any]]) -> None:
        for r in page:
            rows = by_view.get(r[0])
            if rows is not None:
                rows.append(((r[1], r[2]), r[3]))
        if response.has_more_pages:
            response.start_fetching_next_page()
            return
        completions.put_many([(f, by_view[name]) for name, futs in waiting.items() for f in futs])

    def on_error(exc: BaseException) -> None:
        error = StoreUnavailable(f"{type(exc).__name__}: {exc}")
        completions.put_many([(f, error) for futs in waiting.values() for f in futs])

    response.add_callbacks(callback=on_rows, errback=on_error)


def _set_result(fut: asyncio.Future[TileRows], rows: TileRows) -> None:
    if not fut.done():
        fut.set_result(rows)


class InMemoryTileReader:
    """Tiles in a dict keyed by (view name, entity key); optional failures and delay for tests."""

    def __init__(
        self,
        tiles: Mapping[tuple[str, bytes], Mapping[TileKey, bytes]] | None = None,
        *,
        delay_s: float = 0.0,
    ) -> None:
        self._tiles: dict[tuple[str, bytes], dict[TileKey, bytes]] = {
            k: dict(v) for k, v in (tiles or {}).items()
        }
        self._loop: asyncio.AbstractEventLoop | None = None
        self.delay_s = delay_s
        self.failing_views: set[str] = set()  # reads of these views fail
        self.hanging_views: set[str] = set()  # reads of these views never answer
        self.down = False  # every read fails, as with the store unreachable
        self.reads = 0

    @property
    def connected(self) -> bool:
        return not self.down

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def prepare(self, views: Sequence[FeatureView]) -> None:
        pass

    def put(self, view: FeatureView, entity_key: bytes, key: TileKey, payload: bytes) -> None:
        self._tiles.setdefault((view.name, entity_key), {})[key] = payload

    def rows(self, view: FeatureView, entity_key: bytes) -> TileRows:
        """Rows in the CQL store's order: granularity ascending, tile start descending."""
        tiles = self._tiles.get((view.name, entity_key), {})
        return sorted(tiles.items(), key=lambda kv: (kv[0][0], -kv[0][1]))

    def read(self, view: FeatureView, entity_key: bytes) -> asyncio.Future[TileRows]:
        loop = self._loop
        assert loop is not None, "start() the reader first"
        self.reads += 1
        fut: asyncio.Future[TileRows] = loop.create_future()
        if view.name in self.hanging_views:
            return fut
        if self.down or view.name in self.failing_views:
            fut.set_exception(StoreUnavailable(f"injected failure reading {view.name}"))
            return fut
        rows = self.rows(view, entity_key)
        if self.delay_s > 0:
            loop.call_later(self.delay_s, _set_result, fut, rows)
        else:
            fut.set_result(rows)
        return fut

    def close(self) -> None:
        pass
