"""TileWrites: the job's asynchronous, confirmed tile writes (driver replaced by a stub session)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from cassandra.query import BatchStatement, SimpleStatement

from feature_store.definitions.compiler import load_registry
from feature_store.stream.feature_job import TileWrites, expiry_horizon_ms
from feature_store.stream.tile_writer import ViewTiles

ROOT = Path(__file__).resolve().parents[3]


class _Future:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error

    def add_callbacks(
        self,
        callback: Any,
        errback: Any,
        callback_args: tuple[Any, ...] = (),
        errback_args: tuple[Any, ...] = (),
    ) -> None:
        if self.error is None:
            callback(None, *callback_args)
        else:
            errback(self.error, *errback_args)


class _Statement(SimpleStatement):  # type: ignore[misc]
    """Stands in for the prepared INSERT: batches accept it, ``bind`` marks a lone write."""

    def __init__(self) -> None:
        super().__init__("INSERT INTO t (k, g, s, p) VALUES (%s, %s, %s, %s) USING TTL %s AND TIMESTAMP %s")

    def bind(self, values: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
        return ("bound", values)


class _Session:
    """Answers each request at once; fails the requests whose number is in ``fail``."""

    def __init__(self, fail: set[int] = frozenset(), raise_on: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.requests: list[Any] = []
        self.fail = fail
        self.raise_on = raise_on

    def execute_async(self, request: Any, timeout: Any = None) -> _Future:
        n = len(self.requests)
        self.requests.append(request)
        if n in self.raise_on:
            raise RuntimeError("no host available")
        return _Future(RuntimeError("write timeout") if n in self.fail else None)


def _done(writes: TileWrites) -> bool:
    return writes.done


def rows(*skeys: str) -> list[tuple[str, tuple[Any, ...]]]:
    return [(k, (b"e", 1, 2, b"payload", 60, 7)) for k in skeys]


def test_a_lone_tile_is_an_insert_and_several_are_one_batch() -> None:
    session, window = _Session(), threading.BoundedSemaphore(4)
    writes = TileWrites(window)

    writes.start(session, _Statement(), rows("a"))
    writes.start(session, _Statement(), rows("b", "c"))
    writes.seal()

    assert writes.done
    assert not writes.failed
    assert writes.written == 3
    assert session.requests[0] == ("bound", rows("a")[0][1])
    assert isinstance(session.requests[1], BatchStatement)
    assert len(session.requests[1]) == 2
    for _ in range(4):  # every slot of the window came back
        assert window.acquire(blocking=False)


@pytest.mark.parametrize("how", ["errback", "raises"])
def test_failed_requests_keep_their_tiles_for_the_retry(how: str) -> None:
    session = _Session(fail={1}) if how == "errback" else _Session(raise_on={1})
    window = threading.BoundedSemaphore(2)
    writes = TileWrites(window)

    for skeys in (("a",), ("b", "c"), ("d",)):
        writes.start(session, _Statement(), rows(*skeys))
    writes.seal()

    assert writes.done
    assert writes.failed == {"b", "c"}
    assert writes.written == 2
    assert isinstance(writes.error, RuntimeError)
    assert window.acquire(blocking=False)
    assert window.acquire(blocking=False)


def test_not_done_until_sealed_and_every_answer_is_in() -> None:
    pending: list[Any] = []

    class Later(_Session):
        def execute_async(self, request: Any, timeout: Any = None) -> Any:
            outer = self

            class F:
                def add_callbacks(
                    self, cb: Any, eb: Any, callback_args: tuple[Any, ...] = (), **_: Any
                ) -> None:
                    pending.append(lambda: cb(None, *callback_args))

            outer.requests.append(request)
            return F()

    writes = TileWrites(threading.BoundedSemaphore(8))
    writes.start(Later(), _Statement(), rows("a"))
    pending.pop()()
    assert not writes.done  # answered, but more writes may still start
    writes.start(Later(), _Statement(), rows("b"))
    writes.seal()
    assert not writes.done
    assert not writes.stalled
    pending.pop()()
    assert _done(writes)  # (a call: mypy would keep the narrowing of the property above)
    assert writes.written == 2


def test_state_expires_by_the_wall_clock_when_the_watermark_is_held_back() -> None:
    registry = load_registry(ROOT / "registry")
    view = registry.view("user_likes_received")  # 1h and 24h windows, 5 min and 1 h tiles
    tiles = ViewTiles(view, registry.source("like"))
    now = 1_700_000_000_000
    held_back = -(1 << 63)  # a partition without records: Flink's minimum watermark
    old_tile = (300_000, now - 3 * 3_600_000 - now % 300_000)  # 5 min tile, 3 h ago
    recent = (300_000, now - now % 300_000)
    assert not tiles.expired(old_tile, held_back)  # by the watermark alone it would stay forever
    assert tiles.expired(old_tile, expiry_horizon_ms(held_back, now))
    assert not tiles.expired(recent, expiry_horizon_ms(held_back, now))
    # a watermark ahead of the wall clock (a replay of future-dated events) still counts
    assert expiry_horizon_ms(now + 3_600_000, now) == now + 3_600_000
