"""Opening the store of applied registry versions from a URL (``--store``).

``file:PATH`` (or ``file://PATH``) is a local folder of numbered JSON snapshots, for tests and
air-gapped use. Deployments add schemes, e.g. ``cql://host:port/keyspace``, with
:func:`register_store_scheme`, including the side effects (tables, topics) `apply` performs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from feature_store.adapters.file_registry_store import FileRegistryStore
from feature_store.core.ports import RegistryStore
from feature_store.definitions.apply import ApplyTarget
from feature_store.definitions.errors import VersionConflict

__all__ = [
    "DEFAULT_STORE_URL",
    "STORE_ENV",
    "StoreUrlError",
    "VersionConflict",
    "apply_targets_for",
    "open_registry_store",
    "register_store_scheme",
    "resolve_store_url",
]

STORE_ENV = "FSTORE_REGISTRY_STORE"
DEFAULT_STORE_URL: str | None = None  # e.g. "cql://localhost:9042/feature_store" once wired


class StoreUrlError(ValueError):
    """A store URL that no known scheme handles."""


@dataclass(frozen=True, slots=True)
class StoreScheme:
    open: Callable[[str], RegistryStore]  # the URL after "<scheme>:"
    targets: Callable[[str], list[ApplyTarget]] = lambda _rest: []


_SCHEMES: dict[str, StoreScheme] = {}


def register_store_scheme(
    scheme: str,
    open_store: Callable[[str], RegistryStore],
    targets: Callable[[str], list[ApplyTarget]] | None = None,
) -> None:
    """Make ``<scheme>:...`` URLs openable; ``targets`` lists the apply side effects for that store."""
    _SCHEMES[scheme] = StoreScheme(open_store, targets or (lambda _rest: []))


def _split(url: str) -> tuple[StoreScheme, str]:
    scheme, sep, rest = url.partition(":")
    if not sep or scheme not in _SCHEMES or not rest:
        known = ", ".join(f"{s}:..." for s in sorted(_SCHEMES))
        raise StoreUrlError(f"unsupported registry store URL {url!r}; supported: {known}")
    return _SCHEMES[scheme], rest


def open_registry_store(url: str) -> RegistryStore:
    """The RegistryStore for ``url`` (``file:PATH`` here; more schemes via register_store_scheme)."""
    scheme, rest = _split(url)
    return scheme.open(rest)


def apply_targets_for(url: str) -> list[ApplyTarget]:
    """The side effects applying to the store at ``url`` performs (none for file stores)."""
    scheme, rest = _split(url)
    return scheme.targets(rest)


def resolve_store_url(url: str | None) -> str | None:
    """``--store``, else ``$FSTORE_REGISTRY_STORE``, else the built-in default (None: no store)."""
    return url or os.environ.get(STORE_ENV) or DEFAULT_STORE_URL


def _open_file_store(rest: str) -> RegistryStore:
    path = rest.removeprefix("//") if rest.startswith("//") else rest
    return FileRegistryStore(Path(path))


register_store_scheme("file", _open_file_store)
