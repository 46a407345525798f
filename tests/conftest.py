"""Shared fixtures. Integration fixtures live in tests/integration/conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def project_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def example_registry_dir() -> Path:
    return ROOT / "registry"
