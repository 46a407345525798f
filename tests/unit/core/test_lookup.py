from __future__ import annotations

from feature_store.core.lookup import FieldStatus, newest_event_ms, resolve
from feature_store.core.tiles import NO_EVENT, TileState, ViewRead

HOUR = 3_600_000


def test_no_tiles_is_not_found() -> None:
    assert resolve(ViewRead([None, 0], [None, None]), None, HOUR, 10).statuses == [FieldStatus.NOT_FOUND] * 2


def test_ttl_is_enforced_at_read_time() -> None:
    read = ViewRead([3, 1.5], [1000, 1000])

    fresh = resolve(read, 1000, HOUR, 1000 + HOUR)
    stale = resolve(read, 1000, HOUR, 1001 + HOUR)

    assert fresh.statuses == [FieldStatus.PRESENT] * 2
    assert fresh.values == [3, 1.5]
    assert stale.statuses == [FieldStatus.OUTSIDE_MAX_AGE] * 2
    assert stale.values == [None, None]


def test_empty_window_count_is_a_present_zero_and_avg_is_null() -> None:
    resolved = resolve(ViewRead([0, None], [None, None]), 5, None, 10 * HOUR)

    assert resolved.statuses == [FieldStatus.PRESENT, FieldStatus.NULL_VALUE]
    assert resolved.event_times_ms == [0, 0]


def test_newest_event_ignores_empty_slots() -> None:
    tiles = [TileState([0, 0], [NO_EVENT, 7]), TileState([0], [3])]

    assert newest_event_ms(tiles) == 7
    assert newest_event_ms([TileState([0], [NO_EVENT])]) is None
