"""A deterministic, realistic event stream for any registry: the demo's, the tests' and the benchmarks'.

Pure (no Kafka, no wall clock): the same registry, config and seed give the same events,
byte for byte. :class:`EventGenerator` yields :class:`GeneratedEvent` s, each already in
the Confluent wire format of its source (magic byte, schema id = the source's fingerprint,
Avro body), with the Kafka key (the acting user, so a user's events stay in order on one
partition) and, for decodable events, the record itself for ground-truth calculations.

Time. A simulated clock starts at ``start_ms`` and advances ``1000 / rate`` ms per event.
Sessions (see ``scripts``) schedule their actions at realistic delays; each slot of the
clock emits the oldest due action, or starts a new session of a user drawn by Zipf
activity when nothing is due. Valid events carry an event time in
``[now - watermark_delay/2, now]`` so they are never late for the job. When the rate would
keep more than ``max_active_sessions`` sessions open, session time is compressed
(``time_scale`` < 1: delays shrink, values such as call durations do not). Before
``start_ms`` the sessions run for a warm-up without emitting, so the stream starts in a
steady mix. Users mostly act in bursts separated by idle time; the very heaviest users
(at s=1.1 the top one starts ~15% of all sessions) have overlapping sessions.

Faults. A ``late_fraction`` of events get an event time more than the source's watermark
delay + allowed lateness (+ a margin of at least ``max(10 s, lateness)``) before the newest
event time already emitted on that source: kind ``"late"``, the job must drop them. A
``malformed_fraction`` are bytes the job must dead-letter, with a :class:`Defect` saying how
they are broken and the :class:`~feature_store.adapters.avro_wire.DeadLetterReason` expected.
"""

from __future__ import annotations

import json
import math
import random
import struct
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, NamedTuple

from feature_store.core.model import Registry, Source
from feature_store.events.avro_codec import Names, RecordEncoder, compile_record_encoder, type_name
from feature_store.events.fields import (
    Factory,
    FactoryCompiler,
    FieldContext,
    actor_field,
    event_id_factory,
    hint_fits,
)
from feature_store.events.population import Population
from feature_store.events.scripts import SCRIPTED_HINTS, Action, AppScript

_HEADER = struct.Struct(">bI")
SESSION_SECONDS_PER_EVENT = 16.0  # measured: open sessions ~= 16 s * rate when time_scale is 1
WARMUP_S = 120.0  # simulated seconds (scaled): long enough for the session mix to settle


class EventKind(StrEnum):
    VALID = "valid"
    LATE = "late"  # decodable, but later than the source's allowed lateness
    MALFORMED = "malformed"  # must be dead-lettered by the decoder


class Defect(StrEnum):
    """How a malformed event is broken; ``reason`` is the ``DeadLetterReason`` value it must get."""

    RANDOM_BYTES = "random_bytes"
    WRONG_MAGIC = "wrong_magic"
    UNKNOWN_SCHEMA_ID = "unknown_schema_id"
    TRUNCATED = "truncated"
    TRAILING_BYTES = "trailing_bytes"
    SCHEMA_MISMATCH = "schema_mismatch"  # a valid event of another source on this source's topic

    @property
    def reason(self) -> str:
        return _DEFECT_REASONS[self]


_DEFECT_REASONS = {
    Defect.RANDOM_BYTES: "not_confluent_framed",
    Defect.WRONG_MAGIC: "not_confluent_framed",
    Defect.UNKNOWN_SCHEMA_ID: "unknown_schema_id",
    Defect.TRUNCATED: "undecodable",
    Defect.TRAILING_BYTES: "undecodable",
    Defect.SCHEMA_MISMATCH: "schema_mismatch",
}


class GeneratedEvent(NamedTuple):
    source: str  # the source whose topic the event goes to
    topic: str
    key: bytes | None  # the acting user's id (None if the source has no user-like field)
    value: bytes  # Confluent wire format (or broken bytes, for malformed events)
    event_time_ms: int
    kind: EventKind
    record: dict[str, Any] | None  # the decoded record, for valid and late events
    defect: Defect | None = None  # for malformed events


@dataclass(frozen=True, slots=True)
class GeneratorConfig:
    seed: int = 0
    rate: float = 1000.0  # events per second of simulated time
    users: int = 10_000
    start_ms: int = 1_767_225_600_000  # 2026-01-01T00:00:00Z; the CLI passes "now" by default
    late_fraction: float = 0.0
    malformed_fraction: float = 0.0
    activity_s: float = 1.1  # Zipf exponent of how active users are
    popularity_s: float = 0.9  # Zipf exponent of how often users are picked as targets
    max_active_sessions: int = 20_000
    time_scale: float | None = None  # None: 1, or less when max_active_sessions would be exceeded
    warmup_s: float | None = None  # simulated seconds run before start_ms; None: WARMUP_S * time_scale

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError("rate must be > 0 events/s")
        if self.users < 2:
            raise ValueError("users must be >= 2")
        for name in ("late_fraction", "malformed_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        if self.late_fraction + self.malformed_fraction > 1.0:
            raise ValueError("late_fraction + malformed_fraction must be <= 1")
        if self.time_scale is not None and not self.time_scale > 0:
            raise ValueError("time_scale must be > 0")
        if self.warmup_s is not None and self.warmup_s < 0:
            raise ValueError("warmup_s must be >= 0")

    @property
    def effective_time_scale(self) -> float:
        if self.time_scale is not None:
            return self.time_scale
        return min(1.0, self.max_active_sessions / (self.rate * SESSION_SECONDS_PER_EVENT))

    @property
    def effective_warmup_s(self) -> float:
        return self.warmup_s if self.warmup_s is not None else WARMUP_S * self.effective_time_scale


def with_topic_prefix(registry: Registry, prefix: str) -> Registry:
    """A copy of ``registry`` whose source and dead-letter topics start with ``prefix``."""
    if not prefix:
        return registry
    return replace(
        registry,
        sources=tuple(
            replace(
                s,
                topic=prefix + s.topic,
                dead_letter_topic=prefix + s.dead_letter_topic if s.dead_letter_topic else "",
            )
            for s in registry.sources
        ),
    )


class SourcePlan:
    """Everything needed to build, encode and key the events of one source, compiled once."""

    __slots__ = (
        "allowed_lateness_ms",
        "copy_hints",
        "encode",
        "fast",
        "generated",
        "generic",
        "header",
        "hinted",
        "id_field",
        "index",
        "key_field",
        "key_is_actor",
        "max_disorder_ms",
        "name",
        "schema_id",
        "source",
        "time_field",
        "topic",
        "watermark_delay_ms",
    )

    def __init__(self, index: int, source: Source, registry: Registry) -> None:
        schema = json.loads(source.schema_json)
        names = Names.collect(schema)
        fields: list[dict[str, Any]] = names.resolve(schema)["fields"]
        field_names = [str(f["name"]) for f in fields]
        self.index = index
        self.source = source
        self.name = source.name
        self.topic = source.topic
        self.schema_id = int(source.schema_fingerprint, 16)
        self.header = _HEADER.pack(0, self.schema_id)
        self.watermark_delay_ms = source.watermark_delay_ms
        self.allowed_lateness_ms = source.allowed_lateness_ms
        self.max_disorder_ms = source.watermark_delay_ms // 2
        self.time_field = event_time = source.event_time_field
        key_fields = [k for v in registry.views_of_source(source.name) for k in v.entity_key_fields]
        actor = actor_field(field_names, key_fields)
        self.key_field = actor
        compiler = FactoryCompiler(names, frozenset(key_fields))
        self.generic: tuple[tuple[str, Factory], ...] = tuple(
            (
                name,
                _event_time if name == event_time else compiler.field(name, f["type"], actor=name == actor),
            )
            for name, f in zip(field_names, fields, strict=True)
        )
        ids = [name for name, f in self.generic if f is event_id_factory]
        self.id_field = ids[0] if ids else None
        self.encode: RecordEncoder = compile_record_encoder(schema, unique_strings=frozenset(ids))
        # the actor factory always writes the actor's id string: the key is the actor's id
        actor_schema = next((f["type"] for f in fields if f["name"] == actor), None)
        self.key_is_actor = actor is not None and _holds_string(names.resolve(actor_schema), names)
        hints = SCRIPTED_HINTS.get(source.name, {})
        fits = [
            name
            for name, f in zip(field_names, fields, strict=True)
            if name in hints and name != event_time and hint_fits(hints[name], f["type"], names)
        ]
        self.hinted: tuple[str, ...] = tuple(fits)
        # the script's dict is the record when every key of it fits; otherwise copy the fitting ones
        self.copy_hints = set(fits) != set(hints)
        self.generated = tuple((n, f) for n, f in self.generic if n not in fits)
        # the hot path: the script's dict + event time (+ event id) is the whole record
        self.fast = (
            bool(hints)
            and not self.copy_hints
            and {n for n, _ in self.generated}
            <= {
                event_time,
                self.id_field,
            }
        )

    def build(self, ctx: FieldContext, hints: dict[str, Any] | None) -> dict[str, Any]:
        """The record for ``ctx`` (event time, actor); ``hints`` (the script's values) may be reused."""
        if hints is None:
            return {name: f(ctx) for name, f in self.generic}
        record = {k: hints[k] for k in self.hinted} if self.copy_hints else hints
        for name, f in self.generated:
            record[name] = f(ctx)
        return record

    def key(self, record: dict[str, Any]) -> bytes | None:
        if self.key_field is None:
            return None
        value = record[self.key_field]
        if value is None:
            return None
        return value.encode() if isinstance(value, str) else str(value).encode()


def _holds_string(schema: Any, names: Names) -> bool:
    if isinstance(schema, list):
        return any(type_name(names.resolve(b)) == "string" for b in schema)
    return type_name(schema) == "string"


def _event_time(ctx: FieldContext) -> int:
    return ctx.event_time_ms


# A scheduled action: (due ms, session, plan, actor, hints). Due actions wait in buckets per clock slot.
_Scheduled = tuple[float, Iterator[Action], SourcePlan, int, "dict[str, Any] | None"]
_new_event = tuple.__new__


class EventGenerator:
    """The event stream of one registry; iterate it (endless) or call :meth:`events` with limits.

    Successive calls of :meth:`events` continue the same stream; one consumer at a time.
    Construction runs the sessions for ``warmup_s`` of simulated time before ``start_ms``
    (emitting nothing), so the stream starts in a steady state: calls already under way end,
    requests already sent get answered.
    """

    def __init__(self, registry: Registry, config: GeneratorConfig | None = None) -> None:
        if not registry.sources:
            raise ValueError("the registry has no sources to generate events for")
        self.registry = registry
        self.config = config = config or GeneratorConfig()
        self.rng = random.Random(config.seed)  # noqa: S311 - a reproducible simulation
        self.population = Population(
            config.users,
            self.rng,
            seed=config.seed,
            activity_s=config.activity_s,
            popularity_s=config.popularity_s,
        )
        self._ctx = FieldContext(self.rng, self.population, config.seed)
        self._script = AppScript(self.rng, self.population, config.seed)
        self.plans: dict[str, SourcePlan] = {
            s.name: SourcePlan(i, s, registry) for i, s in enumerate(registry.sources)
        }
        self._plan_list = list(self.plans.values())
        scripted = [name for name in SCRIPTED_HINTS if name in self.plans]
        self._generic_sources = tuple(name for name in self.plans if name not in SCRIPTED_HINTS)
        self._all_sources = tuple(self.plans)
        # each source the script does not know gets about the share of an average source
        self._p_generic = 1.0 if not scripted else len(self._generic_sources) / len(self.plans)
        self._known_ids = frozenset(p.schema_id for p in self._plan_list)
        self._defects = [d for d in Defect if d is not Defect.SCHEMA_MISMATCH or len(self.plans) > 1]
        self._newest: list[int | None] = [None] * len(self._plan_list)
        self._buckets: dict[int, list[_Scheduled]] = {}  # clock slot -> actions due by then
        self._ready: deque[_Scheduled] = deque()  # due actions, oldest first
        self.time_scale = config.effective_time_scale
        self._step = 1000.0 / config.rate
        self._user_keys = [uid.encode() for uid in self.population.ids]
        self._slot = -math.ceil(config.effective_warmup_s * config.rate)
        self._warm_up()

    @property
    def now_ms(self) -> float:
        """The simulated clock: when the next event is emitted."""
        return self.config.start_ms + self._slot * self._step

    @property
    def emitted(self) -> int:
        """Events emitted so far (the clock slot)."""
        return max(self._slot, 0)

    @property
    def active_sessions(self) -> int:
        return len(self._ready) + sum(len(b) for b in self._buckets.values())

    def __iter__(self) -> Iterator[GeneratedEvent]:
        return self.events()

    def _run(  # noqa: PLR0912, PLR0915 - the hot loop, inlined on purpose
        self, end: int | None, emit: bool
    ) -> Iterator[GeneratedEvent]:
        """Advance the clock up to slot ``end`` (``None``: forever), yielding events if ``emit``.

        One loop for warm-up and emission, inlined for speed: this is the benchmark path.
        """
        cfg = self.config
        ready, buckets, ctx, rng = self._ready, self._buckets, self._ctx, self.rng
        plans_get, buckets_get, popleft = self.plans.get, buckets.get, ready.popleft
        rnd, expo, start_session = rng.random, rng.expovariate, self._start_session
        event_id, user_keys = ctx.event_id, self._user_keys
        start, step, inv_step, scale = float(cfg.start_ms), self._step, 1.0 / self._step, self.time_scale
        p_malformed = cfg.malformed_fraction if emit else 0.0
        p_faulty = cfg.malformed_fraction + cfg.late_fraction if emit else 0.0
        newest = self._newest
        valid, late, malformed = EventKind.VALID, EventKind.LATE, EventKind.MALFORMED
        slot = self._slot
        while end is None or slot < end:
            now = start + slot * step
            bucket = buckets.pop(slot, None)
            if bucket is not None:
                ready.extend(bucket)
            if ready:
                due, session, plan, actor, hints = popleft()
                floor = now - plan.max_disorder_ms
                event_time = int(due if due >= floor else floor)
            else:
                session, plan, actor, hints = start_session()
                event_time = int(now - min(expo(0.005), plan.max_disorder_ms))  # ~200 ms client delay
                due = now
            # schedule the session's next action of a registered source
            delay = 0.0
            for d, name, next_actor, next_hints in session:
                delay += d
                next_plan = plans_get(name)
                if next_plan is not None:
                    at = due + delay * scale
                    at_slot = int((at - start) * inv_step) + 1
                    if at_slot <= slot:
                        at_slot = slot + 1
                    waiting = buckets_get(at_slot)
                    if waiting is None:
                        buckets[at_slot] = [(at, session, next_plan, next_actor, next_hints)]
                    else:
                        waiting.append((at, session, next_plan, next_actor, next_hints))
                    break
            slot += 1
            self._slot = slot
            if not emit:
                continue
            kind = valid
            if p_faulty:
                r = rnd()
                if r < p_malformed:
                    kind = malformed
                elif r < p_faulty:
                    seen = newest[plan.index]
                    if seen is not None:
                        kind = late
                        margin = max(10_000, plan.allowed_lateness_ms) * (1.0 + rnd())
                        event_time = int(seen - plan.watermark_delay_ms - plan.allowed_lateness_ms - margin)
            ctx.event_time_ms = event_time
            ctx.actor = actor
            if hints is not None and plan.fast:
                record = hints
                record[plan.time_field] = event_time
                if plan.id_field is not None:
                    record[plan.id_field] = event_id()
            else:
                record = plan.build(ctx, hints)
            value = plan.header + plan.encode(record)
            key = user_keys[actor] if plan.key_is_actor else plan.key(record)
            if kind is valid:
                seen = newest[plan.index]
                if seen is None or event_time > seen:
                    newest[plan.index] = event_time
                yield _new_event(
                    GeneratedEvent, (plan.name, plan.topic, key, value, event_time, kind, record, None)
                )
            elif kind is late:
                yield _new_event(
                    GeneratedEvent, (plan.name, plan.topic, key, value, event_time, kind, record, None)
                )
            else:
                broken, defect = self._corrupt(plan, value)
                yield _new_event(
                    GeneratedEvent, (plan.name, plan.topic, key, broken, event_time, kind, None, defect)
                )

    def _warm_up(self) -> None:
        for _ in self._run(0, emit=False):  # pragma: no cover - emits nothing
            pass

    def events(
        self, max_events: int | None = None, duration_s: float | None = None
    ) -> Iterator[GeneratedEvent]:
        """The next events: at most ``max_events``, and only while the clock is within ``duration_s``
        of the configured start (both ``None``: endless)."""
        end = self._slot + max_events if max_events is not None else None
        if duration_s is not None:
            by_time = math.ceil(duration_s * self.config.rate - 1e-9)
            end = by_time if end is None else min(end, by_time)
        return self._run(end, emit=True)

    def _start_session(self) -> tuple[Iterator[Action], SourcePlan, int, dict[str, Any] | None]:
        """A new session of a user drawn by activity, and its first action of a registered source."""
        script, plans, rng = self._script, self.plans, self.rng
        for attempt in range(64):
            user = self.population.active()
            session: Iterator[Action]
            if attempt >= 16:  # the registry has (almost) none of the scripted sources
                session = script.generic_session(user, self._all_sources)
            elif self._p_generic >= 1.0 or (self._p_generic > 0.0 and rng.random() < self._p_generic):
                session = script.generic_session(user, self._generic_sources)
            else:
                session = script.session(user)
            for _, name, actor, hints in session:
                plan = plans.get(name)
                if plan is not None:
                    return session, plan, actor, hints
        raise RuntimeError("no session produced an event")  # pragma: no cover - generic always does

    def _corrupt(self, plan: SourcePlan, value: bytes) -> tuple[bytes, Defect]:
        rng = self.rng
        defect = self._defects[rng.randrange(len(self._defects))]
        if defect is Defect.TRUNCATED and len(value) <= _HEADER.size:
            defect = Defect.TRAILING_BYTES
        if defect is Defect.RANDOM_BYTES:
            junk = rng.randbytes(1 + rng.randrange(24))  # never empty: an empty value is a tombstone
            return (b"\x7f" + junk[1:] if junk[:1] == b"\x00" else junk), defect
        if defect is Defect.WRONG_MAGIC:
            return bytes([1 + rng.randrange(255)]) + value[1:], defect
        if defect is Defect.UNKNOWN_SCHEMA_ID:
            sid = rng.getrandbits(32)
            while sid in self._known_ids:
                sid = rng.getrandbits(32)
            return _HEADER.pack(0, sid) + value[_HEADER.size :], defect
        if defect is Defect.TRUNCATED:
            return value[: rng.randrange(_HEADER.size, len(value))], defect
        if defect is Defect.TRAILING_BYTES:
            return value + rng.randbytes(1 + rng.randrange(8)), defect
        others = [p for p in self._plan_list if p is not plan]
        other = others[rng.randrange(len(others))]
        return other.header + other.encode(other.build(self._ctx, None)), defect


def generate(
    registry: Registry,
    config: GeneratorConfig | None = None,
    *,
    max_events: int | None = None,
    duration_s: float | None = None,
) -> Iterator[GeneratedEvent]:
    """Shorthand: ``EventGenerator(registry, config).events(max_events, duration_s)``."""
    return EventGenerator(registry, config).events(max_events, duration_s)
