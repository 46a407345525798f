"""Connecting to the CQL store (ScyllaDB in production, Cassandra 5.0 locally).

One place builds every `Cluster`, so the load-balancing policy (token-aware,
shard-aware when scylla-driver is installed), the protocol version and the
timeouts are the same for the job, the server, the CLI and the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy


@dataclass(frozen=True, slots=True)
class CqlConfig:
    hosts: Sequence[str] = ("127.0.0.1",)
    port: int = 9042
    keyspace: str = "feature_store"
    local_dc: str | None = None
    replication: dict[str, Any] = field(
        default_factory=lambda: {"class": "SimpleStrategy", "replication_factor": 1}
    )
    request_timeout_s: float = 2.0
    connect_timeout_s: float = 5.0
    protocol_version: int = 4  # v4 is what both ScyllaDB and Cassandra 5.0 speak


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
