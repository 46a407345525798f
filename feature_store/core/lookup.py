"""What a look-up returns for one (entity, view) at time ``t``: values, statuses, timestamps.

Shared by the gRPC server and the offline export, so training data carries the same
values *and* the same statuses serving returned. Rules, per served feature:

1. the store has no tile for the entity in this view          -> NOT_FOUND, no value
2. the entity's newest event in the view is older than the TTL -> OUTSIDE_MAX_AGE, no value
   (the TTL is enforced at read time, not only by the store's expiry)
3. the window holds no value (avg/min/max/last of nothing)      -> NULL_VALUE
4. otherwise                                                   -> PRESENT
   (a count over an empty window is a PRESENT 0: the entity is known and was quiet)

The event timestamp is the newest event time behind the value (0 when none).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum
from typing import Any, NamedTuple

from feature_store.core.tiles import NO_EVENT, TileState, ViewRead


class FieldStatus(IntEnum):
    """Numbered as feature_store.serving.v1.FieldStatus."""

    PRESENT = 1
    NOT_FOUND = 2
    NULL_VALUE = 3
    OUTSIDE_MAX_AGE = 4
    ERROR = 5


class Resolved(NamedTuple):
    values: list[Any]
    statuses: list[FieldStatus]
    event_times_ms: list[int]


def newest_event_ms(tiles: Iterable[TileState]) -> int | None:
    """The newest event time in any slot of any tile, or None when no event reached them."""
    newest = NO_EVENT
    for state in tiles:
        for last in state.last_ms:
            newest = max(newest, last)
    return None if newest == NO_EVENT else newest


def not_found(n: int) -> Resolved:
    return Resolved([None] * n, [FieldStatus.NOT_FOUND] * n, [0] * n)


def resolve(read: ViewRead | None, newest_ms: int | None, ttl_ms: int | None, t_ms: int) -> Resolved:
    """Apply the rules above to one view's read; ``read is None`` means no tiles were found."""
    if read is None or newest_ms is None:
        return not_found(len(read.values) if read is not None else 0)
    n = len(read.values)
    if ttl_ms is not None and t_ms - newest_ms > ttl_ms:
        return Resolved([None] * n, [FieldStatus.OUTSIDE_MAX_AGE] * n, [v or 0 for v in read.last_event_ms])
    statuses = [FieldStatus.NULL_VALUE if v is None else FieldStatus.PRESENT for v in read.values]
    return Resolved(read.values, statuses, [v or 0 for v in read.last_event_ms])
