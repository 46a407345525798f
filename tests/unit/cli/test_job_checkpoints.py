"""Where `fstore job run` keeps checkpoints: never Flink's in-memory default (5 MiB of state)."""

from __future__ import annotations

from pathlib import Path

import pytest

from feature_store.cli.job_cmds import checkpoint_uri


def test_an_explicit_folder_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FSTORE_CHECKPOINT_DIR", "s3://bucket/ckpt")

    assert checkpoint_uri(tmp_path / "ck", "g") == (tmp_path / "ck").resolve().as_uri()


def test_the_environment_comes_next(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FSTORE_CHECKPOINT_DIR", "s3://bucket/ckpt")

    assert checkpoint_uri(None, "g") == "s3://bucket/ckpt"


def test_a_local_run_keeps_them_in_the_stack_folder_per_group(
    project_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FSTORE_CHECKPOINT_DIR", raising=False)
    monkeypatch.setenv("FSTORE_HOME", str(project_root))

    uri = checkpoint_uri(None, "fstore-features")

    assert uri == (project_root / ".stack" / "checkpoints" / "fstore-features").resolve().as_uri()
