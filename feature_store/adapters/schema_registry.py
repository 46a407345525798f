"""A Confluent-compatible Schema Registry, read-only: schema id -> writer schema.

The job and the archiver resolve schema ids through the applied registry first (our ids are
the sources' schema fingerprints); when a Schema Registry is configured, an id the registry does
not know is looked up there (``GET /schemas/ids/{id}``) and the record is decoded with that
*writer* schema and resolved to the source's *reader* schema (Avro schema resolution), so
producers can evolve their schemas compatibly without a registry change.

Answers are cached for the life of the process (ids are immutable in a Schema Registry);
"unknown id" answers are cached for ``negative_ttl_s``. When the Schema Registry cannot be
reached the lookup waits and retries (backpressure on the consumer: nothing is dead-lettered
because of an outage), logging each failure.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

__all__ = ["SchemaRegistryClient", "SchemaRegistryConfig"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SchemaRegistryConfig:
    url: str  # http(s)://[user:password@]host:port[/prefix]
    timeout_s: float = 5.0
    retry_interval_s: float = 1.0
    max_retry_interval_s: float = 30.0
    negative_ttl_s: float = 60.0


class SchemaRegistryClient:
    def __init__(self, config: SchemaRegistryConfig) -> None:
        parts = urlsplit(config.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"schema registry URL must be http(s)://host[:port][/path], got {config.url!r}")
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        self._base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self._headers = {"Accept": "application/vnd.schemaregistry.v1+json, application/json"}
        if parts.username is not None:
            token = f"{parts.username}:{parts.password or ''}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(token).decode("ascii")
        self._config = config
        self._found: dict[int, str] = {}
        self._missing: dict[int, float] = {}  # id -> monotonic time it was found missing

    @property
    def base_url(self) -> str:
        """The URL without credentials (safe to log)."""
        return self._base

    def writer_schema(self, schema_id: int) -> str | None:
        """The schema registered under ``schema_id`` (JSON text), or None if the registry has none.

        Blocks, retrying with backoff, while the registry cannot be reached.
        """
        found = self._found.get(schema_id)
        if found is not None:
            return found
        missing_since = self._missing.get(schema_id)
        if missing_since is not None and time.monotonic() - missing_since < self._config.negative_ttl_s:
            return None
        delay = self._config.retry_interval_s
        while True:
            try:
                schema = self._fetch(schema_id)
            except _Unavailable as exc:
                log.warning("schema registry %s unavailable (%s); retrying in %.1f s", self._base, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, self._config.max_retry_interval_s)
                continue
            if schema is None:
                self._missing[schema_id] = time.monotonic()
            else:
                self._missing.pop(schema_id, None)
                self._found[schema_id] = schema
            return schema

    def _fetch(self, schema_id: int) -> str | None:
        request = urllib.request.Request(f"{self._base}/schemas/ids/{schema_id}", headers=self._headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self._config.timeout_s) as response:  # noqa: S310
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise _Unavailable(f"HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise _Unavailable(f"{type(exc).__name__}: {exc}") from None
        if not isinstance(body, dict):
            return None
        schema = body.get("schema")
        if body.get("schemaType", "AVRO") != "AVRO" or not isinstance(schema, str):
            # a Protobuf/JSON schema, or an answer we do not understand: not an Avro writer schema
            return None
        return schema


class _Unavailable(Exception):
    pass
