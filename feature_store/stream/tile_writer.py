"""The per-event logic of the feature job, free of PyFlink so it is unit-testable.

``EventRouter`` turns one Kafka record into either a dead letter or one routed
event per feature view (entity key extracted). ``TileStore``-agnostic helpers
apply routed events to tiles held as bytes, with a per-tile version that makes
store writes idempotent: ``USING TIMESTAMP`` = tile start (µs) + version, so a
replay after recovery rewrites identical cells and never lets an older state win.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

from feature_store.adapters.avro_wire import DeadLetterReason, DecodeError, WireDecoder
from feature_store.adapters.schema_registry import SchemaRegistryClient
from feature_store.core.keys import KEY_SEP, entity_key_text
from feature_store.core.model import FeatureView, Registry, Source
from feature_store.core.predicates import Predicate, compile_predicate, predicate_fields
from feature_store.core.tiles import TileKey, TileState, ViewAggregator, tile_retention_ms

_VERSION = struct.Struct(">q")
NO_WATERMARK = -(1 << 63)  # Flink's watermark before the first one (Long.MIN_VALUE)


class Routed(NamedTuple):
    """One event for one feature view: what crosses the key_by shuffle (kept small)."""

    key: str  # f"{view index}\x1f{entity key}": the Flink key
    event_time_ms: int
    fields: dict[str, Any]  # only the fields this view reads


class DeadLetter(NamedTuple):
    reason: DeadLetterReason
    message: str
    payload: bytes
    partition: int
    offset: int


def view_fields(view: FeatureView, source: Source) -> tuple[str, ...]:
    needed: set[str] = set()
    for f in view.features:
        if f.input_field:
            needed.add(f.input_field)
        if f.where:
            needed |= predicate_fields(f.where)
    return tuple(sorted(n for n in needed if source.field_type(n) is not None))


class EventRouter:
    """Decode, filter and fan out the events of one source to its feature views."""

    def __init__(
        self, registry: Registry, source_name: str, schema_registry: SchemaRegistryClient | None = None
    ) -> None:
        source = registry.source(source_name)
        self.source = source
        self._decoder = WireDecoder(source, registry.sources, schema_registry)
        types = {f.name: f.type for f in source.fields}
        self._filter: Predicate | None = compile_predicate(source.filter, types) if source.filter else None
        self._event_time = source.event_time_field
        self._lateness_ms = source.allowed_lateness_ms
        # per Kafka partition: the newest event time routed so far (see route)
        self._newest: dict[int, int] = {}
        self.views: tuple[FeatureView, ...] = tuple(v for v in registry.views if v.source == source_name)
        self._routes = tuple(
            (str(index), view.entity_key_fields, view_fields(view, source))
            for index, view in enumerate(self.views)
        )

    def observe(self, partition: int, newest_ms: int) -> None:
        """Take the newest event time another router (the job's JVM router, which sees every
        record of the partition first) has seen on ``partition``."""
        if newest_ms > self._newest.get(partition, NO_WATERMARK):
            self._newest[partition] = newest_ms

    def route(
        self,
        payload: bytes,
        partition: int,
        offset: int,
        watermark_ms: int | Callable[[], int] = NO_WATERMARK,
    ) -> list[Routed] | DeadLetter:
        """Route one record; a too-late event is dead-lettered once here (with the original
        bytes), before it fans out to views.

        Too late: more than the allowed lateness behind ``watermark_ms`` *and* behind the newest
        event this router has seen from the same partition. The watermark alone is not enough:
        Flink's Kafka source only counts a partition in the watermark once it has fetched
        records of it, so right after a start or a restore the records of one partition can
        push the watermark past another partition's unread, in-order records, which would then
        be judged late. An event is late only against what its own partition already showed.

        ``watermark_ms`` may be a function returning it: it is only asked for an event behind
        its partition's newest by more than the lateness (in the job it is a call into the JVM).
        """
        try:
            event = self._decoder.decode(payload)
        except DecodeError as exc:
            return DeadLetter(exc.reason, exc.message, payload, partition, offset)
        event_time = event.get(self._event_time)
        if not isinstance(event_time, int):
            return DeadLetter(
                DeadLetterReason.MISSING_EVENT_TIME,
                f"field {self._event_time!r} is null",
                payload,
                partition,
                offset,
            )
        newest = self._newest.get(partition)
        if newest is None or event_time > newest:
            self._newest[partition] = event_time
        elif (
            event_time < newest - self._lateness_ms
            and event_time
            < (watermark_ms := watermark_ms() if callable(watermark_ms) else watermark_ms) - self._lateness_ms
        ):
            return DeadLetter(
                DeadLetterReason.TOO_LATE,
                f"event time {event_time} is more than {self._lateness_ms} ms behind the watermark "
                f"{watermark_ms} and the newest event {newest} of partition {partition}",
                payload,
                partition,
                offset,
            )
        if self._filter is not None and not self._filter(event):
            return []
        routed: list[Routed] = []
        for index, key_fields, fields in self._routes:
            key = tuple(event.get(k) for k in key_fields)
            if any(v is None or v == "" for v in key):
                return DeadLetter(
                    DeadLetterReason.MISSING_ENTITY_KEY,
                    f"entity key field(s) {', '.join(key_fields)} missing",
                    payload,
                    partition,
                    offset,
                )
            routed.append(
                Routed(index + KEY_SEP + entity_key_text(key), event_time, {f: event.get(f) for f in fields})
            )
        return routed


def split_key(key: str) -> tuple[int, str]:
    index, _, entity = key.partition(KEY_SEP)
    return int(index), entity


def tile_state_key(key: TileKey) -> str:
    return f"{key[0]}:{key[1]}"


def parse_tile_state_key(text: str) -> TileKey:
    g, _, start = text.partition(":")
    return int(g), int(start)


def pack(version: int, payload: bytes) -> bytes:
    return _VERSION.pack(version) + payload


def unpack(data: bytes) -> tuple[int, bytes]:
    return _VERSION.unpack_from(data)[0], data[_VERSION.size :]


def write_timestamp_us(key: TileKey, version: int) -> int:
    """The cell timestamp: strictly increasing per tile, identical on replay."""
    return key[1] * 1000 + version


class PackedTiles(Protocol):
    """Where a key's tiles live as packed bytes: Flink MapState in the job, a dict in tests."""

    def get(self, key: str) -> bytes | None: ...

    def __setitem__(self, key: str, value: bytes) -> None: ...


class KeyTiles:
    """The tiles of one (view, entity) decoded in memory, written through to ``backing``.

    The job keeps one per recently seen key so an event costs one encode and one state put
    per touched tile, not a state read and decode as well. ``backing`` (checkpointed state)
    always holds what memory holds, so dropping a KeyTiles at any time loses nothing.
    """

    __slots__ = ("backing", "packed", "states", "versions")

    def __init__(self, backing: PackedTiles) -> None:
        self.backing = backing
        self.states: dict[TileKey, TileState | None] = {}  # None: known to be absent
        self.versions: dict[TileKey, int] = {}
        # the packed bytes last written to (or read from) backing, by state key: what a flush
        # sends, without reading the state back
        self.packed: dict[str, bytes] = {}

    def load(self, aggregator: ViewAggregator, key: TileKey) -> TileState | None:
        if key in self.states:
            return self.states[key]
        skey = tile_state_key(key)
        packed = self.backing.get(skey)
        state = None
        if packed is not None:
            self.packed[skey] = packed
            self.versions[key], payload = unpack(packed)
            state = aggregator.decode(key[0], payload)
        self.states[key] = state
        return state

    def get_packed(self, skey: str) -> bytes | None:
        """The packed tile under ``skey``: from memory when this KeyTiles wrote or read it."""
        packed = self.packed.get(skey)
        return packed if packed is not None else self.backing.get(skey)

    def forget(self, key: TileKey) -> None:
        """The tile was removed from backing (expired)."""
        self.states[key] = None
        self.versions.pop(key, None)
        self.packed.pop(tile_state_key(key), None)


class ViewTiles:
    """Applies routed events of one view to its tiles, with a per-tile version for idempotent writes."""

    def __init__(self, view: FeatureView, source: Source) -> None:
        self.view = view
        self.aggregator = ViewAggregator(view, {f.name: f.type for f in source.fields})
        self.retention_ms = {g: tile_retention_ms(g, view) for g in self.aggregator.granularities_ms}

    def apply(self, tiles: KeyTiles, event_time_ms: int, fields: Mapping[str, Any]) -> list[str]:
        """Fold one event into ``tiles`` (written through); return the state keys changed."""
        agg = self.aggregator
        current: dict[TileKey, TileState] = {}
        for g in agg.granularities_ms:
            key: TileKey = (g, event_time_ms - event_time_ms % g) if g else (0, 0)
            state = tiles.load(agg, key)
            if state is not None:
                current[key] = state
        changed = []
        for key in agg.update(current, fields, event_time_ms):
            state = tiles.states[key] = current[key]
            version = tiles.versions[key] = tiles.versions.get(key, 0) + 1
            skey = tile_state_key(key)
            packed = tiles.packed[skey] = pack(version, agg.encode(key[0], state))
            tiles.backing[skey] = packed
            changed.append(skey)
        return changed

    def ttl_seconds(self, key: TileKey, now_ms: int) -> int:
        """Seconds until the tile stops mattering to any window (0 = keep forever)."""
        retention = self.retention_ms.get(key[0])
        if retention is None:
            return 0
        return max(1, (key[1] + retention - now_ms) // 1000 + 1)

    def expired(self, key: TileKey, watermark_ms: int) -> bool:
        retention = self.retention_ms.get(key[0])
        return retention is not None and key[1] + retention < watermark_ms
