"""A RegistryStore over a local folder of numbered, immutable JSON snapshots.

Layout: ``<dir>/v000001.json``, ``v000002.json``... Each file holds one ``RegistrySnapshot``.
A new version is written to a temporary file and then hard-linked to its final name, which
fails if the name exists: two concurrent writers cannot both get the same number. Files are
made read-only after writing.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from feature_store.core.ports import Clock, RegistrySnapshot
from feature_store.definitions.errors import VersionConflict
from feature_store.definitions.snapshot import content_fingerprint

_NAME = re.compile(r"^v(\d{6,})\.json$")


class _SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class FileRegistryStore:
    """Applied registry versions as files in ``directory`` (created on first write)."""

    def __init__(self, directory: Path, clock: Clock | None = None) -> None:
        self.directory = Path(directory)
        self._clock: Clock = clock or _SystemClock()

    def __repr__(self) -> str:
        return f"FileRegistryStore({str(self.directory)!r})"

    def _path(self, version: int) -> Path:
        return self.directory / f"v{version:06d}.json"

    def _versions(self) -> list[int]:
        if not self.directory.is_dir():
            return []
        found = (_NAME.match(p.name) for p in self.directory.iterdir())
        return sorted(int(m.group(1)) for m in found if m is not None)

    def _read(self, version: int) -> RegistrySnapshot:
        path = self._path(version)
        try:
            data: Any = json.loads(path.read_text(encoding="utf-8"))
            snapshot = RegistrySnapshot(
                version=int(data["version"]),
                applied_at_ms=int(data["applied_at_ms"]),
                applied_by=str(data["applied_by"]),
                message=str(data["message"]),
                content_json=str(data["content_json"]),
                fingerprint=str(data["fingerprint"]),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"cannot read registry snapshot {path}: {exc}") from None
        if snapshot.version != version:
            raise ValueError(f"registry snapshot {path} says it is version {snapshot.version}")
        return snapshot

    def latest(self) -> RegistrySnapshot | None:
        versions = self._versions()
        return self._read(versions[-1]) if versions else None

    def get(self, version: int) -> RegistrySnapshot | None:
        return self._read(version) if self._path(version).is_file() else None

    def history(self) -> Sequence[RegistrySnapshot]:
        return [self._read(v) for v in self._versions()]

    def put(self, content_json: str, fingerprint: str, applied_by: str, message: str) -> RegistrySnapshot:
        if content_fingerprint(content_json) != fingerprint:
            raise ValueError("fingerprint does not match the registry content")
        versions = self._versions()
        snapshot = RegistrySnapshot(
            version=(versions[-1] + 1) if versions else 1,
            applied_at_ms=self._clock.now_ms(),
            applied_by=applied_by,
            message=message,
            content_json=content_json,
            fingerprint=fingerprint,
        )
        record = {
            "version": snapshot.version,
            "applied_at_ms": snapshot.applied_at_ms,
            "applied_by": snapshot.applied_by,
            "message": snapshot.message,
            "fingerprint": snapshot.fingerprint,
            "content_json": snapshot.content_json,
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=self.directory)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(record, out, indent=2, sort_keys=True)
                out.write("\n")
                out.flush()
                os.fsync(out.fileno())
            tmp.chmod(0o444)
            try:
                _link_exclusive(tmp, self._path(snapshot.version))
            except FileExistsError:
                raise VersionConflict(
                    f"registry version {snapshot.version} was just stored by someone else; plan again"
                ) from None
        finally:
            tmp.unlink(missing_ok=True)
        return snapshot


def _link_exclusive(source: Path, target: Path) -> None:
    """Give ``source`` the name ``target`` unless it exists (FileExistsError), atomically."""
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError:  # no hard links here (some network/FUSE file systems): exclusive create
        with target.open("x", encoding="utf-8") as out:
            out.write(source.read_text(encoding="utf-8"))
        target.chmod(0o444)
