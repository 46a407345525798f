from __future__ import annotations

import pickle
from collections.abc import Mapping

import pytest

from feature_store.core.model import ValueType
from feature_store.core.predicates import (
    PredicateError,
    canonical_predicate,
    compile_predicate,
    predicate_fields,
)

FIELDS: Mapping[str, ValueType] = {
    "accepted": ValueType.BOOL,
    "is_bot": ValueType.BOOL,
    "duration_s": ValueType.INT64,
    "score": ValueType.FLOAT64,
    "kind": ValueType.STRING,
    "reason": ValueType.STRING,
    "payload": ValueType.BYTES,
    "tags": ValueType.STRING_LIST,
}

MATCH = {"accepted": True, "is_bot": False, "duration_s": 45, "score": 0.5, "kind": "like", "tags": ["vip"]}


@pytest.mark.parametrize(
    ("text", "event", "expected"),
    [
        ("accepted == true and duration_s >= 30", MATCH, True),
        ("accepted == true and duration_s >= 30", {**MATCH, "duration_s": 29}, False),
        ("accepted == True and duration_s >= 30", MATCH, True),
        ('kind in ["like", "superlike"]', MATCH, True),
        ('kind in ("like", "superlike")', {"kind": "pass"}, False),
        ('kind not in ["like"]', {"kind": "pass"}, True),
        ("not is_bot", MATCH, True),
        ("not is_bot", {"is_bot": True}, False),
        ("is_bot", {"is_bot": True}, True),
        ("accepted or is_bot", {"accepted": False, "is_bot": False}, False),
        ("reason != null", {"reason": "spam"}, True),
        ("reason != null", {"reason": None}, False),
        ("reason == null", {}, True),
        ("reason is null", {}, True),
        ("reason is not None", {"reason": "x"}, True),
        ("0 < score <= 1.5", MATCH, True),
        ("0 < score <= 1.5", {"score": 1.6}, False),
        ("score > -1", {"score": -0.5}, True),
        ("duration_s == 45.0", MATCH, True),  # int64 and float64 compare as numbers
        ('"vip" in tags', MATCH, True),
        ('"vip" not in tags', MATCH, False),
        ("kind in []", MATCH, False),
        ("payload == b'\\x00'", {"payload": b"\x00"}, True),
        ("kind == reason", {"kind": "a", "reason": "a"}, True),
        ("true", {}, True),
        ("false or not false", {}, True),
        ("  duration_s\n  >= 30", MATCH, True),  # multi-line YAML scalars and leading blanks
        ("(accepted and not is_bot) or kind == 'superlike'", {"kind": "superlike"}, True),
    ],
)
def test_valid_predicates(text: str, event: Mapping[str, object], expected: bool) -> None:
    predicate = compile_predicate(text, FIELDS)
    result = predicate(event)
    assert result is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # any comparison with a missing/None field is false, except == null / != null
        ("duration_s >= 30", False),
        ("duration_s < 30", False),
        ("duration_s != 30", False),
        ("kind in ['like']", False),
        ("kind not in ['like']", False),
        ("'vip' in tags", False),
        ("kind == reason", False),
        ("kind != reason", False),
        ("reason == null", True),
        ("reason != null", False),
        # `not` negates (two-valued logic, not SQL's UNKNOWN)
        ("not (duration_s >= 30)", True),
        ("not is_bot", True),
        ("is_bot", False),
    ],
)
def test_null_semantics(text: str, expected: bool) -> None:
    assert compile_predicate(text, FIELDS)({"reason": None}) is expected


@pytest.mark.parametrize(
    ("text", "column", "fragment"),
    [
        ("", 1, "empty"),
        ("accepted = true", 10, "use '=='"),
        ("accepted && is_bot", 10, "use 'and' / 'or'"),
        ("accepted || is_bot", 10, "use 'and' / 'or'"),
        ("duration_s >= ", 15, "unexpected end"),
        ("kind == 'a' or", 15, "unexpected end"),
        ("len(kind) > 3", 1, "function calls"),
        ("__import__('os').system('x') == 0", 1, "function calls"),
        ("kind.upper == 'A'", 1, "attribute access"),
        ("duration_s + 1 > 3", 1, "arithmetic"),
        ("tags[0] == 'a'", 1, "indexing"),
        ("kind if accepted else reason", 1, "conditional"),
        ("{1: 2}", 1, "dict literals"),
        ("accepted & is_bot", 1, "use 'and'"),
        ("~is_bot", 1, "use 'not'"),
        ("-kind == 1", 1, "number literal"),
        ("kind in [reason]", 10, "only contain literals"),
        ("duraton_s > 3", 1, "did you mean 'duration_s'"),
        ("not is_boot", 5, "unknown field 'is_boot'"),
        ("kind == 'é' and nope > 3", 17, "known fields: accepted"),  # columns count characters
        ("kind > 3", 8, "type mismatch: field 'kind' (string) cannot be compared with 3 (number)"),
        ("3 < kind", 1, "type mismatch"),
        ("duration_s == 'x'", 15, "type mismatch"),
        ("accepted == 1", 13, "type mismatch"),
        ("score == b'x'", 10, "type mismatch"),
        ("kind == payload", 9, "type mismatch"),
        ("accepted < true", 1, "'<' is not defined on boolean"),
        ("reason < null", 10, "null can only be compared with == or !="),
        ("kind in [1, 'a']", 9, "list mixes number and string"),
        ("kind in [null]", 10, "null in a list never matches"),
        ("kind in 'abc'", 9, "right side of 'in' must be a list"),
        ("tags in ['a']", 1, "left side of 'in' must be a single value"),
        ("tags == 'a'", 1, "lists can only be used with 'in'"),
        ("1 == 1", 1, "one side must be a field"),
        ("kind is 'a'", 9, "'is' only works with null"),
        ("duration_s", 1, "is int64, not bool"),
        ("accepted and 3", 14, "not a condition"),
        ("   kind > 3", 11, "type mismatch"),  # leading blanks keep columns exact
    ],
)
def test_errors_have_a_column_and_a_helpful_message(text: str, column: int, fragment: str) -> None:
    with pytest.raises(PredicateError) as info:
        compile_predicate(text, FIELDS)
    assert fragment in info.value.message
    assert info.value.column == column
    assert isinstance(info.value, ValueError)
    assert f"column {column}" in str(info.value)


def test_unknown_field_lists_close_matches() -> None:
    with pytest.raises(PredicateError) as info:
        compile_predicate("durations > 3", {"duration": ValueType.INT64, "durations_s": ValueType.INT64})
    assert "'durations_s'" in info.value.message
    assert "'duration'" in info.value.message


def test_predicate_fields() -> None:
    assert predicate_fields("accepted == true and duration_s >= 30 or reason != null") == {
        "accepted",
        "duration_s",
        "reason",
    }
    assert predicate_fields("not is_bot and 'x' in tags") == {"is_bot", "tags"}
    assert predicate_fields("true") == frozenset()
    with pytest.raises(PredicateError):
        predicate_fields("f(x)")


def test_canonical_form_ignores_spelling_and_spacing() -> None:
    assert canonical_predicate("accepted==true  and\nduration_s>=30") == canonical_predicate(
        "accepted == True and duration_s >= 30"
    )
    assert canonical_predicate("a == 1") != canonical_predicate("a == 2")


def test_compiled_predicate_has_no_builtins() -> None:
    predicate = compile_predicate("kind == 'len'", FIELDS)
    assert predicate.__globals__["__builtins__"] == {}
    assert predicate({"kind": "len"}) is True


def test_literals_are_bound_not_spliced() -> None:
    # a string literal that looks like code stays a string
    predicate = compile_predicate("kind == \"') or True or ('\"", FIELDS)
    assert predicate({"kind": "like"}) is False
    assert predicate({"kind": "') or True or ('"}) is True


def test_errors_pickle() -> None:
    error = pickle.loads(pickle.dumps(PredicateError("bad", 7)))
    assert (error.message, error.column, str(error)) == ("bad", 7, "bad (column 7)")
