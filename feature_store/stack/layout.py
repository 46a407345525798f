"""Where the local stack keeps its jars, data, logs and pid files, and which ports it uses.

Everything lives under ``<project>/.stack/`` (git-ignored) so a checkout is
self-contained: two clones never share state, and `rm -rf .stack` is a reset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def project_root() -> Path:
    """The checkout the stack belongs to: $FSTORE_HOME, else the folder holding stack/pom.xml."""
    env = os.environ.get("FSTORE_HOME")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve()
    for parent in (Path.cwd(), *here.parents):
        if (parent / "stack" / "pom.xml").is_file():
            return parent
    raise RuntimeError("cannot find the project root (a folder with stack/pom.xml); set FSTORE_HOME")


def _port(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name}={raw!r} is not a port number") from exc


@dataclass(frozen=True, slots=True)
class Ports:
    kafka: int
    kafka_controller: int
    cassandra: int
    cassandra_storage: int
    cassandra_jmx: int

    @classmethod
    def from_env(cls) -> Ports:
        return cls(
            kafka=_port("FSTORE_KAFKA_PORT", 9092),
            kafka_controller=_port("FSTORE_KAFKA_CONTROLLER_PORT", 9093),
            cassandra=_port("FSTORE_CASSANDRA_PORT", 9042),
            cassandra_storage=_port("FSTORE_CASSANDRA_STORAGE_PORT", 7000),
            cassandra_jmx=_port("FSTORE_CASSANDRA_JMX_PORT", 7199),
        )


@dataclass(frozen=True, slots=True)
class Layout:
    root: Path

    @classmethod
    def default(cls) -> Layout:
        return cls(project_root())

    @property
    def stack(self) -> Path:
        return self.root / ".stack"

    @property
    def pom(self) -> Path:
        return self.root / "stack" / "pom.xml"

    @property
    def conf_templates(self) -> Path:
        return self.root / "stack" / "conf"

    def lib(self, service: str) -> Path:
        return self.stack / "lib" / service

    def data(self, service: str) -> Path:
        return self.stack / "data" / service

    def conf(self, service: str) -> Path:
        return self.stack / "conf" / service

    @property
    def logs(self) -> Path:
        return self.stack / "logs"

    def pidfile(self, service: str) -> Path:
        return self.stack / "run" / f"{service}.pid"

    @property
    def kafka_connector_jar(self) -> Path:
        jars = sorted(self.lib("flink").glob("flink-sql-connector-kafka-*.jar"))
        if not jars:
            raise FileNotFoundError(
                f"no Kafka connector jar in {self.lib('flink')}; run `fstore dev fetch` (or `make jars`)"
            )
        return jars[-1]

    @property
    def job_jars(self) -> list[Path]:
        """The job's JVM side (jobs/jvm, built by `fstore dev fetch`) and its runtime jars."""
        folder = self.lib("flink-jobs")
        if not (folder / "fstore-flink-jobs.jar").is_file():
            raise FileNotFoundError(
                f"no fstore-flink-jobs.jar in {folder}; run `fstore dev fetch` (or `make jars`)"
            )
        return sorted(folder.glob("*.jar"))
