"""Applied registry versions in the server: the current one, hot reload, and versions pinned by requests.

A background task polls the registry store every ``reload_interval_s``; when a new version was
applied it is loaded and compiled off the event loop (a thread), the online store is prepared
for its views, and only then is ``current`` swapped, with one reference assignment, so a request
sees either the old or the new version whole. A request may pin ``registry_version``: other
versions are loaded on demand and kept in a small LRU.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable

from feature_store.core.ports import RegistryStore
from feature_store.definitions.snapshot import registry_from_snapshot
from feature_store.serving.plans import CompiledRegistry

__all__ = ["RegistryUnavailable", "RegistryVersions", "UnknownRegistryVersion"]

log = logging.getLogger(__name__)

MAX_PINNED = 4
FIRST_LOAD_RETRY_S = 2.0


class RegistryUnavailable(Exception):
    """No registry version could be loaded yet (store unreachable or nothing applied)."""


class UnknownRegistryVersion(LookupError):
    def __init__(self, version: int) -> None:
        super().__init__(f"registry version {version} does not exist")
        self.version = version


class RegistryVersions:
    def __init__(
        self,
        open_store: Callable[[], RegistryStore],
        *,
        pinned: int | None = None,
        reload_interval_s: float = 10.0,
        prepare: Callable[[CompiledRegistry], None] = lambda _c: None,
        on_change: Callable[[CompiledRegistry], None] = lambda _c: None,
    ) -> None:
        self._open_store = open_store
        self._store: RegistryStore | None = None
        self._pinned = pinned
        self._interval = reload_interval_s
        self._prepare = prepare  # runs in the loading thread (blocking work allowed)
        self._on_change = on_change  # runs on the event loop after a swap
        self.current: CompiledRegistry | None = None
        self.last_error = "not loaded yet"
        self._others: OrderedDict[int, CompiledRegistry] = OrderedDict()
        self._loading: dict[int, asyncio.Future[CompiledRegistry | None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    # --- blocking parts, run in a thread -----------------------------------------------------

    def _store_or_open(self) -> RegistryStore:
        if self._store is None:
            self._store = self._open_store()
        return self._store

    def _load_blocking(self, version: int | None, known: int | None) -> CompiledRegistry | None:
        """Compile ``version`` (None: latest) unless it is ``known``; None when nothing to do."""
        store = self._store_or_open()
        snapshot = store.latest() if version is None else store.get(version)
        if snapshot is None:
            if version is not None:
                raise UnknownRegistryVersion(version)
            raise RegistryUnavailable("no registry version has been applied to the registry store")
        if snapshot.version == known:
            return None
        compiled = CompiledRegistry(registry_from_snapshot(snapshot))
        self._prepare(compiled)
        return compiled

    # --- on the loop -------------------------------------------------------------------------

    async def refresh(self) -> bool:
        """Load the latest (or pinned) version if it changed; True when ``current`` was swapped."""
        async with self._lock:
            known = self.current.version if self.current is not None else None
            if self._pinned is not None and known is not None:
                return False
            loop = asyncio.get_running_loop()
            try:
                compiled = await loop.run_in_executor(None, self._load_blocking, self._pinned, known)
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, RegistryUnavailable | UnknownRegistryVersion):
                    self._store = None  # reopen next time
                log.warning("registry reload failed (still serving %s): %s", known, self.last_error)
                return False
            if compiled is None:
                return False
            old = self.current
            self.current = compiled
            log.info(
                "serving registry version %s (was %s)%s",
                compiled.version,
                old.version if old else None,
                "; services that cannot be served: " + "; ".join(compiled.service_errors.values())
                if compiled.service_errors
                else "",
            )
            self._on_change(compiled)
            return True

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._poll(), name="registry-reload")

    async def _poll(self) -> None:
        while True:
            if self.current is None:
                await asyncio.sleep(min(FIRST_LOAD_RETRY_S, self._interval or FIRST_LOAD_RETRY_S))
            elif self._pinned is not None or self._interval <= 0:
                return
            else:
                await asyncio.sleep(self._interval)
            await self.refresh()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def get(self, version: int) -> CompiledRegistry:
        """``version`` 0: the current one; otherwise that applied version (loaded on demand)."""
        current = self.current
        if current is None:
            raise RegistryUnavailable(f"no registry loaded: {self.last_error}")
        if version in (0, current.version):
            return current
        cached = self._others.get(version)
        if cached is not None:
            self._others.move_to_end(version)
            return cached
        pending = self._loading.get(version)
        if pending is None:
            loop = asyncio.get_running_loop()
            pending = self._loading[version] = asyncio.ensure_future(
                loop.run_in_executor(None, self._load_blocking, version, None)
            )
            pending.add_done_callback(lambda _f: self._loading.pop(version, None))
        compiled = await asyncio.shield(pending)
        if compiled is None:  # only when version == the known one, which get() handled above
            raise UnknownRegistryVersion(version)
        self._others[version] = compiled
        if len(self._others) > MAX_PINNED:
            self._others.popitem(last=False)
        return compiled
