"""Kafka topics of the registry's sources and their dead-letter topics, created by `fstore apply`."""

from __future__ import annotations

from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from feature_store.core.model import Registry


def wanted_topics(registry: Registry) -> list[str]:
    topics: dict[str, None] = {}
    for source in registry.sources:
        topics[source.topic] = None
        if source.dead_letter_topic:
            topics[source.dead_letter_topic] = None
    return list(topics)


class KafkaTopics:
    """An ApplyTarget: creates missing topics; never deletes or repartitions existing ones."""

    name = "kafka"

    def __init__(
        self, bootstrap: str, partitions: int = 2, replication: int = 1, timeout_s: float = 30
    ) -> None:
        self._admin = AdminClient({"bootstrap.servers": bootstrap})
        self._partitions = partitions
        self._replication = replication
        self._timeout_s = timeout_s

    def _missing(self, registry: Registry) -> list[str]:
        existing = set(self._admin.list_topics(timeout=self._timeout_s).topics)
        return [t for t in wanted_topics(registry) if t not in existing]

    def plan_changes(self, old: Registry | None, new: Registry) -> list[str]:
        return [f"create topic {t} ({self._partitions} partitions)" for t in self._missing(new)]

    def apply(self, old: Registry | None, new: Registry) -> None:
        missing = self._missing(new)
        if not missing:
            return
        futures = self._admin.create_topics(
            [NewTopic(t, self._partitions, self._replication) for t in missing],
            request_timeout=self._timeout_s,
        )
        for topic, future in futures.items():
            try:
                future.result(timeout=self._timeout_s)
            except Exception as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise RuntimeError(f"creating topic {topic} failed: {exc}") from exc
