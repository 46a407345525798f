"""The response log: online responses as JSON Lines, for `fstore audit consistency`.

Import-light (stdlib only), so the server or a client can write it. One line per served entity
row::

    {"t_ms": 1716200000123,
     "keys": {"user_id": "u42"},
     "registry_version": 7,                       # optional
     "features": {"user_calls:calls_lifetime": {"value": 12, "status": "PRESENT"},
                  "user_calls:call_duration_avg_7d": {"value": null, "status": "NOT_FOUND"}}}

* ``t_ms``: the time the server read at (ms since the epoch, UTC);
* ``keys``: the entity join keys of the request row (strings, ints, or bytes as
  ``{"$bytes": "<hex>"}``);
* ``features``: by reference ``view:feature`` as in ``GetOnlineFeaturesResponse.feature_names``;
  ``status`` is the FieldStatus name (``PRESENT``...; the ``FIELD_STATUS_`` prefix and the enum
  numbers are accepted too); ``value`` is the value in JSON (lists as arrays, bytes as above,
  non-finite floats as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feature_store.core.lookup import FieldStatus

_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


class ResponseLogError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class LoggedFeature:
    value: Any
    status: FieldStatus


@dataclass(frozen=True, slots=True)
class LoggedResponse:
    t_ms: int
    keys: dict[str, Any]
    features: dict[str, LoggedFeature]
    registry_version: int | None = None


def encode_value(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return {"$bytes": bytes(value).hex()}
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, list | tuple):
        return [encode_value(v) for v in value]
    return value


def decode_value(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"$bytes"}:
        return bytes.fromhex(value["$bytes"])
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    return value


def decode_float(value: Any) -> Any:
    if isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    return value


def parse_status(value: Any) -> FieldStatus:
    if isinstance(value, int) and not isinstance(value, bool):
        return FieldStatus(value)
    if isinstance(value, str):
        return FieldStatus[value.removeprefix("FIELD_STATUS_")]
    raise ValueError(f"status {value!r} is neither a FieldStatus name nor its number")


def to_json_line(response: LoggedResponse) -> str:
    body: dict[str, Any] = {
        "t_ms": response.t_ms,
        "keys": {k: encode_value(v) for k, v in response.keys.items()},
        "features": {
            ref: {"value": encode_value(f.value), "status": f.status.name}
            for ref, f in response.features.items()
        },
    }
    if response.registry_version is not None:
        body["registry_version"] = response.registry_version
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


def _parse(line: str, where: str) -> LoggedResponse:
    try:
        body = json.loads(line)
        if not isinstance(body, Mapping):
            raise TypeError("not a JSON object")
        t_ms = body["t_ms"]
        if not isinstance(t_ms, int) or isinstance(t_ms, bool):
            raise TypeError("t_ms is not an integer")
        keys = {str(k): decode_value(v) for k, v in dict(body["keys"]).items()}
        features = {}
        for ref, item in dict(body["features"]).items():
            features[str(ref)] = LoggedFeature(decode_value(item.get("value")), parse_status(item["status"]))
        version = body.get("registry_version")
        return LoggedResponse(t_ms, keys, features, version if isinstance(version, int) else None)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ResponseLogError(f"{where}: not a response log record ({type(exc).__name__}: {exc})") from None


def read_responses(path: Path) -> Iterator[LoggedResponse]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                yield _parse(line, f"{path}:{number}")
