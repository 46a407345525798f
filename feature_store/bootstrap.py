"""Composition root: wires adapters to the use cases for the CLI, the job and the server.

`cql://host[:port]/keyspace[?project=NAME&local_dc=DC]` opens the registry store in the
CQL store and makes `apply` create the online tables and the Kafka topics.
"""

from __future__ import annotations

import atexit
import os
from functools import cache
from typing import Any
from urllib.parse import parse_qs, urlsplit

from feature_store.adapters.cql import CqlConfig, make_cluster
from feature_store.adapters.cql_online_schema import CqlOnlineSchema
from feature_store.adapters.cql_registry_store import CqlRegistryStore
from feature_store.adapters.kafka_topics import KafkaTopics
from feature_store.core.ports import RegistryStore
from feature_store.definitions import stores
from feature_store.definitions.apply import ApplyTarget

LOCAL_STORE_URL = "cql://127.0.0.1:9042/feature_store"
KAFKA_ENV = "FSTORE_KAFKA_BOOTSTRAP"


def kafka_bootstrap() -> str:
    return os.environ.get(KAFKA_ENV) or f"127.0.0.1:{os.environ.get('FSTORE_KAFKA_PORT', '9092')}"


@cache
def cql_session(config: CqlConfig) -> Any:
    """One driver Cluster per process and configuration (it pools connections itself)."""
    cluster = make_cluster(config)
    atexit.register(cluster.shutdown)
    return cluster.connect()


def _cql_config(rest: str) -> tuple[CqlConfig, str]:
    url = f"cql:{rest}"
    project = parse_qs(urlsplit(url).query).get("project", ["default"])[0]
    return CqlConfig.from_url(url), project


def _open_cql(rest: str) -> RegistryStore:
    config, project = _cql_config(rest)
    return CqlRegistryStore(cql_session(config), config, project)


def _cql_targets(rest: str) -> list[ApplyTarget]:
    config, _ = _cql_config(rest)
    partitions = int(os.environ.get("FSTORE_TOPIC_PARTITIONS", "2"))
    return [
        CqlOnlineSchema(cql_session(config), config),
        KafkaTopics(kafka_bootstrap(), partitions=partitions),
    ]


def install() -> None:
    """Register the production store schemes; the local stack is the default store."""
    stores.register_store_scheme("cql", _open_cql, _cql_targets)
    if stores.DEFAULT_STORE_URL is None:
        stores.DEFAULT_STORE_URL = LOCAL_STORE_URL


install()
