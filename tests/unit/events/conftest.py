"""Shared, session-scoped samples: generating is cheap, but not free enough to redo per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from feature_store.core.model import Registry
from feature_store.definitions.compiler import load_registry
from feature_store.events.generator import EventGenerator, GeneratedEvent, GeneratorConfig

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SAMPLE_CONFIG = GeneratorConfig(
    seed=7, rate=1000.0, users=5_000, start_ms=START_MS, late_fraction=0.05, malformed_fraction=0.05
)
SAMPLE_SIZE = 30_000


@pytest.fixture(scope="session")
def registry(example_registry_dir: Path) -> Registry:
    return load_registry(example_registry_dir)


@pytest.fixture(scope="session")
def sample(registry: Registry) -> list[GeneratedEvent]:
    """30 s of traffic at 1000 events/s with 5% late and 5% malformed events."""
    return list(EventGenerator(registry, SAMPLE_CONFIG).events(max_events=SAMPLE_SIZE))


@pytest.fixture(scope="session")
def clean_sample(registry: Registry) -> list[GeneratedEvent]:
    """Only valid events, no warm-up: every session starts inside the sample."""
    config = GeneratorConfig(seed=11, rate=500.0, users=2_000, start_ms=START_MS, warmup_s=0)
    return list(EventGenerator(registry, config).events(max_events=40_000))
