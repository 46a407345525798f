"""The YAML shape of the registry, as strict pydantic models (validated, then compiled away).

These models only check the shape and the local validity of each value; references
between objects, Avro types and predicates are checked by the compiler, which then turns
them into the frozen ``feature_store.core.model`` objects that the runtime uses.
"""

from __future__ import annotations

import keyword
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator

from feature_store.definitions.durations import Duration, parse_duration

MAX_NAME_LENGTH = 48  # Cassandra's limit for keyspace and table names
ENTITY_TABLE_PREFIX = "fe_"  # the online store keeps one table per entity (core.model.FeatureView.table)
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")

# Reserved CQL keywords: names are used as table and column names unquoted.
# fmt: off
CQL_RESERVED = frozenset(
    {
        "add", "aggregate", "allow", "alter", "and", "apply", "asc", "authorize", "batch", "begin",
        "by", "columnfamily", "create", "default", "delete", "desc", "describe", "drop", "entries",
        "execute", "from", "full", "grant", "if", "in", "index", "infinity", "insert", "into", "is",
        "keyspace", "limit", "materialized", "modify", "nan", "norecursive", "not", "null", "of", "on",
        "or", "order", "primary", "rename", "replace", "revoke", "schema", "select", "set", "table",
        "to", "token", "truncate", "unlogged", "unset", "update", "use", "using", "view", "where",
        "with",
    }
)
# fmt: on


def check_name(value: str, *, max_length: int = MAX_NAME_LENGTH) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: use lowercase snake_case "
            "(a letter, then letters, digits or underscores)"
        )
    if len(value) > max_length:
        raise ValueError(f"name {value!r} is {len(value)} characters long, the maximum is {max_length}")
    if value in CQL_RESERVED or keyword.iskeyword(value):
        raise ValueError(f"{value!r} is a reserved word in CQL or Python, choose another name")
    return value


def _check_entity_name(value: str) -> str:
    return check_name(value, max_length=MAX_NAME_LENGTH - len(ENTITY_TABLE_PREFIX))


def _check_topic(value: str) -> str:
    if not _TOPIC.match(value) or value in (".", ".."):
        raise ValueError(
            f"{value!r} is not a valid Kafka topic name (letters, digits, '.', '_', '-'; at most 249)"
        )
    return value


def _duration(value: object) -> Duration:
    return parse_duration(value)


def _duration_or_zero(value: object) -> Duration:
    return parse_duration(value, allow_zero=True)


Name = Annotated[str, AfterValidator(check_name)]
EntityName = Annotated[str, AfterValidator(_check_entity_name)]
Topic = Annotated[str, AfterValidator(_check_topic)]
PositiveDuration = Annotated[Duration, PlainValidator(_duration)]
Delay = Annotated[Duration, PlainValidator(_duration_or_zero)]
Tags = dict[str, str]

JoinKeyType = Literal["string", "int64", "bytes"]
AggregationName = Literal["count", "sum", "avg", "min", "max", "last", "last_n", "count_distinct"]


class Spec(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class DefaultsSpec(Spec):
    watermark_delay: Delay = Field(default_factory=lambda: parse_duration("5s"))
    allowed_lateness: Delay = Field(default_factory=lambda: parse_duration("1m"))
    ttl: PositiveDuration | None = None
    owner: str = ""


class ProjectSpec(Spec):
    """``feature_store.yaml`` at the root of the registry."""

    project: Name
    description: str = ""
    owner: str = ""
    defaults: DefaultsSpec = Field(default_factory=DefaultsSpec)


class JoinKeySpec(Spec):
    name: Name
    type: JoinKeyType = "string"


class EntitySpec(Spec):
    name: EntityName
    join_keys: list[JoinKeySpec] = Field(min_length=1)
    description: str = ""
    owner: str = ""


class SourceSpec(Spec):
    name: Name
    topic: Topic
    schema_: str = Field(alias="schema", min_length=1)
    event_time: str = Field(min_length=1)
    watermark_delay: Delay | None = None
    allowed_lateness: Delay | None = None
    filter: str | None = Field(default=None, min_length=1)
    dead_letter_topic: Topic | None = None
    description: str = ""
    owner: str = ""


def _window_length(value: object) -> Duration | None:
    if isinstance(value, str) and value.strip().lower() == LIFETIME:
        return None
    return parse_duration(value)


LIFETIME = "lifetime"
WindowLength = Annotated[Duration | None, PlainValidator(_window_length)]


class WindowSpec(Spec):
    """``1h``, ``lifetime``, or ``{length: 7d, granularity: 1d}``; a ``None`` length is lifetime."""

    length: WindowLength
    granularity: PositiveDuration | None = None


def _window(value: object) -> WindowSpec:
    if isinstance(value, str | int) and not isinstance(value, bool):
        return WindowSpec.model_validate({"length": value})
    if not isinstance(value, dict):
        raise ValueError(
            f"expected a window such as 1h, lifetime or {{length: 7d, granularity: 1d}}, "
            f"got {type(value).__name__}"
        )
    return WindowSpec.model_validate(value)


Window = Annotated[WindowSpec, PlainValidator(_window)]


class FeatureSpec(Spec):
    name: Name
    aggregation: AggregationName
    field: str | None = Field(default=None, min_length=1)
    n: int | None = Field(default=None, ge=1, le=1000)
    where: str | None = Field(default=None, min_length=1)
    windows: list[Window] = Field(
        default_factory=lambda: [WindowSpec.model_validate({"length": LIFETIME})], min_length=1
    )
    tags: Tags = Field(default_factory=dict)
    description: str = ""
    owner: str = ""


class FeatureViewHeaderSpec(Spec):
    """A feature view without its features (the compiler validates those one by one)."""

    name: Name
    entity: str = Field(min_length=1)
    source: str = Field(min_length=1)
    entity_keys: dict[str, str] | None = None  # entity join key -> source field; default: same names
    ttl: PositiveDuration | None = None
    online: bool = True
    tags: Tags = Field(default_factory=dict)
    description: str = ""
    owner: str = ""


class FeatureViewSpec(FeatureViewHeaderSpec):
    features: list[FeatureSpec] = Field(min_length=1)


class FeatureServiceSpec(Spec):
    name: Name
    features: list[str] = Field(min_length=1)  # "view:served_feature" or "view:*"
    tags: Tags = Field(default_factory=dict)
    description: str = ""
    owner: str = ""


SECTIONS: dict[str, type[Spec]] = {
    "entities": EntitySpec,
    "sources": SourceSpec,
    "feature_views": FeatureViewSpec,
    "feature_services": FeatureServiceSpec,
}
