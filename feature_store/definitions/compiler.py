"""Load, validate and compile a YAML registry folder into a frozen ``core.model.Registry``.

Layout::

    registry/
      feature_store.yaml        # project: <name>, defaults: {...}
      **/*.yaml                 # documents with entities:, sources:, feature_views:, feature_services:
      **/*.avsc                 # Avro schemas, referenced from sources by path relative to the YAML

Every problem is collected (not just the first) and reported as ``file:line:column: message``
through :class:`RegistryInvalid`; nothing here lets an exception escape for bad input.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar, get_args, get_origin

from pydantic import BaseModel, ValidationError

from feature_store.core.model import (
    ACCEPTED_INPUTS,
    LIFETIME_GRANULARITY_MS,
    AggregationKind,
    Entity,
    Feature,
    FeatureRef,
    FeatureService,
    FeatureView,
    Registry,
    Source,
    SourceField,
    ValueType,
    Window,
    output_type,
)
from feature_store.core.predicates import PredicateError, compile_predicate
from feature_store.definitions.avro import AvroSchemaError, AvroSchemaInfo, load_avsc
from feature_store.definitions.durations import UNITS_MS, Duration, format_duration
from feature_store.definitions.errors import RegistryError, RegistryInvalid
from feature_store.definitions.specs import (
    SECTIONS,
    EntitySpec,
    FeatureServiceSpec,
    FeatureSpec,
    FeatureViewHeaderSpec,
    ProjectSpec,
    SourceSpec,
    Spec,
    WindowSpec,
)
from feature_store.definitions.yamlsrc import LocatedDoc, NodePath, load_yaml_file

PROJECT_FILE = "feature_store.yaml"
YAML_SUFFIXES = (".yaml", ".yml")

_HOUR = UNITS_MS["h"]
_DAY = UNITS_MS["d"]


def default_granularity_ms(window_ms: int) -> int:
    """Tile size for a window: < 1h -> 1m, < 12h -> 5m, < 12d -> 1h, else 1d."""
    if window_ms < _HOUR:
        return UNITS_MS["m"]
    if window_ms < 12 * _HOUR:
        return 5 * UNITS_MS["m"]
    if window_ms < 12 * _DAY:
        return _HOUR
    return _DAY


def load_registry(root: Path) -> Registry:
    """Load and compile the registry under ``root``; raise ``RegistryInvalid`` listing every error."""
    registry, errors = check_registry(root)
    if errors or registry is None:
        raise RegistryInvalid(errors)
    return registry


def check_registry(root: Path) -> tuple[Registry | None, list[RegistryError]]:
    """Like :func:`load_registry` but returning ``(registry or None, errors)``."""
    compiler = _Compiler(Path(root))
    registry = compiler.run()
    errors = sorted(set(compiler.errors))
    return (None if errors else registry), errors


# --------------------------------------------------------------------------------------------
# helpers


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a candidate is close to ``name``, else ``""``."""
    matches = difflib.get_close_matches(name, sorted(set(candidates)), n=3, cutoff=0.6)
    if not matches:
        return ""
    if len(matches) == 1:
        return f"; did you mean {matches[0]!r}?"
    return "; did you mean " + ", ".join(repr(m) for m in matches[:-1]) + f" or {matches[-1]!r}?"


def _describe_value(value: object) -> str:  # noqa: PLR0911 - one return per kind
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _display_loc(loc: Sequence[str | int]) -> str:
    out = ""
    for el in loc:
        if isinstance(el, int):
            out += f"[{el}]"
        elif el != "[key]":
            out += f".{el}" if out else el
    return out


def _allowed_keys(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The field names (aliases) accepted at ``loc`` inside ``model``, for 'did you mean'."""
    annotation: Any = model
    for el in loc:
        annotation = _unwrap(annotation)
        if isinstance(el, int):
            args = get_args(annotation)
            if get_origin(annotation) is list and args:
                annotation = args[0]
                continue
            return []
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            info = annotation.model_fields.get(el) or next(
                (f for f in annotation.model_fields.values() if f.alias == el), None
            )
            if info is None:
                return []
            annotation = info.annotation
            continue
        return []
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [info.alias or name for name, info in annotation.model_fields.items()]
    return []


def _unwrap(annotation: Any) -> Any:
    """Strip ``Annotated[...]`` and ``X | None``."""
    while True:
        if getattr(annotation, "__metadata__", None) is not None:
            annotation = annotation.__origin__
            continue
        args = get_args(annotation)
        if type(None) in args and get_origin(annotation) not in (list, dict):
            rest = [a for a in args if a is not type(None)]
            if len(rest) == 1:
                annotation = rest[0]
                continue
        return annotation


_EXPECTED = {
    "string_type": "expected text",
    "int_type": "expected an integer",
    "int_from_float": "expected an integer",
    "bool_type": "expected true or false",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "dataclass_type": "expected a mapping",
}


def _pydantic_message(err: Mapping[str, Any], model: type[BaseModel]) -> tuple[str, bool]:
    """A readable message for one pydantic error, and whether it belongs at the key."""
    kind = str(err["type"])
    loc: tuple[str | int, ...] = tuple(err["loc"])
    where = _display_loc(loc)
    value = err.get("input")
    if kind == "missing":
        return f"missing required field {loc[-1]!r}", False
    if kind == "extra_forbidden":
        name = str(loc[-1])
        allowed = _allowed_keys(model, loc[:-1])
        hint = did_you_mean(name, allowed)
        if not hint and allowed:
            hint = "; allowed fields: " + ", ".join(sorted(allowed))
        return f"unknown field {name!r}{hint}", True
    if kind in _EXPECTED:
        text = f"{_EXPECTED[kind]}, got {_describe_value(value)}"
    elif kind == "literal_error":
        expected = str((err.get("ctx") or {}).get("expected", ""))
        options = [o.strip().strip("'") for o in expected.replace(" or ", ",").split(",") if o.strip()]
        text = f"{value!r} is not one of {', '.join(options)}{did_you_mean(str(value), options)}"
    elif kind in ("too_short", "string_too_short"):
        text = "must not be empty"
    elif kind == "value_error":
        text = str(err["msg"]).removeprefix("Value error, ")
    else:
        msg = str(err["msg"])
        text = msg[:1].lower() + msg[1:]
    return (f"{where}: {text}" if where else text), kind == "invalid_key"


S = TypeVar("S", bound=Spec)


@dataclass(slots=True)
class _Item(Generic[S]):
    spec: S
    doc: LocatedDoc
    path: NodePath  # of the item inside the document, e.g. ("sources", 2)
    folder: Path  # of the YAML file, to resolve relative schema paths
    # feature views only: the features that passed validation, with their index in the list,
    # and whether some did not (then missing served names are not reported, they may be there)
    features: list[tuple[int, FeatureSpec]] = field(default_factory=list)
    partial: bool = False

    def error(
        self, sub: NodePath, message: str, *, key: bool = False, column_offset: int = 0
    ) -> RegistryError:
        return self.doc.error((*self.path, *sub), message, key=key, column_offset=column_offset)

    def where(self) -> str:
        line, column = self.doc.position((*self.path, "name"))
        return f"{self.doc.file}:{line}:{column}"


@dataclass(slots=True)
class _SourceInfo:
    item: _Item[SourceSpec]
    schema: AvroSchemaInfo | None  # None when the schema could not be loaded (already reported)
    compiled: Source | None


@dataclass(slots=True)
class _Compiler:
    root: Path
    errors: list[RegistryError] = field(default_factory=list)
    incomplete: bool = False  # a file did not parse: do not report unknown names (they may be there)
    claimed: dict[str, set[str]] = field(default_factory=dict)  # names of items that failed validation
    items: dict[str, list[_Item[Any]]] = field(default_factory=dict)
    project: ProjectSpec | None = None

    def display(self, path: Path) -> str:
        return str(path)

    # ---- phase 1: files -> validated specs ----------------------------------------------------

    def run(self) -> Registry | None:
        if not self.root.is_dir():
            what = "is not a folder" if self.root.exists() else "does not exist"
            self.errors.append(RegistryError(str(self.root), 1, 1, f"registry folder {what}"))
            return None
        self._load_project()
        for path in self._definition_files():
            self._load_definitions(path)
        return self._compile()

    def _definition_files(self) -> list[Path]:
        files: list[Path] = []
        for path in sorted(self.root.rglob("*")):
            rel = path.relative_to(self.root)
            if any(part.startswith(".") for part in rel.parts):
                continue
            if path.suffix in YAML_SUFFIXES and path.is_file() and rel.as_posix() != PROJECT_FILE:
                files.append(path)
        return files

    def _load_project(self) -> None:
        path = self.root / PROJECT_FILE
        display = self.display(path)
        if not path.is_file():
            self.errors.append(
                RegistryError(
                    display, 1, 1, f"missing project file {PROJECT_FILE} (with at least `project: <name>`)"
                )
            )
            return
        docs, errors = load_yaml_file(path, display)
        self.errors.extend(errors)
        if errors:
            return
        if len(docs) != 1:
            line, column = docs[1].start if len(docs) > 1 else (1, 1)
            self.errors.append(
                RegistryError(display, line, column, f"{PROJECT_FILE} must hold exactly one YAML document")
            )
            if not docs:
                return
        doc = docs[0]
        if not isinstance(doc.data, dict):
            self.errors.append(doc.error((), f"{PROJECT_FILE} must be a mapping with `project: <name>`"))
            return
        self.project = self._validate(ProjectSpec, doc, ())

    def _load_definitions(self, path: Path) -> None:
        display = self.display(path)
        docs, errors = load_yaml_file(path, display)
        if errors:
            self.errors.extend(errors)
            self.incomplete = True
        for doc in docs:
            if not isinstance(doc.data, dict):
                self.errors.append(
                    doc.error(
                        (),
                        "a registry document must be a mapping with any of: " + ", ".join(SECTIONS),
                    )
                )
                continue
            for section, value in doc.data.items():
                model = SECTIONS.get(section)
                if model is None:
                    hint = did_you_mean(section, SECTIONS) or "; expected one of: " + ", ".join(SECTIONS)
                    self.errors.append(doc.error((section,), f"unknown section {section!r}{hint}", key=True))
                    continue
                if value is None:
                    continue
                if not isinstance(value, list):
                    self.errors.append(
                        doc.error(
                            (section,),
                            f"{section}: expected a list of definitions, got {_describe_value(value)}",
                        )
                    )
                    continue
                for index, raw in enumerate(value):
                    item = self._load_item(section, model, doc, (section, index), path.parent)
                    if item is not None:
                        self.items.setdefault(section, []).append(item)
                    elif isinstance(raw, dict) and isinstance(raw.get("name"), str):
                        self.claimed.setdefault(section, set()).add(raw["name"])

    def _load_item(
        self, section: str, model: type[Spec], doc: LocatedDoc, path: NodePath, folder: Path
    ) -> _Item[Any] | None:
        raw = doc.data[path[0]][path[1]]
        features = raw.get("features") if isinstance(raw, dict) else None
        if section != "feature_views" or not isinstance(features, list) or not features:
            spec = self._validate(model, doc, path, raw)
            return None if spec is None else _Item(spec, doc, path, folder)
        # Feature views are validated feature by feature, so that one bad feature does not
        # hide the errors of the others.
        header_raw = {k: v for k, v in raw.items() if k != "features"}
        header = self._validate(FeatureViewHeaderSpec, doc, path, header_raw)
        valid: list[tuple[int, FeatureSpec]] = []
        partial = False
        for index, feature_raw in enumerate(features):
            feature = self._validate(FeatureSpec, doc, (*path, "features", index), feature_raw)
            if feature is None:
                partial = True
            else:
                valid.append((index, feature))
        if header is None:
            return None
        return _Item(header, doc, path, folder, valid, partial)

    def _validate(self, model: type[S], doc: LocatedDoc, path: NodePath, raw: Any = None) -> S | None:
        if raw is None:
            raw = doc.data
            for el in path:
                raw = raw[el]
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            for err in exc.errors():
                message, at_key = _pydantic_message(err, model)
                node, key = self._node_path(doc, path, tuple(err["loc"]))
                self.errors.append(doc.error(node, message, key=key or at_key))
            return None

    @staticmethod
    def _node_path(doc: LocatedDoc, base: NodePath, loc: tuple[str | int, ...]) -> tuple[NodePath, bool]:
        path = base
        for el in loc:
            if el == "[key]":
                return path, True
            candidate = (*path, el)
            if candidate not in doc.values:
                break
            path = candidate
        return path, False

    # ---- phase 2: cross references, types, compilation ---------------------------------------

    def _compile(self) -> Registry | None:
        project = self.project
        entities = self._unique("entities", "entity")
        sources = self._unique("sources", "source")
        views = self._unique("feature_views", "feature view")
        services = self._unique("feature_services", "feature service")

        compiled_entities = {name: self._compile_entity(item) for name, item in entities.items()}
        source_infos = {name: self._compile_source(item) for name, item in sources.items()}
        compiled_views: dict[str, FeatureView] = {}
        served: dict[str, _Served] = {}
        for name, item in views.items():
            view, served[name] = self._compile_view(item, compiled_entities, source_infos)
            if view is not None:
                compiled_views[name] = view
        compiled_services = [
            s
            for s in (self._compile_service(item, compiled_views, served) for item in services.values())
            if s is not None
        ]
        if project is None or self.errors:
            return None
        return Registry(
            project=project.project,
            entities=tuple(e for _, e in sorted(compiled_entities.items()) if e is not None),
            sources=tuple(
                info.compiled for _, info in sorted(source_infos.items()) if info.compiled is not None
            ),
            views=tuple(v for _, v in sorted(compiled_views.items())),
            services=tuple(sorted(compiled_services, key=lambda s: s.name)),
        )

    @property
    def _defaults_owner(self) -> str:
        if self.project is None:
            return ""
        return self.project.defaults.owner or self.project.owner

    def _unique(self, section: str, kind: str) -> dict[str, _Item[Any]]:
        seen: dict[str, _Item[Any]] = {}
        for item in self.items.get(section, []):
            name = item.spec.name
            if name in seen:
                self.errors.append(
                    item.error(("name",), f"duplicate {kind} {name!r}, first defined at {seen[name].where()}")
                )
                continue
            seen[name] = item
        return seen

    def _unknown(
        self, item: _Item[Any], sub: NodePath, kind: str, section: str, name: str, known: Iterable[str]
    ) -> None:
        if name in self.claimed.get(section, set()):
            return  # defined, but invalid: that error is already reported
        if self.incomplete:
            return  # may be defined in a file that did not parse
        known = [*known, *self.claimed.get(section, set())]
        hint = did_you_mean(name, known)
        if not hint:
            hint = f"; defined: {', '.join(sorted(known))}" if known else f"; no {kind} is defined"
        self.errors.append(item.error(sub, f"unknown {kind} {name!r}{hint}"))

    def _compile_entity(self, item: _Item[EntitySpec]) -> Entity | None:
        spec = item.spec
        seen: set[str] = set()
        for index, key in enumerate(spec.join_keys):
            if key.name in seen:
                self.errors.append(
                    item.error(("join_keys", index, "name"), f"duplicate join key {key.name!r}")
                )
            seen.add(key.name)
        return Entity(
            name=spec.name,
            join_keys=tuple((k.name, ValueType(k.type)) for k in spec.join_keys),
            description=spec.description,
            owner=spec.owner or self._defaults_owner,
        )

    def _load_schema(self, item: _Item[SourceSpec]) -> AvroSchemaInfo | None:
        rel = item.spec.schema_
        path = (item.folder / rel).resolve()
        root = self.root.resolve()
        if not path.is_relative_to(root):
            self.errors.append(
                item.error(("schema",), f"schema path {rel!r} points outside the registry folder")
            )
            return None
        if not path.is_file():
            where = self.display(self.root / path.relative_to(root))
            self.errors.append(
                item.error(("schema",), f"Avro schema file not found: {rel!r} (looked for {where})")
            )
            return None
        try:
            return load_avsc(path)
        except AvroSchemaError as exc:
            display = self.display(self.root / path.relative_to(root))
            self.errors.append(RegistryError(display, exc.line, exc.column, exc.message))
        except OSError as exc:
            self.errors.append(
                item.error(("schema",), f"cannot read Avro schema {rel!r}: {exc.strerror or exc}")
            )
        return None

    def _compile_source(self, item: _Item[SourceSpec]) -> _SourceInfo:
        spec = item.spec
        schema = self._load_schema(item)
        if schema is None:
            return _SourceInfo(item, None, None)
        ok = True
        event_time = schema.field(spec.event_time)
        if event_time is None:
            ok = False
            self.errors.append(
                item.error(
                    ("event_time",),
                    f"event-time field {spec.event_time!r} is not in the schema"
                    + did_you_mean(spec.event_time, [f.name for f in schema.fields]),
                )
            )
        elif event_time.avro_type not in ("long", "long (timestamp-millis)"):
            ok = False
            self.errors.append(
                item.error(
                    ("event_time",),
                    f"event-time field {spec.event_time!r} is {event_time.avro_type}; it must be a non-null "
                    "long of epoch milliseconds (optionally with logicalType timestamp-millis)",
                )
            )
        if spec.filter is not None and not self._check_predicate(
            item, ("filter",), spec.filter, schema.field_types
        ):
            ok = False
        rel = (item.folder / spec.schema_).resolve().relative_to(self.root.resolve()).as_posix()
        defaults = self.project.defaults if self.project is not None else None
        watermark = spec.watermark_delay or (defaults.watermark_delay if defaults else None)
        lateness = spec.allowed_lateness or (defaults.allowed_lateness if defaults else None)
        compiled = Source(
            name=spec.name,
            topic=spec.topic,
            schema_path=rel,
            schema_json=schema.schema_json,
            schema_fingerprint=schema.fingerprint,
            event_time_field=spec.event_time,
            watermark_delay_ms=watermark.ms if watermark else 5_000,
            allowed_lateness_ms=lateness.ms if lateness else 60_000,
            fields=tuple(
                SourceField(f.name, f.type, f.nullable) for f in schema.fields if f.type is not None
            ),
            filter=spec.filter,
            dead_letter_topic=spec.dead_letter_topic or f"{spec.topic}.dlq",
            description=spec.description,
            owner=spec.owner or self._defaults_owner,
        )
        return _SourceInfo(item, schema, compiled if ok else None)

    def _check_predicate(
        self, item: _Item[Any], sub: NodePath, text: str, field_types: Mapping[str, ValueType]
    ) -> bool:
        try:
            compile_predicate(text, field_types)
        except PredicateError as exc:
            node = (*item.path, *sub)
            offset = item.doc.text_column(node, max(exc.column, 1) - 1) if "\n" not in text else 0
            self.errors.append(item.error(sub, f"invalid predicate: {exc.message}", column_offset=offset))
            return False
        return True

    def _compile_view(
        self,
        item: _Item[FeatureViewHeaderSpec],
        entities: Mapping[str, Entity | None],
        sources: Mapping[str, _SourceInfo],
    ) -> tuple[FeatureView | None, _Served]:
        spec = item.spec
        entity = entities.get(spec.entity)
        if spec.entity not in entities:
            self._unknown(item, ("entity",), "entity", "entities", spec.entity, entities)
        source_info = sources.get(spec.source)
        if source_info is None:
            self._unknown(item, ("source",), "source", "sources", spec.source, sources)
        schema = source_info.schema if source_info is not None else None
        key_fields = self._check_entity_keys(item, entity, schema)
        features: list[Feature] = []
        served = _Served(complete=not item.partial)
        for index, feature_spec in item.features:
            sub: NodePath = ("features", index)
            if feature_spec.name in served.declared:
                self.errors.append(
                    item.error((*sub, "name"), f"duplicate feature {feature_spec.name!r} in view")
                )
                continue
            windows = self._compile_windows(item, sub, feature_spec.windows)
            served.declared[feature_spec.name] = tuple(
                _served_name(feature_spec.name, w) for w in windows or ()
            )
            if windows is None:
                served.complete = False
            for window_index, window in enumerate(windows or ()):
                name = _served_name(feature_spec.name, window)
                if name in served.names:
                    self.errors.append(
                        item.error(
                            (*sub, "windows", window_index),
                            f"served feature name {name!r} is also produced by feature "
                            f"{served.names[name]!r}",
                        )
                    )
                served.names[name] = feature_spec.name
            feature = self._compile_feature(item, sub, feature_spec, schema, windows)
            if feature is not None:
                features.append(feature)
        if entity is None or schema is None or key_fields is None or item.partial:
            return None, served
        if len(features) != len(item.features):
            return None, served
        ttl = spec.ttl
        if ttl is None and self.project is not None:
            ttl = self.project.defaults.ttl
        return FeatureView(
            name=spec.name,
            entity=spec.entity,
            source=spec.source,
            entity_key_fields=key_fields,
            ttl_ms=ttl.ms if ttl is not None else None,
            features=tuple(features),
            tags=tuple(sorted(spec.tags.items())),
            description=spec.description,
            owner=spec.owner or self._defaults_owner,
            online=spec.online,
        ), served

    def _check_entity_keys(
        self, item: _Item[FeatureViewHeaderSpec], entity: Entity | None, schema: AvroSchemaInfo | None
    ) -> tuple[str, ...] | None:
        if entity is None:
            return None
        spec = item.spec
        given = spec.entity_keys
        mapping = dict(given) if given is not None else {k: k for k, _ in entity.join_keys}
        sub: NodePath = ("entity_keys",) if given is not None else ("entity",)
        join_keys = dict(entity.join_keys)
        ok = True
        for key in mapping:
            if key not in join_keys:
                ok = False
                self.errors.append(
                    item.error(
                        ("entity_keys", key),
                        f"{key!r} is not a join key of entity {entity.name!r}" + did_you_mean(key, join_keys),
                        key=True,
                    )
                )
        for key, key_type in entity.join_keys:
            if key not in mapping:
                ok = False
                self.errors.append(
                    item.error(
                        sub, f"entity_keys: missing the source field for join key {key!r} of {entity.name!r}"
                    )
                )
                continue
            if schema is None:
                continue
            field_name = mapping[key]
            at: NodePath = ("entity_keys", key) if given is not None else ("entity",)
            avro_field = schema.field(field_name)
            if avro_field is None:
                ok = False
                hint = did_you_mean(field_name, [f.name for f in schema.fields])
                how = "" if given is not None else f" (map it with `entity_keys: {{{key}: <source field>}}`)"
                self.errors.append(
                    item.error(
                        at, f"entity key field {field_name!r} is not in source {spec.source!r}{hint}{how}"
                    )
                )
            elif avro_field.type != key_type:
                ok = False
                found = avro_field.type.value if avro_field.type is not None else avro_field.avro_type
                self.errors.append(
                    item.error(
                        at,
                        f"entity key field {field_name!r} is {found} but join key {key!r} of entity "
                        f"{entity.name!r} is {key_type.value}",
                    )
                )
        if not ok or schema is None:
            return None
        return tuple(mapping[k] for k, _ in entity.join_keys)

    def _compile_feature(
        self,
        item: _Item[FeatureViewHeaderSpec],
        sub: NodePath,
        spec: FeatureSpec,
        schema: AvroSchemaInfo | None,
        windows: tuple[Window, ...] | None,
    ) -> Feature | None:
        kind = AggregationKind(spec.aggregation)
        ok = True
        input_type: ValueType | None = None
        if spec.field is None:
            if kind is not AggregationKind.COUNT:
                ok = False
                self.errors.append(item.error(sub, f"feature {spec.name!r}: {kind.value} needs a `field`"))
        elif schema is not None:
            avro_field = schema.field(spec.field)
            if avro_field is None:
                ok = False
                self.errors.append(
                    item.error(
                        (*sub, "field"),
                        f"field {spec.field!r} is not in source {item.spec.source!r}"
                        + did_you_mean(spec.field, [f.name for f in schema.fields]),
                    )
                )
            elif avro_field.type is None:
                ok = False
                self.errors.append(
                    item.error(
                        (*sub, "field"),
                        f"field {spec.field!r} is {avro_field.avro_type}: features cannot read "
                        f"{avro_field.unsupported}",
                    )
                )
            elif avro_field.type not in ACCEPTED_INPUTS[kind]:
                ok = False
                accepted = ", ".join(sorted(t.value for t in ACCEPTED_INPUTS[kind]))
                self.errors.append(
                    item.error(
                        (*sub, "field"),
                        f"{kind.value} over field {spec.field!r} of type {avro_field.type.value} is not "
                        f"possible: {kind.value} needs one of {accepted}",
                    )
                )
            else:
                input_type = avro_field.type
        if kind is AggregationKind.LAST_N and spec.n is None:
            ok = False
            self.errors.append(
                item.error(sub, f"feature {spec.name!r}: last_n needs `n` (how many values to keep)")
            )
        if kind is not AggregationKind.LAST_N and spec.n is not None:
            ok = False
            self.errors.append(
                item.error((*sub, "n"), f"`n` only applies to last_n, not to {kind.value}", key=True)
            )
        if spec.where is not None and schema is not None:
            ok = self._check_predicate(item, (*sub, "where"), spec.where, schema.field_types) and ok
        if not ok or windows is None or schema is None or (spec.field is not None and input_type is None):
            return None
        return Feature(
            name=spec.name,
            aggregation=kind,
            input_field=spec.field,
            input_type=input_type,
            value_type=output_type(kind, input_type),
            windows=windows,
            last_n=spec.n,
            where=spec.where,
            tags=tuple(sorted(spec.tags.items())),
            description=spec.description,
            owner=spec.owner,
        )

    def _compile_windows(
        self, item: _Item[FeatureViewHeaderSpec], sub: NodePath, specs: Sequence[WindowSpec]
    ) -> tuple[Window, ...] | None:
        windows: list[Window] = []
        ok = True
        for index, spec in enumerate(specs):
            at: NodePath = (*sub, "windows", index)
            window = self._compile_window(item, at, spec.length, spec.granularity)
            if window is None:
                ok = False
                continue
            same = next((w for w in windows if w.length_ms == window.length_ms), None)
            if same is not None:
                ok = False
                if same.label == window.label:
                    self.errors.append(item.error(at, f"window {window.label} is listed twice"))
                else:
                    message = f"window {window.label} has the same length as window {same.label}"
                    self.errors.append(item.error(at, message))
                continue
            windows.append(window)
        return tuple(windows) if ok else None

    def _compile_window(
        self, item: _Item[Any], at: NodePath, length: Duration | None, granularity: Duration | None
    ) -> Window | None:
        if length is None:
            if granularity is not None:
                self.errors.append(item.error(at, "a lifetime window has no granularity"))
                return None
            return Window(None, LIFETIME_GRANULARITY_MS, "lifetime")
        grain = granularity.ms if granularity is not None else default_granularity_ms(length.ms)
        if grain > length.ms or length.ms % grain != 0:
            where = "granularity" if granularity is not None else "default granularity"
            hint = "" if granularity is not None else "; set `granularity:` explicitly"
            self.errors.append(
                item.error(
                    at,
                    f"{where} {format_duration(grain)} does not divide window {length.label} evenly{hint}",
                )
            )
            return None
        if grain < UNITS_MS["s"] or grain % UNITS_MS["s"] != 0:
            self.errors.append(item.error(at, "granularity must be a whole number of seconds"))
            return None
        return Window(length.ms, grain, length.label)

    def _compile_service(
        self, item: _Item[FeatureServiceSpec], views: Mapping[str, FeatureView], served: Mapping[str, _Served]
    ) -> FeatureService | None:
        spec = item.spec
        refs: list[FeatureRef] = []
        ok = True
        for index, text in enumerate(spec.features):
            at: NodePath = ("features", index)
            try:
                ref = FeatureRef.parse(text.strip())
            except ValueError as exc:
                ok = False
                self.errors.append(item.error(at, f"{exc} (or 'view:*' for all of a view)"))
                continue
            view_served = served.get(ref.view)
            if view_served is None:
                ok = False
                self._unknown(item, at, "feature view", "feature_views", ref.view, served)
                continue
            wanted = list(view_served.names) if ref.feature == "*" else [ref.feature]
            for name in wanted:
                if name not in view_served.names:
                    ok = False
                    if not view_served.complete:
                        continue  # the view has invalid features, already reported
                    hint = did_you_mean(name, view_served.names)
                    if view_served.declared.get(name):
                        hint = "; it is served per window as " + ", ".join(view_served.declared[name])
                    self.errors.append(
                        item.error(at, f"feature view {ref.view!r} serves no feature {name!r}{hint}")
                    )
                    continue
                new = FeatureRef(ref.view, name)
                if new in refs:
                    ok = False
                    self.errors.append(item.error(at, f"{new} is listed more than once"))
                    continue
                refs.append(new)
        if not ok or any(r.view not in views for r in refs):
            return None
        return FeatureService(
            name=spec.name,
            features=tuple(refs),
            description=spec.description,
            owner=spec.owner or self._defaults_owner,
            tags=tuple(sorted(spec.tags.items())),
        )


@dataclass(slots=True)
class _Served:
    """The served feature names a view declares (known even when the view does not compile)."""

    complete: bool
    names: dict[str, str] = field(default_factory=dict)  # served name -> declared feature name
    declared: dict[str, tuple[str, ...]] = field(default_factory=dict)  # feature -> its served names


def _served_name(feature: str, window: Window) -> str:
    return feature if window.is_lifetime else f"{feature}_{window.label}"
