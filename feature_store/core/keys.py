"""Entity keys as stored: the join-key values, in the entity's key order, joined by 0x1F.

The job writes and the server and export read with this one function, so a key
means the same bytes everywhere. Values are rendered with ``str`` (ids are strings
or integers in practice); 0x1F (unit separator) does not occur in ids.
"""

from __future__ import annotations

from collections.abc import Sequence

KEY_SEP = "\x1f"


def entity_key_text(values: Sequence[object]) -> str:
    return KEY_SEP.join(str(v) for v in values)


def entity_key_bytes(values: Sequence[object]) -> bytes:
    return entity_key_text(values).encode("utf-8")
