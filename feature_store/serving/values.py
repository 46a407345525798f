"""Mapping between Python values, the registry's ValueTypes and the serving proto's ``Value`` oneof.

The server writes each served feature into the ``Value`` field its ValueType names (no type
sniffing per value); the client reads them back with :func:`from_value`. Entity keys arrive as
``Value`` s and are rendered to the text that ``core.keys`` stores (``str`` of the typed value).
"""

from __future__ import annotations

import numbers
from typing import Any, Final

from feature_store.core.lookup import FieldStatus
from feature_store.core.model import ValueType
from feature_store.serving.v1 import serving_pb2 as pb

__all__ = [
    "KEY_FIELD",
    "LIST_TYPES",
    "PROTO_VALUE_TYPE",
    "VALUE_FIELD",
    "InvalidKey",
    "from_value",
    "key_text",
    "set_value",
    "status_name",
    "to_value",
]

# The Value oneof field each served type is written to.
VALUE_FIELD: Final[dict[ValueType, str]] = {
    ValueType.BOOL: "bool_val",
    ValueType.INT64: "int64_val",
    ValueType.FLOAT64: "double_val",
    ValueType.STRING: "string_val",
    ValueType.BYTES: "bytes_val",
    ValueType.INT64_LIST: "int64_list_val",
    ValueType.FLOAT64_LIST: "double_list_val",
    ValueType.STRING_LIST: "string_list_val",
    ValueType.BOOL_LIST: "bool_list_val",
    ValueType.BYTES_LIST: "bytes_list_val",
}
LIST_TYPES: Final = frozenset(t for t in ValueType if t.value.endswith("_list"))

PROTO_VALUE_TYPE: Final[dict[ValueType, pb.ValueType.ValueType]] = {
    ValueType.BOOL: pb.VALUE_TYPE_BOOL,
    ValueType.INT64: pb.VALUE_TYPE_INT64,
    ValueType.FLOAT64: pb.VALUE_TYPE_FLOAT64,
    ValueType.STRING: pb.VALUE_TYPE_STRING,
    ValueType.BYTES: pb.VALUE_TYPE_BYTES,
    ValueType.INT64_LIST: pb.VALUE_TYPE_INT64_LIST,
    ValueType.FLOAT64_LIST: pb.VALUE_TYPE_FLOAT64_LIST,
    ValueType.STRING_LIST: pb.VALUE_TYPE_STRING_LIST,
    ValueType.BOOL_LIST: pb.VALUE_TYPE_BOOL_LIST,
    ValueType.BYTES_LIST: pb.VALUE_TYPE_BYTES_LIST,
}

# Entity join keys: the Value field a key of each type must use.
KEY_FIELD: Final[dict[ValueType, str]] = {
    ValueType.STRING: "string_val",
    ValueType.INT64: "int64_val",
    ValueType.BYTES: "bytes_val",
}
_KEY_SEP: Final = "\x1f"


class InvalidKey(ValueError):
    """An entity key value of the wrong type or content."""


def key_text(value: pb.Value, key_type: ValueType) -> str:
    """The stored text of one join-key value (as ``core.keys`` renders it), or raise InvalidKey."""
    kind = value.WhichOneof("kind")
    expected = KEY_FIELD.get(key_type)
    if kind is None or kind != expected:
        got = kind or "an empty Value"
        raise InvalidKey(f"expected {expected} (join key type {key_type.value}), got {got}")
    text = str(getattr(value, kind))
    if _KEY_SEP in text:
        raise InvalidKey("contains U+001F, which entity keys cannot hold")
    return text


def set_value(msg: pb.Value, value_type: ValueType, value: Any) -> None:
    """Write ``value`` into the field of ``value_type``; raise ValueError/TypeError if it cannot."""
    field = VALUE_FIELD[value_type]
    if value_type in LIST_TYPES:
        getattr(msg, field).values.extend(value)
    else:
        setattr(msg, field, value)


def from_value(msg: pb.Value) -> Any:
    """The Python value of a Value: None when unset, a list for the list types."""
    kind = msg.WhichOneof("kind")
    if kind is None:
        return None
    value = getattr(msg, kind)
    if kind.endswith("_list_val"):
        return list(value.values)
    return value


def to_value(item: object) -> pb.Value:
    """A Value from a Python scalar (entity keys on the client side): str, int, bytes, bool, float."""
    if isinstance(item, str):
        return pb.Value(string_val=item)
    if isinstance(item, bool):
        return pb.Value(bool_val=item)
    if isinstance(item, numbers.Integral):
        return pb.Value(int64_val=int(item))
    if isinstance(item, bytes | bytearray | memoryview):
        return pb.Value(bytes_val=bytes(item))
    if isinstance(item, numbers.Real):
        return pb.Value(double_val=float(item))
    raise TypeError(f"cannot send {type(item).__name__} as an entity key (use str, int or bytes)")


def status_name(status: int) -> str:
    """``FieldStatus`` name (``PRESENT``...) of a proto status number; ``UNSPECIFIED`` for 0."""
    try:
        return FieldStatus(status).name
    except ValueError:
        return "UNSPECIFIED"
