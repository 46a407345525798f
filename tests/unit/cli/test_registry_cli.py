"""The registry commands end to end, with a file store in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from feature_store.cli import main, registry_cmds
from feature_store.definitions import stores
from tests.unit.definitions.helpers import defs, write_registry

COMMANDS = ["init", "validate", "plan", "apply", "history", "rollback", "list", "describe"]


def make_app() -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False)
    registry_cmds.register(app)
    return app


APP = make_app()


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch) -> None:
    """No default store (importing the main app registers the local cql:// one) and no env."""
    monkeypatch.setattr(stores, "DEFAULT_STORE_URL", None)
    for name in (stores.STORE_ENV, registry_cmds.REGISTRY_ENV):
        monkeypatch.delenv(name, raising=False)


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    result = CliRunner().invoke(
        APP, list(args), env={"COLUMNS": "200", "FSTORE_USER": "tester", **(env or {})}
    )
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


@pytest.fixture
def reg(tmp_path: Path) -> Path:
    return write_registry(tmp_path / "registry")


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"file:{tmp_path / 'store'}"


def test_main_app_has_the_commands() -> None:
    names = {c.name for c in main.app.registered_commands}
    assert set(COMMANDS) <= names


@pytest.mark.parametrize("command", COMMANDS)
def test_help(command: str) -> None:
    result = run(command, "--help")
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_init_scaffolds_a_valid_registry_and_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "new_registry"
    result = run("init", str(target))
    assert result.exit_code == 0, result.output
    assert (target / "feature_store.yaml").is_file()
    assert (target / "page_view.avsc").is_file()
    assert run("validate", "-r", str(target)).exit_code == 0
    before = (target / "example.yaml").read_text()
    again = run("init", str(target))
    assert again.exit_code == 1
    assert "already exists" in again.stderr
    assert (target / "example.yaml").read_text() == before


def test_validate_ok(reg: Path) -> None:
    result = run("validate", "-r", str(reg))
    assert result.exit_code == 0
    assert (
        "Registry 'demo' is valid: 1 entities, 1 sources, 1 views, 3 features, 1 services." in result.stdout
    )
    data = json.loads(run("validate", "-r", str(reg), "--json").stdout)
    assert data["valid"] is True
    assert data["counts"]["features"] == 3


def test_validate_example_registry(example_registry_dir: Path) -> None:
    assert run("validate", "-r", str(example_registry_dir)).exit_code == 0


def test_validate_reports_all_errors_located(tmp_path: Path) -> None:
    text = defs(("field: amount", "field: page"), ("    entity: user\n", "    entity: usr\n"))
    root = write_registry(tmp_path / "r", {"defs.yaml": text})
    result = run("validate", "-r", str(root))
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert f"{root / 'defs.yaml'}:12:13: unknown entity 'usr'; did you mean 'user'?" in lines
    assert any(line.startswith(f"{root / 'defs.yaml'}:20:16: sum over field 'page'") for line in lines)
    assert lines[-1] == "registry is invalid: 2 errors"
    data = json.loads(run("validate", "-r", str(root), "--json").stdout)
    assert data["valid"] is False
    assert [(e["line"], e["column"]) for e in data["errors"]] == [(12, 13), (20, 16)]


def test_validate_missing_folder_and_env_var(tmp_path: Path, reg: Path) -> None:
    result = run("validate", "-r", str(tmp_path / "nope"))
    assert result.exit_code == 1
    assert "registry folder does not exist" in result.stderr
    assert run("validate", env={"FSTORE_REGISTRY": str(reg)}).exit_code == 0


def test_unexpected_errors_are_one_line(reg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(_root: Path) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(registry_cmds, "load_registry", boom)
    result = run("validate", "-r", str(reg))
    assert result.exit_code == 1
    assert result.stderr == "error: unexpected RuntimeError: boom\n"


def test_plan_needs_a_store(reg: Path) -> None:
    result = run("plan", "-r", str(reg))
    assert result.exit_code == 1
    assert "no registry store" in result.stderr
    result = run("plan", "-r", str(reg), "--store", "nosuch://localhost:9042/ks")
    assert result.exit_code == 1
    assert "unsupported registry store URL" in result.stderr


def test_plan_apply_history_rollback(reg: Path, store: str, tmp_path: Path) -> None:
    first = run("plan", "-r", str(reg), "--store", store)
    assert first.exit_code == 0
    assert "applied: nothing applied yet" in first.stdout
    assert "+ feature view user_clicks" in first.stdout

    applied = run("apply", "-r", str(reg), "--store", store, "-m", "first")
    assert applied.exit_code == 0, applied.output
    assert "Applied: version 1" in applied.stdout
    assert run("plan", "-r", str(reg), "--store", store).stdout.endswith("No changes.\n")
    again = run("apply", "-r", str(reg), "--store", store)
    assert again.exit_code == 0
    assert "Nothing to apply: version 1 already has this content." in again.stdout

    # a safe change: plan exits 0, apply goes through
    safe = write_registry(
        tmp_path / "safe", {"defs.yaml": defs(("    source: clicks\n", "    source: clicks\n    ttl: 7d\n"))}
    )
    plan = run("plan", "-r", str(safe), "--store", store, "--json")
    assert plan.exit_code == 0
    assert json.loads(plan.stdout)["summary"]["change"] == 1
    assert run("apply", "-r", str(safe), "--store", store).exit_code == 0

    # a breaking change: plan exits 2, apply refuses and says what to do instead
    breaking = write_registry(
        tmp_path / "breaking", {"defs.yaml": defs(("granularity: 1d", "granularity: 1h"))}
    )
    plan = run("plan", "-r", str(breaking), "--store", store)
    assert plan.exit_code == 2
    assert "[BREAKING]" in plan.stdout
    refused = run("apply", "-r", str(breaking), "--store", store)
    assert refused.exit_code == 2
    assert "refused: the plan has 1 breaking change" in refused.stderr
    assert "add a new feature name, e.g. spend_v2, and move services to it" in refused.stderr
    forced = run("apply", "-r", str(breaking), "--store", store, "--allow-breaking", "--json")
    assert forced.exit_code == 0
    assert json.loads(forced.stdout)["version"] == 3

    history = json.loads(run("history", "--store", store, "--json").stdout)
    assert [(h["version"], h["message"], h["applied_by"]) for h in history] == [
        (1, "first", "tester"),
        (2, "", "tester"),
        (3, "", "tester"),
    ]
    table = run("history", "--store", store)
    assert "Applied registry versions" in table.stdout
    assert "3*" in table.stdout

    dry = run("rollback", "1", "--store", store, "--dry-run")
    assert dry.exit_code == 2
    assert "granularity: 1h -> 1d" in dry.stdout
    assert run("rollback", "1", "--store", store).exit_code == 2
    back = run("rollback", "1", "--store", store, "--allow-breaking", "-m", "bad tiles")
    assert back.exit_code == 0, back.output
    assert "Rolled back: version 4" in back.stdout
    history = json.loads(run("history", "--store", store, "--json").stdout)
    assert history[-1]["fingerprint"] == history[0]["fingerprint"]
    assert history[-1]["message"] == "rollback to v1: bad tiles"
    missing = run("rollback", "9", "--store", store)
    assert missing.exit_code == 1
    assert "registry version 9 does not exist" in missing.stderr


def test_history_of_an_empty_store(store: str) -> None:
    result = run("history", env={"FSTORE_REGISTRY_STORE": store})
    assert result.exit_code == 0
    assert "Nothing applied yet." in result.stdout


def test_list_and_describe_local(reg: Path) -> None:
    features = json.loads(run("list", "features", "-r", str(reg), "--json").stdout)
    assert [f["ref"] for f in features] == [
        "user_clicks:clicks_1h",
        "user_clicks:clicks_24h",
        "user_clicks:spend_7d",
    ]
    assert features[2]["granularity_ms"] == 86_400_000
    for kind in ("entities", "sources", "views", "features", "services"):
        result = run("list", kind, "-r", str(reg))
        assert result.exit_code == 0, result.output
    assert "user_clicks:spend_7d" in run("list", "features", "-r", str(reg)).stdout
    view = run("describe", "view", "user_clicks", "-r", str(reg))
    assert view.exit_code == 0
    assert "fe_user" in view.stdout
    feature = json.loads(run("describe", "feature", "user_clicks:spend_7d", "-r", str(reg), "--json").stdout)
    assert feature["aggregation"] == "sum"
    assert feature["used_by"] == ["svc"]
    source = json.loads(run("describe", "source", "clicks", "-r", str(reg), "--json").stdout)
    assert source["views"] == ["user_clicks"]
    unknown = run("describe", "view", "nope", "-r", str(reg))
    assert unknown.exit_code == 1
    assert unknown.stderr == "error: unknown feature view 'nope'\n"


def test_list_and_describe_applied_versions(reg: Path, store: str, tmp_path: Path) -> None:
    assert run("list", "views", "--store", store).exit_code == 1  # nothing applied yet
    run("apply", "-r", str(reg), "--store", store)
    renamed = write_registry(tmp_path / "more", {"defs.yaml": defs(("  - name: svc\n", "  - name: svc2\n"))})
    run("apply", "-r", str(renamed), "--store", store, "--allow-breaking")
    v1 = json.loads(run("list", "services", "--store", store, "--version", "1", "--json").stdout)
    latest = json.loads(run("list", "services", "--store", store, "--json").stdout)
    assert [s["name"] for s in v1] == ["svc"]
    assert [s["name"] for s in latest] == ["svc2"]
    entity = json.loads(
        run("describe", "entity", "user", "--store", store, "--version", "1", "--json").stdout
    )
    assert entity["join_keys"] == [["user_id", "string"]]
