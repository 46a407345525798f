"""The compiled feature registry: frozen, slotted value objects with no I/O.

YAML is validated at the edge (``feature_store.definitions``) and compiled into
these objects once; the streaming job, the server and the export only ever see
them. Times are integers in milliseconds since the epoch (``*_ms``), durations
too, so the hot paths do no datetime arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar


class ValueType(StrEnum):
    """Types a field or a feature value can have (Avro primitives, and lists for last_n)."""

    BOOL = "bool"
    INT64 = "int64"
    FLOAT64 = "float64"
    STRING = "string"
    BYTES = "bytes"
    INT64_LIST = "int64_list"
    FLOAT64_LIST = "float64_list"
    STRING_LIST = "string_list"
    BOOL_LIST = "bool_list"
    BYTES_LIST = "bytes_list"

    @property
    def is_numeric(self) -> bool:
        return self in (ValueType.INT64, ValueType.FLOAT64)

    def as_list(self) -> ValueType:
        return ValueType(f"{self.value}_list") if not self.value.endswith("_list") else self


class AggregationKind(StrEnum):
    COUNT = "count"
    SUM = "sum"
    AVG = "avg"
    MIN = "min"
    MAX = "max"
    LAST = "last"
    LAST_N = "last_n"
    COUNT_DISTINCT = "count_distinct"


# The field types each aggregation accepts as input (COUNT takes no field).
NUMERIC_INPUTS = frozenset({ValueType.INT64, ValueType.FLOAT64})
ORDERED_INPUTS = frozenset({ValueType.INT64, ValueType.FLOAT64, ValueType.STRING})
SCALAR_INPUTS = frozenset(
    {ValueType.BOOL, ValueType.INT64, ValueType.FLOAT64, ValueType.STRING, ValueType.BYTES}
)
ACCEPTED_INPUTS: dict[AggregationKind, frozenset[ValueType]] = {
    AggregationKind.COUNT: SCALAR_INPUTS,
    AggregationKind.SUM: NUMERIC_INPUTS,
    AggregationKind.AVG: NUMERIC_INPUTS,
    AggregationKind.MIN: ORDERED_INPUTS,
    AggregationKind.MAX: ORDERED_INPUTS,
    AggregationKind.LAST: SCALAR_INPUTS,
    AggregationKind.LAST_N: SCALAR_INPUTS,
    AggregationKind.COUNT_DISTINCT: frozenset({ValueType.INT64, ValueType.STRING, ValueType.BYTES}),
}


def output_type(kind: AggregationKind, input_type: ValueType | None) -> ValueType:
    """The type a feature serves, given its aggregation and the type of its input field."""
    if kind in (AggregationKind.COUNT, AggregationKind.COUNT_DISTINCT):
        return ValueType.INT64
    if kind is AggregationKind.AVG:
        return ValueType.FLOAT64
    if input_type is None:
        raise ValueError(f"{kind.value} needs an input field")
    if kind is AggregationKind.LAST_N:
        return input_type.as_list()
    return input_type


@dataclass(frozen=True, slots=True)
class Window:
    """A sliding window read at request time over tiles of ``granularity_ms``.

    ``length_ms is None`` means lifetime: one ever-growing tile.
    """

    length_ms: int | None
    granularity_ms: int
    label: str  # "1h", "7d", "lifetime": the suffix of the served feature name

    @property
    def is_lifetime(self) -> bool:
        return self.length_ms is None


LIFETIME_GRANULARITY_MS = 0  # the tile key of lifetime aggregates


@dataclass(frozen=True, slots=True)
class Entity:
    name: str
    join_keys: tuple[tuple[str, ValueType], ...]  # (key name, type), in key order
    description: str = ""
    owner: str = ""


@dataclass(frozen=True, slots=True)
class SourceField:
    name: str
    type: ValueType
    nullable: bool


@dataclass(frozen=True, slots=True)
class Source:
    name: str
    topic: str
    schema_path: str  # path of the .avsc file, relative to the registry root
    schema_json: str  # the Avro schema itself, canonical JSON, so a snapshot is self-contained
    schema_fingerprint: str  # first 4 bytes of its sha256 as hex: the Confluent-style schema id
    event_time_field: str
    watermark_delay_ms: int
    allowed_lateness_ms: int
    fields: tuple[SourceField, ...]
    filter: str | None = None  # a `where`-style predicate applied to every event of the source
    dead_letter_topic: str = ""
    description: str = ""
    owner: str = ""

    def field_type(self, name: str) -> ValueType | None:
        for f in self.fields:
            if f.name == name:
                return f.type
        return None


@dataclass(frozen=True, slots=True)
class Feature:
    """One declared aggregation; it serves one value per window (see ``served_names``)."""

    name: str
    aggregation: AggregationKind
    input_field: str | None  # None only for COUNT of events
    input_type: ValueType | None
    value_type: ValueType
    windows: tuple[Window, ...]
    last_n: int | None = None  # N for LAST_N
    where: str | None = None  # predicate over event fields, see core.predicates
    tags: tuple[tuple[str, str], ...] = ()
    description: str = ""
    owner: str = ""

    def served_name(self, window: Window) -> str:
        return self.name if window.is_lifetime else f"{self.name}_{window.label}"

    @property
    def served_names(self) -> tuple[str, ...]:
        return tuple(self.served_name(w) for w in self.windows)


@dataclass(frozen=True, slots=True)
class FeatureView:
    name: str
    entity: str
    source: str
    entity_key_fields: tuple[str, ...]  # source fields holding the entity's join keys, in key order
    ttl_ms: int | None  # values older than this are served as OUTSIDE_MAX_AGE; None = never
    features: tuple[Feature, ...]
    tags: tuple[tuple[str, str], ...] = ()
    description: str = ""
    owner: str = ""
    online: bool = True

    @property
    def table(self) -> str:
        """The online-store table: one per entity, so one partition holds all of an entity's
        views (a look-up of many views is one partition read); rows are keyed by view name."""
        return f"fe_{self.entity}"

    @property
    def granularities_ms(self) -> tuple[int, ...]:
        """Distinct tile granularities this view stores, lifetime (0) included."""
        return tuple(
            sorted(
                {
                    LIFETIME_GRANULARITY_MS if w.is_lifetime else w.granularity_ms
                    for f in self.features
                    for w in f.windows
                }
            )
        )


@dataclass(frozen=True, slots=True)
class FeatureRef:
    view: str
    feature: str  # a served name, e.g. "matches_accepted_1h"

    def __str__(self) -> str:
        return f"{self.view}:{self.feature}"

    @classmethod
    def parse(cls, text: str) -> FeatureRef:
        view, sep, feature = text.partition(":")
        if not sep or not view or not feature:
            raise ValueError(f"feature reference {text!r} is not of the form 'view:feature'")
        return cls(view, feature)


@dataclass(frozen=True, slots=True)
class FeatureService:
    name: str
    features: tuple[FeatureRef, ...]
    description: str = ""
    owner: str = ""
    tags: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Registry:
    """A whole compiled registry: what `fstore apply` snapshots and every runtime loads."""

    project: str
    entities: tuple[Entity, ...]
    sources: tuple[Source, ...]
    views: tuple[FeatureView, ...]
    services: tuple[FeatureService, ...]
    version: int | None = None  # set once applied

    def entity(self, name: str) -> Entity:
        return _find(self.entities, name, "entity")

    def source(self, name: str) -> Source:
        return _find(self.sources, name, "source")

    def view(self, name: str) -> FeatureView:
        return _find(self.views, name, "feature view")

    def service(self, name: str) -> FeatureService:
        return _find(self.services, name, "feature service")

    def views_of_source(self, source: str) -> tuple[FeatureView, ...]:
        return tuple(v for v in self.views if v.source == source)


class UnknownName(KeyError):
    """A name that the registry does not define."""

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"unknown {kind} {name!r}")
        self.kind = kind
        self.name = name

    def __str__(self) -> str:
        return str(self.args[0])


_Named = TypeVar("_Named", Entity, Source, FeatureView, FeatureService)


def _find(items: tuple[_Named, ...], name: str, kind: str) -> _Named:
    for item in items:
        if item.name == name:
            return item
    raise UnknownName(kind, name)
