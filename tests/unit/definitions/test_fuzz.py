"""Malformed registries never crash the loader or the CLI: only located errors come out.

Hypothesis mutates the text of a valid registry (deleted, duplicated and re-indented lines,
random YAML tokens, values of the wrong type, broken Avro JSON) and checks that
``load_registry`` either succeeds or raises ``RegistryInvalid`` whose errors all point at a
real line of a real file, and that ``validate`` exits 0 or 1 without a traceback.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from feature_store.cli import registry_cmds
from feature_store.definitions.compiler import load_registry
from feature_store.definitions.errors import RegistryInvalid
from tests.unit.definitions.helpers import CLICKS_AVSC, DEFS_YAML, PROJECT_YAML, write_registry

YAML_TOKENS = [
    ":",
    ": ",
    "- ",
    "-",
    "[",
    "]",
    "{",
    "}",
    ",",
    "&a ",
    "*a",
    "*b",
    "!!binary ",
    "!foo ",
    "!!python/object ",
    "? ",
    "'",
    '"',
    "\t",
    "null",
    "~",
    "123",
    "-1",
    "1.5",
    "1e400",
    "true",
    "0x1F",
    "0o17",
    "2024-13-45",
    "2024-01-01",
    "|",
    ">",
    "#",
    "%YAML 1.2\n",
    "---\n",
    "...\n",
    "<<: *a",
    "<<: {x: 1}",
    "\\",
    "é",
    "\u2028",
    "\x00",
    "\x07",
    "\ufeff",
    "lifetime",
    "1h",
    "0s",
    "-5m",
    "{length: 1x}",
    "{length: 1h, granularity: 7m}",
    "[]",
    "{}",
    "*",
    "view:*",
    "user_clicks:",
    "name:",
    "features:",
    "entities:",
    "  ",
    "\n",
    "    - ",
    "@",
    "`",
    "%",
    "a: b: c",
    "[[[[",
    "]]]]",
    "key: &x [*x]",
    'where: "x ==',
    "where: page == 1",
]
WRONG_VALUES = [
    "",
    "null",
    "[]",
    "{}",
    "[1, 2]",
    "{a: 1}",
    "3",
    "-3",
    "true",
    "1.5",
    "'x'",
    "UPPER",
    "9" * 40,
    "a" * 60,
    "lifetime",
    "[lifetime]",
    "[{length: 30s}]",
    "count",
    "last_n",
    "page",
    "user_id:*",
]
JSON_TOKENS = ['"', "{", "}", "[", "]", ",", ":", "null", "1", '"type"', '"record"', '"long"', "\\", "\x00"]

settings.register_profile("fuzz", deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutate(draw: st.DrawFn, text: str, tokens: list[str], values: list[str]) -> str:
    lines = text.splitlines(keepends=True) or ["\n"]
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "indent", "dedent", "insert", "value", "swap"]))
        line = lines[i]
        if op == "delete" and len(lines) > 1:
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, line)
        elif op == "indent":
            lines[i] = " " * draw(st.sampled_from([1, 2, 4])) + line
        elif op == "dedent":
            lines[i] = line[draw(st.sampled_from([1, 2, 4])) :] if line.startswith(" ") else line
        elif op == "insert":
            at = draw(st.integers(0, len(line)))
            lines[i] = line[:at] + draw(st.sampled_from(tokens)) + line[at:]
        elif op == "value" and ":" in line:
            key = line.split(":", 1)[0]
            lines[i] = f"{key}: {draw(st.sampled_from(values))}\n"
        elif op == "swap" and len(lines) > 1:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
    return "".join(lines)


registries = st.fixed_dictionaries(
    {
        "defs.yaml": st.one_of(st.just(DEFS_YAML), mutate(DEFS_YAML, YAML_TOKENS, WRONG_VALUES)),
        "clicks.avsc": st.one_of(
            st.just(CLICKS_AVSC), mutate(CLICKS_AVSC, JSON_TOKENS, ['"x"', "1", "[]", "{}"])
        ),
        "feature_store.yaml": st.one_of(
            st.just(PROJECT_YAML), mutate(PROJECT_YAML, YAML_TOKENS, WRONG_VALUES)
        ),
    }
)


def check_loads_or_locates(root: Path) -> None:
    try:
        load_registry(root)
    except RegistryInvalid as exc:
        errors = exc.errors
    else:
        return
    assert errors
    for error in errors:
        path = Path(error.file)
        assert path.is_file(), error
        line_count = len(path.read_bytes().splitlines()) + 1
        assert 1 <= error.line <= line_count, error
        assert error.column >= 1, error
        assert error.message.strip(), error
        assert "\n" not in error.message, error


@settings(parent=settings.get_profile("fuzz"), max_examples=100)
@given(files=registries)
def test_malformed_yaml_gives_located_errors(files: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        check_loads_or_locates(write_registry(Path(tmp), files))


def _app() -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False)
    registry_cmds.register(app)
    return app


APP = _app()


@settings(parent=settings.get_profile("fuzz"), max_examples=25)
@given(files=registries)
def test_validate_cli_never_shows_a_traceback(files: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = write_registry(Path(tmp), files)
        result = CliRunner().invoke(APP, ["validate", "--registry", str(root)])
    assert result.exit_code in (0, 1), result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    if result.exit_code == 1:
        assert result.stderr.strip().splitlines()[-1].startswith("registry is invalid")
