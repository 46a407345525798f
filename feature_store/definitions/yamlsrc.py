"""YAML files as plain Python values plus the 1-based position of every node.

ruamel.yaml's round-trip loader keeps line/column information (``.lc``) on mappings and
sequences; we copy the document into plain dicts/lists/scalars (what pydantic validates)
and keep a side table ``path -> (line, column)`` so that any error found later, by pydantic
or by the compiler, can be reported at the offending node.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.reader import ReaderError
from ruamel.yaml.scalarbool import ScalarBoolean
from ruamel.yaml.scalarstring import (
    DoubleQuotedScalarString,
    FoldedScalarString,
    LiteralScalarString,
    SingleQuotedScalarString,
)

from feature_store.definitions.errors import RegistryError

NodePath = tuple[str | int, ...]
Position = tuple[int, int]  # 1-based line, 1-based column

_MAX_DEPTH = 64
_DUPLICATE_KEY = re.compile(r'^found duplicate key "(.*?)" with value ', re.DOTALL)


@dataclass(slots=True)
class LocatedDoc:
    """One YAML document: its plain value and where each node came from."""

    file: str  # the path shown in error messages
    data: Any
    start: Position
    values: dict[NodePath, Position] = field(default_factory=dict)
    keys: dict[NodePath, Position] = field(default_factory=dict)
    quoted: set[NodePath] = field(default_factory=set)  # single- or double-quoted scalars
    block: set[NodePath] = field(default_factory=set)  # literal (|) or folded (>) scalars

    def position(self, path: NodePath, *, key: bool = False) -> Position:
        """Where ``path`` is, or its nearest existing ancestor (for a missing field: its mapping)."""
        if key and path in self.keys:
            return self.keys[path]
        probe = path
        while probe:
            if probe in self.values:
                return self.values[probe]
            probe = probe[:-1]
        return self.start

    def error(
        self, path: NodePath, message: str, *, key: bool = False, column_offset: int = 0
    ) -> RegistryError:
        line, column = self.position(path, key=key)
        return RegistryError(self.file, line, column + column_offset, message)

    def text_column(self, path: NodePath, index: int) -> int:
        """Columns to add to the node's position to reach 0-based ``index`` inside a one-line scalar."""
        if path not in self.values or path in self.block:
            return 0
        return index + (1 if path in self.quoted else 0)


def load_yaml_text(text: str, file: str) -> tuple[list[LocatedDoc], list[RegistryError]]:
    """Parse every document of ``text``; syntax errors come back located, never raised."""
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    errors: list[RegistryError] = []
    docs: list[LocatedDoc] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw_docs = list(yaml.load_all(io.StringIO(text)))
    except MarkedYAMLError as exc:
        errors.append(_syntax_error(exc, file))
        return docs, errors
    except ReaderError as exc:
        line, column = _offset_position(text, exc.position)
        errors.append(RegistryError(file, line, column, f"YAML error: {exc.reason}"))
        return docs, errors
    except (YAMLError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        # ruamel raises plain ValueErrors for values it recognises but cannot build, e.g. the
        # timestamp 2024-13-45; it does not say where, so point at the start of the file.
        message = f"YAML error: {type(exc).__name__}: {exc}".splitlines()[0]
        errors.append(RegistryError(file, 1, 1, message))
        return docs, errors
    starts = _document_starts(text, raw_docs)
    for raw, start in zip(raw_docs, starts, strict=True):
        if raw is None:
            continue
        doc = LocatedDoc(file=file, data=None, start=start)
        doc.data = _convert(raw, (), start, doc, errors, set())
        docs.append(doc)
    return docs, errors


def load_yaml_file(path: Path, file: str) -> tuple[list[LocatedDoc], list[RegistryError]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        return [], [RegistryError(file, 1, 1, f"file is not UTF-8 text: {exc.reason}")]
    except OSError as exc:
        return [], [RegistryError(file, 1, 1, f"cannot read file: {exc.strerror or exc}")]
    return load_yaml_text(text, file)


def _syntax_error(exc: MarkedYAMLError, file: str) -> RegistryError:
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    problem = " ".join(str(exc.problem or "").split())
    context = " ".join(str(exc.context or "").split())
    duplicate = _DUPLICATE_KEY.match(problem) if isinstance(exc, DuplicateKeyError) else None
    if duplicate is not None:
        first = exc.context_mark
        where = f" (the mapping starts at line {first.line + 1})" if first is not None else ""
        message = f"YAML syntax error: duplicate key {duplicate.group(1)!r}{where}"
    elif problem and context:
        context_mark = exc.context_mark
        where = f" at line {context_mark.line + 1}" if context_mark is not None else ""
        message = f"YAML syntax error: {problem} ({context}{where})"
    else:
        message = f"YAML syntax error: {problem or context or 'invalid YAML'}"
    return RegistryError(file, line, column, message)


def _offset_position(text: str, offset: int) -> Position:
    before = text[: max(offset, 0)]
    line = before.count("\n") + 1
    return line, offset - (before.rfind("\n") + 1) + 1


def _document_starts(text: str, raw_docs: list[Any]) -> list[Position]:
    """Start of each document: from ``.lc`` for collections, else from a second, node-level pass."""
    if all(isinstance(d, (CommentedMap, CommentedSeq)) or d is None for d in raw_docs):
        return [(d.lc.line + 1, d.lc.col + 1) if d is not None else (1, 1) for d in raw_docs]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nodes = list(YAML(typ="rt").compose_all(io.StringIO(text)))
        starts = [(n.start_mark.line + 1, n.start_mark.column + 1) for n in nodes]
    except Exception:  # the first pass succeeded; this one is only for nicer positions
        starts = []
    if len(starts) != len(raw_docs):
        return [(1, 1)] * len(raw_docs)
    return starts


def _lc(node: CommentedMap | CommentedSeq, what: str, item: object) -> Position | None:
    try:
        line, column = getattr(node.lc, what)(item)
    except (KeyError, IndexError, TypeError, AttributeError):
        return None  # e.g. keys brought in by a YAML merge (<<: *anchor)
    return int(line) + 1, int(column) + 1


def _items(node: CommentedMap) -> Iterator[tuple[Any, Any]]:
    yield from node.items()


def _convert(  # noqa: PLR0911 - one return per YAML node kind
    node: Any,
    path: NodePath,
    pos: Position,
    doc: LocatedDoc,
    errors: list[RegistryError],
    active: set[int],
) -> Any:
    doc.values[path] = pos
    if isinstance(node, (CommentedMap, CommentedSeq)):
        if id(node) in active or len(path) > _MAX_DEPTH:
            errors.append(RegistryError(doc.file, *pos, "YAML error: recursive or too deeply nested value"))
            return None
        active.add(id(node))
        try:
            return _convert_collection(node, path, pos, doc, errors, active)
        finally:
            active.discard(id(node))
    if isinstance(node, (bool, ScalarBoolean)):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        if isinstance(node, (SingleQuotedScalarString, DoubleQuotedScalarString)):
            doc.quoted.add(path)
        elif isinstance(node, (LiteralScalarString, FoldedScalarString)):
            doc.block.add(path)
        return str(node)
    if node is None:
        return None
    if isinstance(node, (dt.date, dt.datetime)):
        return node.isoformat()  # YAML 1.1 timestamps: registry fields holding them want text
    tag = getattr(getattr(node, "tag", None), "value", None) or getattr(node, "tag", None)
    what = f"the YAML tag {tag}" if isinstance(tag, str) else f"a YAML value of type {type(node).__name__}"
    errors.append(RegistryError(doc.file, *pos, f"unsupported value: {what} is not allowed here"))
    return None


def _convert_collection(
    node: CommentedMap | CommentedSeq,
    path: NodePath,
    pos: Position,
    doc: LocatedDoc,
    errors: list[RegistryError],
    active: set[int],
) -> Any:
    if isinstance(node, CommentedSeq):
        out: list[Any] = []
        for index, item in enumerate(node):
            item_pos = _lc(node, "item", index) or pos
            out.append(_convert(item, (*path, index), item_pos, doc, errors, active))
        return out
    mapping: dict[str, Any] = {}
    for key, value in _items(node):
        key_pos = _lc(node, "key", key) or pos
        if not isinstance(key, str):
            errors.append(
                RegistryError(doc.file, *key_pos, f"mapping keys must be names, got {_describe_key(key)}")
            )
            continue
        doc.keys[(*path, str(key))] = key_pos
        value_pos = _lc(node, "value", key) or key_pos
        mapping[str(key)] = _convert(value, (*path, str(key)), value_pos, doc, errors, active)
    return mapping


def _describe_key(key: object) -> str:
    if key is None:
        return "an empty key"
    if isinstance(key, (bool, ScalarBoolean)):
        return f"the boolean {str(bool(key)).lower()}"
    if isinstance(key, (int, float)):
        return f"the number {key}"
    if isinstance(key, TaggedScalar):
        return "a tagged value"
    return "a complex key"
