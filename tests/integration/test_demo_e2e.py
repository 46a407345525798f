"""The README's golden path: `fstore demo` end to end on the real stack."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_runs_events_to_export_and_online_equals_offline(stack: Stack, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "feature_store.cli.main", "demo"]
        + ["--events", "3000", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=None,
    )

    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "values compared, equal" in proc.stdout
    assert list(tmp_path.glob("*/training.parquet"))
