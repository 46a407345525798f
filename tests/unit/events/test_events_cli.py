"""`fstore events produce` without Kafka (--dry-run); the Kafka path is in tests/integration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from feature_store.cli import events_cmds
from feature_store.cli.events_cmds import parse_start


def run(*args: str) -> Result:
    result = CliRunner().invoke(events_cmds.app, list(args), env={"COLUMNS": "200"})
    assert "Traceback" not in result.output, result.output
    return result


def test_dry_run_json_summary(example_registry_dir: Path) -> None:
    args = ["produce", "--dry-run", "--json", "--registry", str(example_registry_dir)]
    args += ["--rate", "500", "--duration", "3", "--seed", "4", "--users", "300"]
    args += ["--late-fraction", "0.1", "--malformed-fraction", "0.1", "--start-time", "2026-01-01T00:00:00Z"]
    result = run(*args)

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["dry_run"] is True
    assert summary["produced"] == 1_500
    assert sum(summary["by_kind"].values()) == 1_500
    assert summary["by_kind"]["late"] > 50
    assert summary["by_kind"]["malformed"] > 50
    assert summary["topics"]["like"] == "events.like"
    assert summary["achieved_rate"] > 0


def test_max_events_topic_prefix_and_table(example_registry_dir: Path) -> None:
    args = ["produce", "--dry-run", "-r", str(example_registry_dir), "--max-events", "200", "--warmup", "5"]
    args += ["--topic-prefix", "t42.", "--event-time-offset", "-1h"]
    result = run(*args)

    assert result.exit_code == 0, result.output
    assert "t42.events.match_request" in result.stdout
    assert "generated 200 events" in result.stdout


def test_same_seed_same_summary(example_registry_dir: Path) -> None:
    args = ["produce", "--dry-run", "--json", "-r", str(example_registry_dir), "--max-events", "500"]
    args += [
        "--start-time",
        "2026-01-01T00:00:00",
        "--seed",
        "9",
        "--malformed-fraction",
        "0.2",
        "--warmup",
        "5",
    ]
    first, second = json.loads(run(*args).stdout), json.loads(run(*args).stdout)

    assert first["by_source"] == second["by_source"]


def test_bad_arguments_are_reported(example_registry_dir: Path, tmp_path: Path) -> None:
    base = ["produce", "--dry-run", "-r", str(example_registry_dir), "--max-events", "10"]

    both = run(*base, "--start-time", "2026-01-01", "--event-time-offset", "1h")
    assert both.exit_code == 2
    assert "not both" in both.output
    assert run(*base, "--late-fraction", "0.7", "--malformed-fraction", "0.7").exit_code == 2
    assert run(*base, "--users", "1").exit_code == 2
    missing = run("produce", "--dry-run", "-r", str(tmp_path))
    assert missing.exit_code == 1
    assert "invalid registry" in missing.output


def test_parse_start() -> None:
    now = 1_767_225_600_000
    assert parse_start("2026-01-01T00:00:00Z", None) == now
    assert parse_start("2026-01-01T01:00:00+01:00", None) == now
    assert parse_start("2026-01-01", None) == now
    assert parse_start(None, None, now_ms=now) == now
    assert parse_start(None, "-2h", now_ms=now) == now - 7_200_000
    assert parse_start(None, "+30s", now_ms=now) == now + 30_000
    assert parse_start(None, "90", now_ms=now) == now + 90_000
    with pytest.raises(typer.BadParameter, match="ISO"):
        parse_start("yesterday", None)
    with pytest.raises(typer.BadParameter, match="offset"):
        parse_start(None, "-2 fortnights", now_ms=now)
