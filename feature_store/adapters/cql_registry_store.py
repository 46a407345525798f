"""Applied registry versions in the CQL store: an append-only table of immutable snapshots.

No lightweight transactions (ScyllaDB tablets keyspaces reject them): a writer
takes latest+1, writes, and reads the row back; if another writer's snapshot is
there instead, it reports the conflict rather than silently losing a version.
"""

from __future__ import annotations

import getpass
import time
from collections.abc import Sequence
from typing import Any

from feature_store.adapters.cql import CqlConfig
from feature_store.core.ports import RegistrySnapshot

TABLE = "registry_versions"


class RegistryConflict(RuntimeError):
    pass


def ensure_keyspace(session: Any, config: CqlConfig) -> None:
    replication = ", ".join(
        f"'{k}': {v!r}" if isinstance(v, str) else f"'{k}': {v}" for k, v in config.replication
    )
    session.execute(f"CREATE KEYSPACE IF NOT EXISTS {config.keyspace} WITH replication = {{{replication}}}")


class CqlRegistryStore:
    """RegistryStore over `<keyspace>.registry_versions`, one partition per project."""

    def __init__(self, session: Any, config: CqlConfig, project: str) -> None:
        self._session = session
        self._project = project
        ks = config.keyspace
        ensure_keyspace(session, config)
        session.execute(
            f"CREATE TABLE IF NOT EXISTS {ks}.{TABLE} ("
            " project text, version bigint, applied_at_ms bigint, applied_by text, message text,"
            " content text, fingerprint text, PRIMARY KEY ((project), version))"
            " WITH CLUSTERING ORDER BY (version DESC)"
        )
        cols = "version, applied_at_ms, applied_by, message, content, fingerprint"
        self._latest = session.prepare(f"SELECT {cols} FROM {ks}.{TABLE} WHERE project = ? LIMIT 1")
        self._get = session.prepare(f"SELECT {cols} FROM {ks}.{TABLE} WHERE project = ? AND version = ?")
        self._all = session.prepare(f"SELECT {cols} FROM {ks}.{TABLE} WHERE project = ?")
        self._insert = session.prepare(
            f"INSERT INTO {ks}.{TABLE} (project, {cols}) VALUES (?, ?, ?, ?, ?, ?, ?)"
        )

    @staticmethod
    def _snapshot(row: Any) -> RegistrySnapshot:
        return RegistrySnapshot(
            version=row.version,
            applied_at_ms=row.applied_at_ms,
            applied_by=row.applied_by,
            message=row.message,
            content_json=row.content,
            fingerprint=row.fingerprint,
        )

    def latest(self) -> RegistrySnapshot | None:
        row = self._session.execute(self._latest, (self._project,)).one()
        return None if row is None else self._snapshot(row)

    def get(self, version: int) -> RegistrySnapshot | None:
        row = self._session.execute(self._get, (self._project, version)).one()
        return None if row is None else self._snapshot(row)

    def history(self) -> Sequence[RegistrySnapshot]:
        return [self._snapshot(r) for r in self._session.execute(self._all, (self._project,))]

    def put(self, content_json: str, fingerprint: str, applied_by: str, message: str) -> RegistrySnapshot:
        latest = self.latest()
        version = 1 if latest is None else latest.version + 1
        snap = RegistrySnapshot(
            version=version,
            applied_at_ms=int(time.time() * 1000),
            applied_by=applied_by or getpass.getuser(),
            message=message,
            content_json=content_json,
            fingerprint=fingerprint,
        )
        self._session.execute(
            self._insert,
            (self._project, version, snap.applied_at_ms, snap.applied_by, message, content_json, fingerprint),
        )
        stored = self.get(version)
        if stored is None or stored.fingerprint != fingerprint or stored.applied_at_ms != snap.applied_at_ms:
            raise RegistryConflict(
                f"another apply wrote registry version {version} at the same time; run plan and apply again"
            )
        return snap
