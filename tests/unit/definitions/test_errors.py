"""Every kind of registry error is reported at the right file:line:column, all at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from feature_store.definitions.compiler import check_registry, load_registry
from feature_store.definitions.errors import RegistryError, RegistryInvalid
from tests.unit.definitions.helpers import DEFS_YAML, defs, write_registry

Found = tuple[str, int, int, str]


def located(root: Path) -> list[Found]:
    """(file relative to root, line, column, message) of every error."""
    registry, errors = check_registry(root)
    assert registry is None or not errors
    return [(Path(e.file).relative_to(root).as_posix(), e.line, e.column, e.message) for e in errors]


def assert_error(root: Path, file: str, line: int, column: int, fragment: str) -> None:
    errors = located(root)
    matches = [e for e in errors if e[:3] == (file, line, column) and fragment in e[3]]
    assert matches, f"no {file}:{line}:{column} error containing {fragment!r} in {errors}"


@pytest.mark.parametrize(
    ("replacements", "line", "column", "fragment"),
    [
        pytest.param(
            [("field: amount", "field: page")],
            20,
            16,
            "sum over field 'page' of type string is not possible: sum needs one of float64, int64",
            id="sum-over-string",
        ),
        pytest.param(
            [("field: amount", "field: amout")],
            20,
            16,
            "field 'amout' is not in source 'clicks'; did you mean 'amount'?",
            id="unknown-field-suggestion",
        ),
        pytest.param(
            [("    entity: user\n", "    entity: usr\n")],
            12,
            13,
            "unknown entity 'usr'; did you mean 'user'?",
            id="unknown-entity",
        ),
        pytest.param(
            [("    source: clicks\n", "    source: click\n")],
            13,
            13,
            "unknown source 'click'; did you mean 'clicks'?",
            id="unknown-source",
        ),
        pytest.param(
            [("        aggregation: count", "        agregation: count")],
            16,
            9,
            "unknown field 'agregation'; did you mean 'aggregation'?",
            id="extra-field",
        ),
        pytest.param(
            [("        aggregation: count", "        agregation: count")],
            15,
            9,
            "missing required field 'aggregation'",
            id="missing-field-at-its-mapping",
        ),
        pytest.param(
            [("    topic: events.clicks\n", "")], 6, 5, "missing required field 'topic'", id="missing-topic"
        ),
        pytest.param(
            [("windows: [1h, 24h]", "windows: 1h")],
            17,
            18,
            "windows: expected a list, got the text '1h'",
            id="wrong-type",
        ),
        pytest.param(
            [("windows: [1h, 24h]", "windows: [1h, 24x]")],
            17,
            23,
            "invalid duration '24x'",
            id="bad-duration-in-flow-list",
        ),
        pytest.param(
            [("    topic: events.clicks", "    topic: 12")],
            7,
            12,
            "topic: expected text, got the number 12",
            id="number-for-text",
        ),
        pytest.param(
            [('where: page == "checkout"', 'where: pag == "checkout"')],
            21,
            16,
            "invalid predicate: unknown field 'pag'; did you mean 'page'",
            id="predicate-unknown-field",
        ),
        pytest.param(
            [('where: page == "checkout"', "where: 'page == 3'")],
            21,
            25,
            "invalid predicate: type mismatch",
            id="predicate-column-inside-quotes",
        ),
        pytest.param(
            [("schema: clicks.avsc", "schema: nope.avsc")],
            8,
            13,
            "Avro schema file not found: 'nope.avsc'",
            id="missing-avsc",
        ),
        pytest.param(
            [("schema: clicks.avsc", "schema: ../outside.avsc")],
            8,
            13,
            "points outside the registry folder",
            id="avsc-outside",
        ),
        pytest.param(
            [("      - user_clicks:clicks_1h", "      - user_clicks:clicks_2h")],
            26,
            9,
            "feature view 'user_clicks' serves no feature 'clicks_2h'; "
            "did you mean 'clicks_24h' or 'clicks_1h'?",
            id="service-unknown-feature",
        ),
        pytest.param(
            [("      - user_clicks:spend_7d", "      - user_clicks:spend")],
            27,
            9,
            "serves no feature 'spend'; it is served per window as spend_7d",
            id="service-declared-name",
        ),
        pytest.param(
            [("      - user_clicks:clicks_1h", "      - user_click:*")],
            26,
            9,
            "unknown feature view 'user_click'; did you mean 'user_clicks'?",
            id="service-unknown-view",
        ),
        pytest.param(
            [("      - name: clicks\n", "      - name: Clicks\n")],
            15,
            15,
            "'Clicks' is not a valid name: use lowercase snake_case",
            id="bad-identifier",
        ),
        pytest.param(
            [("entities:\n  - name: user\n", "entities:\n  - name: " + "u" * 46 + "\n")],
            2,
            11,
            "is 46 characters long, the maximum is 45",
            id="entity-name-too-long-for-cql-table",
        ),
        pytest.param([("  - name: svc", "  - name: table")], 24, 11, "reserved word", id="reserved-word"),
        pytest.param(
            [("{name: user_id, type: string}", "{name: user_id, type: int64}")],
            12,
            13,
            "entity key field 'user_id' is string but join key 'user_id' of entity 'user' is int64",
            id="entity-key-type",
        ),
        pytest.param(
            [("    source: clicks\n", "    source: clicks\n    entity_keys: {user_id: usr_id}\n")],
            14,
            28,
            "entity key field 'usr_id' is not in source 'clicks'; did you mean 'user_id'?",
            id="entity-key-field-unknown",
        ),
        pytest.param(
            [
                (
                    "    source: clicks\n",
                    "    source: clicks\n    entity_keys: {uid: user_id, user_id: user_id}\n",
                )
            ],
            14,
            19,
            "'uid' is not a join key of entity 'user'",
            id="entity-key-unknown-join-key",
        ),
        pytest.param(
            [("event_time: ts", "event_time: page")],
            9,
            17,
            "event-time field 'page' is string; it must be a non-null long of epoch milliseconds",
            id="event-time-not-long",
        ),
        pytest.param(
            [("event_time: ts", "event_time: tss")],
            9,
            17,
            "event-time field 'tss' is not in the schema; did you mean 'ts'?",
            id="event-time-missing",
        ),
        pytest.param(
            [("granularity: 1d", "granularity: 5d")],
            22,
            19,
            "granularity 5d does not divide window 7d evenly",
            id="granularity-divides",
        ),
        pytest.param(
            [("windows: [1h, 24h]", "windows: [30s]")],
            17,
            19,
            "default granularity 1m does not divide window 30s evenly; set `granularity:` explicitly",
            id="default-granularity",
        ),
        pytest.param(
            [("windows: [1h, 24h]", "windows: [1h, 60m]")],
            17,
            23,
            "window 60m has the same length as window 1h",
            id="same-window-twice",
        ),
        pytest.param(
            [("        aggregation: count\n", "        aggregation: last_n\n        field: page\n")],
            15,
            9,
            "feature 'clicks': last_n needs `n`",
            id="last-n-needs-n",
        ),
        pytest.param(
            [("        aggregation: count\n", "        aggregation: count\n        n: 3\n")],
            17,
            9,
            "`n` only applies to last_n, not to count",
            id="n-only-for-last-n",
        ),
        pytest.param(
            [("        aggregation: sum\n", "        aggregation: summ\n")],
            19,
            22,
            "'summ' is not one of count, sum, avg, min, max, last, last_n, count_distinct; "
            "did you mean 'sum'",
            id="unknown-aggregation",
        ),
        pytest.param(
            [("        aggregation: sum\n        field: amount\n", "        aggregation: sum\n")],
            18,
            9,
            "feature 'spend': sum needs a `field`",
            id="field-required",
        ),
        pytest.param(
            [("entities:\n", "feature_view: []\nentities:\n")],
            1,
            1,
            "unknown section 'feature_view'; did you mean 'feature_views' or 'feature_services'?",
            id="unknown-section",
        ),
        pytest.param(
            [("  - name: user\n    join_keys:", "  - name: user\n    name: again\n    join_keys:")],
            3,
            5,
            "YAML syntax error: duplicate key 'name' (the mapping starts at line 2)",
            id="duplicate-yaml-key",
        ),
        pytest.param(
            [("    topic: events.clicks", "    topic: [events.clicks")],
            8,
            11,
            "YAML syntax error",
            id="yaml-syntax",
        ),
        pytest.param(
            [("        aggregation: count", "        aggregation: !!python/name:os.system count")],
            16,
            22,
            "unsupported value: the YAML tag",
            id="yaml-tag",
        ),
    ],
)
def test_located_errors(
    tmp_path: Path, replacements: list[tuple[str, str]], line: int, column: int, fragment: str
) -> None:
    root = write_registry(tmp_path / "reg", {"defs.yaml": defs(*replacements)})
    assert_error(root, "defs.yaml", line, column, fragment)


def test_duplicate_names_point_at_the_first_definition(tmp_path: Path) -> None:
    text = defs(("sources:\n", "  - name: user\n    join_keys: [{name: user_id}]\nsources:\n"))
    root = write_registry(tmp_path, {"defs.yaml": text})
    first = f"{root / 'defs.yaml'}:2:11"
    assert_error(root, "defs.yaml", 5, 11, f"duplicate entity 'user', first defined at {first}")


def test_avro_json_error_points_into_the_avsc(tmp_path: Path) -> None:
    root = write_registry(tmp_path, {"clicks.avsc": '{"type": "record",\n "name": "Click",\n "fields": [}\n'})
    assert_error(root, "clicks.avsc", 3, 13, "invalid JSON in Avro schema")


def test_avro_schema_error(tmp_path: Path) -> None:
    bad = '{"type": "record", "name": "Click", "fields": [{"name": "ts", "type": "lnog"}]}'
    root = write_registry(tmp_path, {"clicks.avsc": bad})
    assert_error(root, "clicks.avsc", 1, 1, "invalid Avro schema")
    root2 = write_registry(tmp_path / "two", {"clicks.avsc": '["string"]'})
    assert_error(root2, "clicks.avsc", 1, 1, "must be a record")


def test_avro_schema_error_stays_on_one_line(tmp_path: Path) -> None:
    # the parser quotes the unknown type as written; a newline in it must not break the line
    bad = '{"type": "record", "name": "Click", "fields": [{"name": "r", "type": "stri\\ng"}]}'
    root = write_registry(tmp_path, {"clicks.avsc": bad})
    [error] = [e for e in located(root) if e[0] == "clicks.avsc"]
    assert "invalid Avro schema" in error[3]
    assert "\n" not in error[3]
    assert "stri\\ng" in error[3]


def test_missing_project_file(tmp_path: Path) -> None:
    root = write_registry(tmp_path, {"feature_store.yaml": None})
    assert_error(root, "feature_store.yaml", 1, 1, "missing project file feature_store.yaml")


def test_project_file_errors(tmp_path: Path) -> None:
    root = write_registry(tmp_path, {"feature_store.yaml": "project: Demo\ndefaults:\n  watermark: 5s\n"})
    assert_error(root, "feature_store.yaml", 1, 10, "'Demo' is not a valid name")
    assert_error(
        root, "feature_store.yaml", 3, 3, "unknown field 'watermark'; did you mean 'watermark_delay'?"
    )


def test_document_must_be_a_mapping(tmp_path: Path) -> None:
    root = write_registry(tmp_path, {"defs.yaml": DEFS_YAML, "other.yaml": "# a comment\n- just\n- a list\n"})
    assert_error(root, "other.yaml", 2, 1, "a registry document must be a mapping")
    root2 = write_registry(tmp_path / "two", {"other.yaml": "---\nentities: []\n---\njust text\n"})
    assert_error(root2, "other.yaml", 4, 1, "a registry document must be a mapping")


def test_errors_in_later_documents_are_located(tmp_path: Path) -> None:
    extra = "entities:\n  - name: account\n    join_keys: [{name: account_id}]\n---\nentities:\n  - name: 7\n"
    root = write_registry(tmp_path, {"extra.yaml": extra})
    assert_error(root, "extra.yaml", 6, 11, "name: expected text, got the number 7")


def test_all_errors_are_reported_at_once(tmp_path: Path) -> None:
    root = write_registry(
        tmp_path,
        {
            "defs.yaml": defs(("field: amount", "field: page"), ("    entity: user\n", "    entity: usr\n")),
            "broken.yaml": "entities: [\n",
            "feature_store.yaml": "project: demo\nowner: 3\n",
        },
    )
    with pytest.raises(RegistryInvalid) as info:
        load_registry(root)
    errors = info.value.errors
    assert {Path(e.file).name for e in errors} == {"defs.yaml", "broken.yaml", "feature_store.yaml"}
    # broken.yaml may define 'usr': unknown names are not reported while a file does not parse
    assert not any("unknown entity" in e.message for e in errors)
    assert any("sum over field 'page'" in e.message for e in errors)
    assert errors == sorted(errors)
    text = str(info.value)
    assert text.splitlines()[0] == f"registry has {len(errors)} errors"


def test_invalid_feature_does_not_hide_the_others(tmp_path: Path) -> None:
    text = defs(("        aggregation: count", "        aggregation: 5"), ("field: amount", "field: page"))
    root = write_registry(tmp_path, {"defs.yaml": text})
    messages = [e[3] for e in located(root)]
    assert any("aggregation: 5 is not one of" in m for m in messages)
    assert any("sum over field 'page'" in m for m in messages)
    # the service refers to clicks_1h, declared by the invalid feature: not reported again
    assert not any("serves no feature" in m for m in messages)


def test_registry_error_format() -> None:
    error = RegistryError("registry/a.yaml", 3, 7, "something is wrong")
    assert str(error) == "registry/a.yaml:3:7: something is wrong"


def test_missing_root(tmp_path: Path) -> None:
    registry, errors = check_registry(tmp_path / "nope")
    assert registry is None
    assert [str(e) for e in errors] == [f"{tmp_path / 'nope'}:1:1: registry folder does not exist"]
