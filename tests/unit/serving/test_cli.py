"""`fstore get` against an in-process server, `fstore serve` settings errors, settings precedence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from feature_store.cli import serve_cmds
from feature_store.serving.settings import load_settings
from feature_store.serving.testing import ServerThread


def make_app() -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False)
    serve_cmds.register(app)
    return app


APP = make_app()


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(APP, list(args), env={"COLUMNS": "220"})
    return result.exit_code, result.output


def test_get_prints_json(served: ServerThread) -> None:
    code, output = run(
        "get", "--target", served.target, "-s", "pair_v1", "-k", "user_id=u1", "-k", "peer_id=u2", "--json"
    )
    assert code == 0, output
    doc = json.loads(output)
    assert doc["registry_version"] == 1
    assert doc["features"][0] == "pair_calls:pair_calls_lifetime"
    assert doc["rows"][0]["entity"] == {"user_id": "u1", "peer_id": "u2"}
    assert set(doc["rows"][0]["statuses"].values()) <= {"PRESENT", "NOT_FOUND"}


def test_get_prints_a_table(served: ServerThread) -> None:
    code, output = run(
        "get", "--target", served.target, "-f", "user_calls:calls_lifetime", "-f", "user_chat:*",
        "-k", "user_id=u1", "-k", "user_id=u7",
    )  # fmt: skip
    assert code == 0, output
    assert "user_calls:calls_lifetime" in output
    assert "user_id=u1" in output
    assert "user_id=u7" in output
    assert "NOT_FOUND" in output


def test_get_errors(served: ServerThread) -> None:
    code, output = run("get", "--target", served.target, "-s", "nope", "-k", "user_id=u1")
    assert code == 1
    assert "NOT_FOUND" in output
    code, output = run("get", "--target", served.target, "-s", "ranking_v1", "-k", "user_id")
    assert code == 2
    code, output = run("get", "--target", served.target, "-k", "user_id=u1")
    assert code == 2
    assert "exactly one of --service or --feature" in output


def test_serve_refuses_bad_settings(tmp_path: Path) -> None:
    code, output = run("serve", "--listen", "nohostport")
    assert code == 2
    assert "invalid settings" in output


def test_settings_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("max_batch_size: 10\ndeadline_ms: 50\nlisten: 0.0.0.0:6000\n")
    monkeypatch.setenv("FSTORE_SERVE_DEADLINE_MS", "70")
    monkeypatch.setenv("FSTORE_SERVE_TOKENS", '{"t1": ["ranking_v1"]}')
    settings = load_settings(config, listen="127.0.0.1:7000")
    assert settings.max_batch_size == 10  # file
    assert settings.deadline_ms == 70  # env beats file
    assert settings.listen == "127.0.0.1:7000"  # flags beat env
    assert settings.tokens == {"t1": ["ranking_v1"]}
    monkeypatch.setenv("FSTORE_SERVE_CONFIG", str(config))
    assert load_settings().max_batch_size == 10
    assert load_settings(max_batch_size=None).max_batch_size == 10
    config.write_text("nope: 1\n")
    with pytest.raises(ValueError, match="nope"):
        load_settings(config)
