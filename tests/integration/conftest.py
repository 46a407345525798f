"""The real local stack, shared by every integration test of a session.

`stack` reuses services that already answer (e.g. after `make up`) and starts the
missing ones with the project's own scripts otherwise; services it started are
stopped at the end of the session unless FSTORE_KEEP_STACK=1.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from feature_store.stack import fetch, services
from feature_store.stack.layout import Layout, Ports


@dataclass(frozen=True, slots=True)
class Stack:
    layout: Layout
    ports: Ports

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports.kafka}"

    @property
    def cassandra_port(self) -> int:
        return self.ports.cassandra


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    layout, ports = Layout.default(), Ports.from_env()
    fetch.fetch_jars(layout)
    started: list[str] = []
    for name, svc in services.SERVICES.items():
        if not svc.probe(ports):
            services.start(layout, ports, name)
            started.append(name)
    yield Stack(layout, ports)
    from tests.integration.feature_job_support import shutdown_clusters  # noqa: PLC0415

    shutdown_clusters()
    if os.environ.get("FSTORE_KEEP_STACK") != "1":
        for name in reversed(started):
            services.stop(layout, name)


@pytest.fixture
def unique_name() -> str:
    """A name no other test (or earlier run against the same stack) uses."""
    return f"t{uuid.uuid4().hex[:12]}"
