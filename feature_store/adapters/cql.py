"""Connecting to the CQL store (ScyllaDB in production, Cassandra 5.0 locally).

One place builds every `Cluster`, so the load-balancing policy (token-aware,
shard-aware when scylla-driver is installed), the protocol version and the
timeouts are the same for the job, the server, the CLI and the tests.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

_IDENTIFIER = re.compile(r"[a-z][a-z0-9_]{0,47}")


@dataclass(frozen=True, slots=True)
class CqlConfig:
    hosts: Sequence[str] = ("127.0.0.1",)
    port: int = 9042
    keyspace: str = "feature_store"
    local_dc: str | None = None
    # keyspace replication as (option, value) pairs: hashable, so a config can key a cache
    replication: tuple[tuple[str, str | int], ...] = (("class", "SimpleStrategy"), ("replication_factor", 1))
    request_timeout_s: float = 2.0
    connect_timeout_s: float = 5.0
    protocol_version: int = 4  # v4 is what both ScyllaDB and Cassandra 5.0 speak

    def __post_init__(self) -> None:
        if not _IDENTIFIER.fullmatch(self.keyspace):
            raise ValueError(f"keyspace {self.keyspace!r} must be a lowercase CQL identifier (a-z, 0-9, _)")

    @classmethod
    def from_url(cls, url: str) -> CqlConfig:
        """`cql://host[,host...][:port]/keyspace[?local_dc=dc1]`."""
        parsed = urlsplit(url)
        if parsed.scheme != "cql" or not parsed.hostname:
            raise ValueError(f"{url!r} is not a cql://host:port/keyspace URL")
        hosts = tuple(h.rsplit(":", 1)[0] for h in parsed.netloc.split(","))
        port = parsed.port or 9042
        keyspace = parsed.path.strip("/") or "feature_store"
        local_dc = dict(p.split("=", 1) for p in parsed.query.split("&") if "=" in p).get("local_dc")
        return cls(hosts=hosts, port=port, keyspace=keyspace, local_dc=local_dc)


def make_cluster(config: CqlConfig) -> Cluster:
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=config.local_dc)),
        request_timeout=config.request_timeout_s,
    )
    return Cluster(
        list(config.hosts),
        port=config.port,
        protocol_version=config.protocol_version,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connect_timeout=config.connect_timeout_s,
        control_connection_timeout=config.connect_timeout_s,
    )
