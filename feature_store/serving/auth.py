"""API tokens: who may read which feature services.

A caller sends ``authorization: Bearer <token>``. Each configured grant names the feature
services its token may read (``*`` = all, which also allows ad-hoc feature lists); an ad-hoc
feature list needs every feature to belong to an allowed service. Tokens are kept only as
SHA-256 digests and compared with :func:`hmac.compare_digest` against *every* grant, so the
time taken does not depend on which grant (if any) matched. Logs name the grant, never the token.

Tokens file (YAML or JSON)::

    tokens:
      - name: ranker                  # what logs and metrics show
        token_sha256: 9f86d0818...    # sha256 hex of the token (preferred), or
        # token: "s3cret"             # the token itself
        services: [ranking_v1, pair_v1]
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feature_store.serving.settings import ServeSettings, read_config_file

__all__ = ["ALL_SERVICES", "AuthError", "Authenticator", "Grant", "token_digest"]

ALL_SERVICES = "*"
AUTH_HEADER = "authorization"


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True, slots=True)
class Grant:
    name: str
    services: frozenset[str]

    @property
    def all_services(self) -> bool:
        return ALL_SERVICES in self.services

    def allows(self, service: str) -> bool:
        return self.all_services or service in self.services


ANONYMOUS = Grant("anonymous", frozenset({ALL_SERVICES}))  # auth disabled


class AuthError(Exception):
    def __init__(self, unauthenticated: bool, message: str) -> None:
        super().__init__(message)
        self.unauthenticated = unauthenticated  # False: authenticated but not allowed
        self.message = message


def _grants_from_file(path: Path) -> list[tuple[bytes, Grant]]:
    data = read_config_file(path)
    entries = data.get("tokens")
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected `tokens:` with a list of grants")
    grants: list[tuple[bytes, Grant]] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: tokens[{i}] is not a mapping")
        name = str(entry.get("name") or f"token-{i}")
        services = entry.get("services")
        if not isinstance(services, list) or not all(isinstance(s, str) for s in services):
            raise ValueError(f"{path}: tokens[{i}] ({name}) needs `services:` as a list of names")
        if "token_sha256" in entry:
            digest = bytes.fromhex(str(entry["token_sha256"]))
            if len(digest) != 32:
                raise ValueError(f"{path}: tokens[{i}] ({name}): token_sha256 is not 64 hex digits")
        elif entry.get("token"):
            digest = token_digest(str(entry["token"]))
        else:
            raise ValueError(f"{path}: tokens[{i}] ({name}) needs `token_sha256` or `token`")
        grants.append((digest, Grant(name, frozenset(services))))
    return grants


class Authenticator:
    def __init__(self, enabled: bool, grants: Iterable[tuple[bytes, Grant]] = ()) -> None:
        self.enabled = enabled
        self._grants = tuple(grants)

    @classmethod
    def from_settings(cls, settings: ServeSettings) -> Authenticator:
        grants: list[tuple[bytes, Grant]] = []
        if settings.tokens_file is not None:
            grants.extend(_grants_from_file(settings.tokens_file))
        grants.extend(
            (token_digest(token), Grant(f"env-{i}", frozenset(services)))
            for i, (token, services) in enumerate(settings.tokens.items())
        )
        return cls(settings.auth_enabled, grants)

    @property
    def grant_count(self) -> int:
        return len(self._grants)

    def authenticate(self, metadata: Iterable[tuple[str, Any]] | None) -> Grant:
        """The caller's grant; raise AuthError(unauthenticated=True) without a valid token."""
        if not self.enabled:
            return ANONYMOUS
        token: str | None = None
        for key, value in metadata or ():
            if key == AUTH_HEADER:
                text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
                scheme, _, rest = text.strip().partition(" ")
                if scheme.lower() == "bearer" and rest.strip():
                    token = rest.strip()
                break
        if token is None:
            raise AuthError(True, "missing API token: send metadata 'authorization: Bearer <token>'")
        digest = token_digest(token)
        found: Grant | None = None
        for known, grant in self._grants:  # no early exit: same work whichever grant matches
            if hmac.compare_digest(known, digest):
                found = grant
        if found is None:
            raise AuthError(True, "invalid API token")
        return found

    @staticmethod
    def check_service(grant: Grant, service: str) -> None:
        if not grant.allows(service):
            raise AuthError(False, f"token {grant.name!r} may not read feature service {service!r}")

    @staticmethod
    def check_features(grant: Grant, features: Iterable[str], allowed: Mapping[str, frozenset[str]]) -> None:
        """``allowed``: service -> its feature names; every feature must be in an allowed service."""
        if grant.all_services:
            return
        readable: set[str] = set()
        for service in grant.services:
            readable |= allowed.get(service, frozenset())
        denied = [f for f in features if f not in readable]
        if denied:
            raise AuthError(
                False,
                f"token {grant.name!r} may not read {', '.join(denied[:5])}"
                + (f" and {len(denied) - 5} more" if len(denied) > 5 else "")
                + " (not in any feature service it is allowed)",
            )
