"""Ports: what the pure core and the use cases need from the outside world.

Adapters in ``feature_store.adapters`` implement these structurally (no inheritance).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int: ...


@dataclass(frozen=True, slots=True)
class RegistrySnapshot:
    """One applied, immutable version of the registry."""

    version: int
    applied_at_ms: int
    applied_by: str
    message: str
    content_json: str  # the compiled registry, serialised by feature_store.definitions.snapshot
    fingerprint: str  # sha256 of content_json


class RegistryStore(Protocol):
    """Where applied registry versions live (the CQL store in production)."""

    def latest(self) -> RegistrySnapshot | None: ...

    def get(self, version: int) -> RegistrySnapshot | None: ...

    def history(self) -> Sequence[RegistrySnapshot]: ...

    def put(self, content_json: str, fingerprint: str, applied_by: str, message: str) -> RegistrySnapshot:
        """Store a new version numbered latest+1; refuse if another writer took that number."""
        ...
