"""Durations in the registry: ``500ms``, ``30s``, ``10m``, ``1h``, ``1d``, ``7d``, ``2w``.

One parser for every duration field (windows, granularities, TTLs, watermarks). A bare
integer means seconds. Values are kept as integer milliseconds plus the label the author
wrote (``24h`` stays ``24h``), because window labels become part of served feature names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

UNITS_MS: dict[str, int] = {
    "ms": 1,
    "s": 1_000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 7 * 86_400_000,
}
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w)\s*$")
_EXAMPLES = "e.g. 30s, 10m, 1h, 1d, 7d (units: ms, s, m, h, d, w; a bare integer means seconds)"


@dataclass(frozen=True, slots=True)
class Duration:
    ms: int
    label: str  # normalised spelling: "<int><unit>"

    def __str__(self) -> str:
        return self.label


def parse_duration(value: object, *, allow_zero: bool = False) -> Duration:
    """Parse a registry duration, raising ``ValueError`` with a message meant for humans."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got a boolean ({_EXAMPLES})")
    if isinstance(value, int):
        amount, unit = value, "s"
    elif isinstance(value, str):
        match = _DURATION.match(value.lower())
        if match is None:
            raise ValueError(f"invalid duration {value!r}, {_EXAMPLES}")
        amount, unit = int(match.group(1)), match.group(2)
    else:
        raise ValueError(f"expected a duration, got {type(value).__name__} ({_EXAMPLES})")
    if amount < 0:
        raise ValueError(f"duration must not be negative, got {value!r}")
    if amount == 0 and not allow_zero:
        raise ValueError(f"duration must be positive, got {value!r}")
    return Duration(amount * UNITS_MS[unit], f"{amount}{unit}")


def format_duration(ms: int | None) -> str:
    """The shortest exact spelling of ``ms`` (``604800000 -> 7d``); ``None`` -> ``lifetime``."""
    if ms is None:
        return "lifetime"
    if ms == 0:
        return "0s"
    for unit in ("d", "h", "m", "s"):
        size = UNITS_MS[unit]
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
