"""A hand-written DuckDB query computing ``ranking_v1`` (18 features) from the raw archive.

This is what an engineer fluent in SQL would write for this one service, without our engine:
per feature view, the spine's rows (``user_id``, ``t``) are put in the same sorted stream as
the view's events, and every feature is a window aggregate whose frame is the feature's window
read at the row's time. No status columns, no dedup of replayed events, no dead-letter
anti-join (the generated archive has neither), no generality: the views, fields, filters and
windows below are typed in by hand from ``registry/``.

Window rule (``core.tiles``): a window of length ``W`` with tiles of ``g`` read at ``t`` holds
the events with ``floor(t/g)*g - W + g <= event_time <= t``, so its frame, ordered by time, is
``RANGE BETWEEN (t % g + W - g) PRECEDING AND CURRENT ROW`` (``CURRENT ROW`` in ``RANGE`` mode
includes every event at exactly ``t``). Tile sizes are the registry's defaults: 5 min for 1 h,
1 h for 24 h and 7 d, 1 d for 30 d.

The job's rules the query repeats by hand: an event whose entity key field of *any* view of its
source is null or ``''`` is dropped (``match_request``: ``user_id`` and ``target_id``;
``match_accept``: ``accepter_id`` and ``requester_id``; ``video_call_end``: ``user_id`` and
``partner_id``), and the ``purchase`` source keeps ``currency = 'USD'`` only.

Values where ours differs by design: ours is null with a status (``NOT_FOUND``,
``OUTSIDE_MAX_AGE``) where this query says 0 (counts, sums, distinct counts) or null (avg,
max); ``distinct_partners_7d`` is exact here and a HyperLogLog estimate in ours (exact for the
small sets of this data set, see ``core.sketch``).
"""

from __future__ import annotations

from pathlib import Path

_MIN = 60_000
_HOUR = 60 * _MIN
_DAY = 24 * _HOUR


def _frame(length_ms: int, tile_ms: int) -> str:
    """The window clause of a tile-granular window, read at each row's ``t``."""
    start = f"(t % {tile_ms} + {length_ms - tile_ms}) PRECEDING"
    return f"(PARTITION BY k ORDER BY t RANGE BETWEEN {start} AND CURRENT ROW)"


_WINDOWS = f"""
    WINDOW w1h AS {_frame(_HOUR, 5 * _MIN)},
           w24h AS {_frame(_DAY, _HOUR)},
           w7d AS {_frame(7 * _DAY, _HOUR)},
           w30d AS {_frame(30 * _DAY, _DAY)},
           wlife AS (PARTITION BY k ORDER BY t RANGE UNBOUNDED PRECEDING)"""

# Per view: its source, its events (k = entity key, t = event time, ev = 1, the fields the
# features read) and its features as window aggregates over the events UNION the spine rows
# (whose ev and fields are null).
_MATCH_REQUEST_KEYS = "user_id <> '' AND target_id <> ''"
_MATCH_ACCEPT_KEYS = "accepter_id <> '' AND requester_id <> ''"
_VIEWS: dict[str, tuple[str, str, tuple[tuple[str, str], ...]]] = {
    "user_match_requests": (
        "match_request",
        f"SELECT user_id AS k, event_time AS t, 1 AS ev FROM {{src}} WHERE {_MATCH_REQUEST_KEYS}",
        (
            ("match_requests_sent_1h", "count(ev) OVER w1h"),
            ("match_requests_sent_24h", "count(ev) OVER w24h"),
        ),
    ),
    "user_match_inbound": (
        "match_request",
        f"SELECT target_id AS k, event_time AS t, 1 AS ev FROM {{src}} WHERE {_MATCH_REQUEST_KEYS}",
        (("match_requests_received_24h", "count(ev) OVER w24h"),),
    ),
    "user_match_answers": (
        "match_accept",
        "SELECT accepter_id AS k, event_time AS t, 1 AS ev, accepted FROM {src} WHERE " + _MATCH_ACCEPT_KEYS,
        (
            ("matches_accepted_1h", "count(ev) FILTER (WHERE accepted) OVER w1h"),
            ("matches_accepted_24h", "count(ev) FILTER (WHERE accepted) OVER w24h"),
            ("requests_answered_7d", "count(ev) OVER w7d"),
        ),
    ),
    "user_match_outcomes": (
        "match_accept",
        "SELECT requester_id AS k, event_time AS t, 1 AS ev, accepted FROM {src} WHERE " + _MATCH_ACCEPT_KEYS,
        (
            ("requests_accepted_by_others_24h", "count(ev) FILTER (WHERE accepted) OVER w24h"),
            ("requests_accepted_by_others_7d", "count(ev) FILTER (WHERE accepted) OVER w7d"),
            ("requests_declined_by_others_7d", "count(ev) FILTER (WHERE NOT accepted) OVER w7d"),
        ),
    ),
    "user_likes_received": (
        "like",
        "SELECT target_id AS k, event_time AS t, 1 AS ev FROM {src} WHERE target_id <> ''",
        (
            ("likes_received_1h", "count(ev) OVER w1h"),
            ("likes_received_24h", "count(ev) OVER w24h"),
        ),
    ),
    "user_calls": (
        "video_call_end",
        "SELECT user_id AS k, event_time AS t, 1 AS ev, duration_s, partner_id FROM {src} "
        "WHERE user_id <> '' AND partner_id <> ''",
        (
            # the exact integer sum over the count, rounded once (DuckDB's windowed avg() is
            # 1 ulp off in a few rows of a million)
            ("call_duration_avg_7d", "(sum(duration_s) OVER w7d)::DOUBLE / count(duration_s) OVER w7d"),
            ("call_duration_max_7d", "max(duration_s) OVER w7d"),
            ("call_seconds_24h", "coalesce(sum(duration_s) OVER w24h, 0)::BIGINT"),
            ("calls_lifetime", "count(ev) OVER wlife"),
            ("distinct_partners_7d", "count(DISTINCT partner_id) OVER w7d"),
        ),
    ),
    "user_chat": (
        "chat_message",
        "SELECT user_id AS k, event_time AS t, 1 AS ev FROM {src} WHERE user_id <> ''",
        (("chat_messages_24h", "count(ev) OVER w24h"),),
    ),
    "user_purchases": (
        "purchase",
        "SELECT user_id AS k, event_time AS t, 1 AS ev, amount_cents FROM {src} "
        "WHERE user_id <> '' AND currency = 'USD'",
        (("purchase_amount_cents_30d", "coalesce(sum(amount_cents) OVER w30d, 0)::BIGINT"),),
    ),
}
VIEWS: tuple[str, ...] = tuple(_VIEWS)
FEATURES: tuple[str, ...] = tuple(name for _, _, features in _VIEWS.values() for name, _ in features)


def _source(archive: Path, source: str) -> str:
    glob = str(archive / f"source={source}" / "*" / "*.parquet").replace("'", "''")
    return f"read_parquet('{glob}', hive_partitioning = false)"


def view_features(view: str) -> list[str]:
    return [name for name, _ in _VIEWS[view][2]]


def view_query(archive: Path, view: str, spine: str, *, every_row: bool = False) -> str:
    """One view's features at every spine row (columns ``row_idx`` and the features).

    ``spine`` is a relation with ``row_idx``, ``user_id`` and ``t`` (epoch ms). With
    ``every_row``, also at every event time (``row_idx`` null), one row per ``(k, t)``: the
    precomputed feature table Feast is given.
    """
    source, events, features = _VIEWS[view]
    select = ", ".join(f"{expr} AS {name}" for name, expr in features)
    rows = (
        f"({events.format(src=_source(archive, source))}) "
        f"UNION ALL BY NAME (SELECT row_idx, user_id AS k, t FROM {spine})"
    )
    keep = "TRUE" if every_row else "row_idx IS NOT NULL"
    return f"SELECT row_idx, k, t, {select} FROM ({rows}) {_WINDOWS} QUALIFY {keep}"


def spine_relation(spine_path: Path) -> str:
    """The spine as (row_idx, user_id, t): row_idx is the row's position in the file."""
    path = str(spine_path).replace("'", "''")
    return (
        f"(SELECT file_row_number AS row_idx, user_id, epoch_ms(ts) AS t "
        f"FROM read_parquet('{path}', file_row_number = true))"
    )


def training_set_query(archive: Path, spine_path: Path) -> str:
    """The spine's columns and the 18 features, in spine order."""
    spine = spine_relation(spine_path)
    path = str(spine_path).replace("'", "''")
    ctes = ", ".join(f"{v} AS ({view_query(archive, v, spine)})" for v in VIEWS)
    columns = ", ".join(f"{v}.{f}" for v in VIEWS for f in view_features(v))
    joins = "".join(f" JOIN {v} USING (row_idx)" for v in VIEWS)
    return (
        f"WITH s AS (SELECT file_row_number AS row_idx, * EXCLUDE (file_row_number) "
        f"FROM read_parquet('{path}', file_row_number = true)), {ctes} "
        f"SELECT s.* EXCLUDE (row_idx), {columns} FROM s{joins} ORDER BY row_idx"
    )


def feast_table_query(archive: Path, view: str, spine_path: Path) -> str:
    """The precomputed feature table Feast is given for ``view``: the view's values as of every
    event time and every spine time of each entity, one row per (``user_id``,
    ``event_timestamp``)."""
    names = ", ".join(view_features(view))
    every = view_query(archive, view, spine_relation(spine_path), every_row=True)
    return (
        f"SELECT DISTINCT ON (k, t) k AS user_id, "
        f"to_timestamp(t // 1000) + to_milliseconds(t % 1000) AS event_timestamp, {names} "
        f"FROM ({every})"
    )


def feature_types(view: str) -> list[tuple[str, str]]:
    """(name, "int64" | "float64") of the view's features, as this query computes them."""
    return [(name, "float64" if "DOUBLE" in expr else "int64") for name, expr in _VIEWS[view][2]]


def view_events(view: str) -> tuple[str, str]:
    """(source name, the SQL selecting the view's events from ``{src}``)."""
    source, events, _ = _VIEWS[view]
    return source, events
