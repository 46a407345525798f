"""Realistic event traffic: a deterministic generator (pure) and a rate-limited Kafka producer.

>>> gen = EventGenerator(load_registry(Path("registry")), GeneratorConfig(seed=7, rate=500))
>>> for event in gen.events(max_events=1000): ...
"""

from feature_store.events.generator import (
    Defect,
    EventGenerator,
    EventKind,
    GeneratedEvent,
    GeneratorConfig,
    generate,
    with_topic_prefix,
)

__all__ = [
    "Defect",
    "EventGenerator",
    "EventKind",
    "GeneratedEvent",
    "GeneratorConfig",
    "generate",
    "with_topic_prefix",
]
