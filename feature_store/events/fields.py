"""Plausible values for any Avro field, chosen by its type and, for leaves, by its name.

A new source in the YAML needs no code to get events: every field gets a *factory*
(``FieldContext -> value``) compiled once from the schema. Names steer the values:
``user_id`` is the acting user, other person-like ``*_id`` fields (``peer_id``,
``target_id``, ``reported_user_id``...) are other users of the population, ``*_ms`` are
log-normal milliseconds, ``*_cents`` are prices, ``currency`` is an ISO code, nullable
unions are sometimes null, and so on. Scripted sources pass *hints* (values they chose);
a hint is used only where it fits the field's Avro type (see :func:`hint_fits`).
"""

from __future__ import annotations

import math
import random
import struct
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from feature_store.events.avro_codec import INT32_MAX, INT32_MIN, Names, type_name
from feature_store.events.population import Population
from feature_store.events.sampling import lognormal

MAX_DEPTH = 3  # nested records, arrays and maps deeper than this are left empty / null
NULL_PROBABILITY = 0.25

_F32 = struct.Struct("<f")
_HEX3 = tuple(f"{i:03x}" for i in range(4096))
EVENT_ID_NAMES = frozenset({"event_id", "id", "message_id"})  # string fields that get a UUIDv7

PERSON_WORDS = frozenset(
    {
        "user", "uid", "peer", "partner", "target", "recipient", "receiver", "sender", "reporter",
        "reported", "requester", "accepter", "acceptor", "viewer", "viewed", "author", "buyer",
        "seller", "member", "friend", "follower", "followee", "blocker", "blocked", "inviter",
        "invitee", "liker", "liked", "actor", "caller", "callee", "candidate", "other", "from",
        "to", "host", "guest", "customer", "account", "person", "profile", "matched",
    }
)  # fmt: skip
ACTOR_NAMES = ("user_id", "userid", "uid", "actor_id", "account_id", "member_id", "profile_id")


class FieldContext:
    """What a factory may read: the random stream, the population, the event being built."""

    __slots__ = (
        "_event_counter",
        "_event_salt",
        "_node",
        "_node_block",
        "_prefix",
        "_prefix_ms",
        "actor",
        "event_time_ms",
        "population",
        "rng",
    )

    def __init__(self, rng: random.Random, population: Population, seed: int) -> None:
        self.rng = rng
        self.population = population
        self.event_time_ms = 0
        self.actor = 0
        self._event_counter = 0
        self._event_salt = random.Random(f"event-ids:{seed}").getrandbits(48)  # noqa: S311 - a simulation
        self._prefix_ms = -1
        self._prefix = ""
        self._node_block = -1
        self._node = ""

    def event_id(self) -> str:
        """A UUIDv7 string: the event time (48 bits), then 24 counter bits and 48 bits of the
        counter's high part mixed with a per-seed salt: unique within a generator, sortable by time."""
        n = self._event_counter = self._event_counter + 1
        ms = self.event_time_ms
        if ms != self._prefix_ms:
            h = f"{ms & 0xFFFFFFFFFFFF:012x}"
            self._prefix_ms, self._prefix = ms, f"{h[:8]}-{h[8:]}-7"
        if n >> 24 != self._node_block:
            self._node_block = n >> 24
            self._node = f"{(self._node_block ^ self._event_salt) & 0xFFFFFFFFFFFF:012x}"
        return f"{self._prefix}{_HEX3[(n >> 12) & 0xFFF]}-8{_HEX3[n & 0xFFF]}-{self._node}"

    def random_uuid(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


Factory = Callable[[FieldContext], Any]


def event_id_factory(ctx: FieldContext) -> str:
    return ctx.event_id()


# --------------------------------------------------------------------------------------------
# hints from scripted behaviour


@dataclass(frozen=True, slots=True)
class Hint:
    """The kind of value a script puts in a field: str, int (fits int32), bool or enum symbols."""

    kind: str  # "str" | "int" | "bool" | "enum"
    nullable: bool = False
    symbols: frozenset[str] = frozenset()


ID = Hint("str")
STR = Hint("str")
OPT_STR = Hint("str", nullable=True)
INT = Hint("int")
OPT_INT = Hint("int", nullable=True)
BOOL = Hint("bool")


def enum(*symbols: str, nullable: bool = False) -> Hint:
    return Hint("enum", nullable, frozenset(symbols))


_HINT_TARGETS = {"str": ("string",), "int": ("int", "long"), "bool": ("boolean",), "enum": ("string", "enum")}


def hint_fits(hint: Hint, schema: Any, names: Names) -> bool:
    """Whether every value the hint may carry encodes into ``schema`` and decodes back equal."""
    schema = names.resolve(schema)
    if type_name(schema) == "union":
        branches = [names.resolve(b) for b in schema]
        if hint.nullable and not any(type_name(b) == "null" for b in branches):
            return False
        present = Hint(hint.kind, False, hint.symbols)
        return any(hint_fits(present, b, names) for b in branches if type_name(b) != "null")
    kind = type_name(schema)
    if hint.nullable or kind not in _HINT_TARGETS.get(hint.kind, ()):
        return False
    return kind != "enum" or hint.symbols <= frozenset(schema["symbols"])


# --------------------------------------------------------------------------------------------
# roles of top-level fields


def _snake(name: str) -> str:
    """``reporterId`` -> ``reporter_id``; snake_case names are only lower-cased."""
    out = [
        f"_{ch.lower()}" if ch.isupper() and i and name[i - 1].islower() else ch.lower()
        for i, ch in enumerate(name)
    ]
    return "".join(out)


def _tokens(name: str) -> list[str]:
    return [t for t in name.lower().replace("-", "_").split("_") if t]


def is_person_field(name: str) -> bool:
    """``peer_id``, ``target_user_id``, ``reporterId``-like names: ids of other users."""
    lowered = _snake(name)
    if lowered in ACTOR_NAMES:
        return True
    if not lowered.endswith("_id"):
        return False
    return any(t in PERSON_WORDS for t in _tokens(lowered[:-3]))


def actor_field(field_names: list[str], entity_key_fields: list[str]) -> str | None:
    """The field holding the user who acts (and keys the Kafka message)."""
    for candidate in ACTOR_NAMES:
        if candidate in field_names:
            return candidate
    for key in entity_key_fields:
        if key in field_names:
            return key
    for name in field_names:
        if is_person_field(name):
            return name
    return None


# --------------------------------------------------------------------------------------------
# factories


def _weighted(symbols: list[str], ratio: float = 0.6) -> Factory:
    """Earlier symbols more frequent (weights ratio**i): enums and vocabularies are rarely uniform."""
    cum = list(accumulate(ratio**i for i in range(len(symbols))))
    total = cum[-1]
    last = len(symbols) - 1
    return lambda c: symbols[min(bisect_right(cum, c.rng.random() * total), last)]


def _lognormal_int(median: float, sigma: float, low: int, high: int) -> Factory:
    mu = math.log(median)
    return lambda c: max(low, min(high, int(lognormal(c.rng.random, mu, sigma))))


def _f32(value: float) -> float:
    return float(_F32.unpack(_F32.pack(value))[0])


_VOCAB: dict[str, list[str]] = {
    "currency": ["USD", "EUR", "GBP", "BRL", "INR", "JPY"],
    "country": ["US", "GB", "DE", "FR", "BR", "IN", "JP", "MX", "ES", "IT"],
    "platform": ["ios", "android", "web"],
    "os": ["ios", "android", "web"],
    "language": ["en", "es", "pt", "de", "fr", "hi", "ja"],
    "lang": ["en", "es", "pt", "de", "fr", "hi", "ja"],
    "locale": ["en-US", "es-MX", "pt-BR", "de-DE", "fr-FR", "hi-IN", "ja-JP"],
    "gender": ["female", "male", "nonbinary", "undisclosed"],
    "device": ["iphone", "pixel", "galaxy", "desktop"],
}


class FactoryCompiler:
    """Compiles factories for the fields of one source schema (recursive records handled lazily)."""

    def __init__(self, names: Names, person_fields: frozenset[str] = frozenset()) -> None:
        self._names = names
        self._person_fields = person_fields

    def field(  # noqa: PLR0911 - one branch per Avro kind
        self, name: str, schema: Any, *, actor: bool = False, depth: int = 0
    ) -> Factory:
        resolved = self._names.resolve(schema)
        kind = type_name(resolved)
        if kind == "union":
            return self._union(name, resolved, actor=actor, depth=depth)
        if actor or (depth == 0 and (name in self._person_fields or is_person_field(name))):
            person = self._person(kind, actor=actor)
            if person is not None:
                return person
        leaf = self._leaf(name, kind, resolved)
        if leaf is not None:
            return leaf
        if kind == "record":
            return self._record(resolved, depth)
        if kind == "array":
            items = self.field(name, resolved["items"], depth=depth + 1)
            if depth >= MAX_DEPTH:
                return lambda c: []
            return lambda c: [items(c) for _ in range(c.rng.randrange(4))]
        if kind == "map":
            values = self.field(name, resolved["values"], depth=depth + 1)
            if depth >= MAX_DEPTH:
                return lambda c: {}
            return lambda c: {f"k{i}": values(c) for i in range(c.rng.randrange(3))}
        raise ValueError(f"cannot generate values of Avro type {kind!r} for field {name!r}")

    def record(self, schema: Any, depth: int = 0) -> list[tuple[str, Factory]]:
        resolved = self._names.resolve(schema)
        return [
            (str(f["name"]), self.field(str(f["name"]), f["type"], depth=depth)) for f in resolved["fields"]
        ]

    def _record(self, schema: dict[str, Any], depth: int) -> Factory:
        if depth >= MAX_DEPTH + 2:
            raise ValueError(f"record {schema.get('name')!r} nests too deeply to generate values")
        fields = self.record(schema, depth + 1)
        return lambda c: {name: f(c) for name, f in fields}

    def _union(self, name: str, branches: list[Any], *, actor: bool, depth: int) -> Factory:
        resolved = [self._names.resolve(b) for b in branches]
        has_null = any(type_name(b) == "null" for b in resolved)
        others = [b for b in resolved if type_name(b) != "null"]
        if not others:
            return lambda c: None
        if has_null and depth >= MAX_DEPTH:
            return lambda c: None
        options = [self.field(name, b, actor=actor, depth=depth) for b in others]
        p_null = 0.0 if actor or not has_null else NULL_PROBABILITY
        if len(options) == 1:
            only = options[0]
            if p_null == 0.0:
                return only
            return lambda c: None if c.rng.random() < p_null else only(c)
        n = len(options)
        return lambda c: None if c.rng.random() < p_null else options[c.rng.randrange(n)](c)

    @staticmethod
    def _person(kind: str, *, actor: bool) -> Factory | None:
        if kind == "string":
            if actor:
                return lambda c: c.population.ids[c.actor]
            return lambda c: c.population.ids[c.population.peer(c.actor)]
        if kind in ("int", "long"):
            if actor:
                return lambda c: c.actor
            return lambda c: c.population.peer(c.actor)
        return None

    def _leaf(self, name: str, kind: str, schema: Any) -> Factory | None:  # noqa: PLR0911
        logical = schema.get("logicalType") if isinstance(schema, dict) else None
        if kind == "string":
            return _string(name, logical)
        if kind in ("int", "long"):
            make = _integer(name, logical)
            if kind == "int":
                return lambda c: max(INT32_MIN, min(INT32_MAX, make(c)))
            return make
        if kind in ("float", "double"):
            real = _real(name)
            return (lambda c: _f32(real(c))) if kind == "float" else real
        if kind == "boolean":
            p = 0.25 if _tokens(_snake(name))[:1] in (["is"], ["has"]) else 0.5
            return lambda c: c.rng.random() < p
        if kind == "null":
            return lambda c: None
        if kind == "bytes":
            if logical == "decimal":
                return lambda c: c.rng.randrange(1, 1 << 24).to_bytes(4, "big")
            return lambda c: c.rng.randbytes(c.rng.randrange(16))
        if kind == "fixed":
            size = int(schema["size"])
            return lambda c: c.rng.randbytes(size)
        if kind == "enum":
            return _weighted([str(s) for s in schema["symbols"]])
        return None


def _string(name: str, logical: str | None) -> Factory:  # noqa: PLR0911
    lowered = _snake(name)
    tokens = _tokens(lowered)
    last = tokens[-1] if tokens else lowered
    if logical == "uuid" or last in ("uuid", "guid"):
        return lambda c: c.random_uuid()
    if lowered in EVENT_ID_NAMES:
        return event_id_factory
    for key in (lowered, last):
        if key in _VOCAB:
            return _weighted(_VOCAB[key], 0.7)
    if lowered.endswith("_id"):
        prefix = lowered[:-3][:12]
        return lambda c: f"{prefix}-{c.rng.getrandbits(40):010x}"
    if last == "email":
        return lambda c: f"{c.population.ids[c.actor]}@example.com"
    if last in ("url", "link"):
        return lambda c: f"https://example.com/{name}/{c.rng.randrange(1000)}"
    if last in ("text", "message", "body", "comment", "description"):
        words = ["hey", "hi", "lol", "ok", "nice", "where", "are", "you", "from", "cool", "bye", "😊"]
        return lambda c: " ".join(c.rng.choice(words) for _ in range(1 + c.rng.randrange(8)))
    vocabulary = [f"{lowered}_{i}" for i in range(16)]
    return _weighted(vocabulary, 0.8)


def _integer(name: str, logical: str | None) -> Factory:  # noqa: PLR0911
    tokens = _tokens(_snake(name))
    last = tokens[-1] if tokens else ""
    if logical in ("timestamp-millis", "local-timestamp-millis") or last in ("at", "time", "ts", "timestamp"):
        return lambda c: c.event_time_ms - c.rng.randrange(60_000)
    if logical in ("timestamp-micros", "local-timestamp-micros"):
        return lambda c: (c.event_time_ms - c.rng.randrange(60_000)) * 1000 + c.rng.randrange(1000)
    if logical == "date":
        return lambda c: c.event_time_ms // 86_400_000 - c.rng.randrange(365)
    if logical == "time-millis":
        return lambda c: c.event_time_ms % 86_400_000
    if logical == "time-micros":
        return lambda c: (c.event_time_ms % 86_400_000) * 1000
    if last in ("ms", "millis", "latency"):
        return _lognormal_int(1500.0, 1.0, 0, 3_600_000)
    if last in ("s", "sec", "secs", "seconds", "duration"):
        return _lognormal_int(60.0, 1.2, 0, 86_400)
    if last in ("cents", "amount", "price", "cost", "revenue"):
        return _lognormal_int(499.0, 0.9, 1, 1_000_000)
    if last == "age":
        return lambda c: 18 + c.rng.randrange(52)
    if last in ("rating", "stars", "score", "level"):
        return lambda c: 1 + c.rng.randrange(5)
    if last in ("count", "num", "n", "total") or tokens[:1] in (["num"], ["n"]):
        return _lognormal_int(3.0, 1.0, 0, 10_000)
    if last in ("length", "len", "size", "bytes", "chars"):
        return _lognormal_int(40.0, 1.0, 0, 100_000)
    return lambda c: c.rng.randrange(1000)


def _real(name: str) -> Factory:
    tokens = _tokens(_snake(name))
    last = tokens[-1] if tokens else ""
    if last in ("ratio", "rate", "prob", "probability", "fraction", "share", "score", "confidence"):
        return lambda c: c.rng.random()
    if last in ("lat", "latitude"):
        return lambda c: c.rng.uniform(-90.0, 90.0)
    if last in ("lon", "lng", "longitude"):
        return lambda c: c.rng.uniform(-180.0, 180.0)
    if last in ("amount", "price", "cost", "revenue"):
        return lambda c: round(lognormal(c.rng.random, math.log(4.99), 0.9), 2)
    if last in ("s", "sec", "seconds", "duration"):
        return lambda c: lognormal(c.rng.random, math.log(60.0), 1.2)
    return lambda c: c.rng.uniform(0.0, 100.0)
