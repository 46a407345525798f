"""Located registry errors: every problem is reported as ``file:line:column: message``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class RegistryError:
    """One problem in the registry, at a 1-based line and column of a file."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class VersionConflict(RuntimeError):
    """Another writer stored the registry version number this one wanted; plan again and retry."""


class RegistryInvalid(Exception):
    """The registry has one or more errors; ``errors`` holds all of them, sorted by location."""

    def __init__(self, errors: Iterable[RegistryError]) -> None:
        self.errors: list[RegistryError] = sorted(set(errors))
        count = len(self.errors)
        super().__init__(f"registry has {count} error{'s' if count != 1 else ''}")

    def __str__(self) -> str:
        return "\n".join([str(self.args[0]), *(str(e) for e in self.errors)])
