"""Predicates in SQL agree with the core's Python predicates on every event, nulls included."""

from __future__ import annotations

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feature_store.core.model import ValueType
from feature_store.core.predicates import compile_predicate
from feature_store.export.sqlpred import Untranslatable, predicate_sql

TYPES = {
    "n": ValueType.INT64,
    "m": ValueType.INT64,
    "s": ValueType.STRING,
    "b": ValueType.BYTES,
    "flag": ValueType.BOOL,
    "x": ValueType.FLOAT64,
    "tags": ValueType.STRING_LIST,
}
PREDICATES = [
    "n > 2",
    "n > 2.5",
    "n >= 2.5",
    "n < -2.5",
    "n <= 3.0",
    "n == 2.5",
    "n != 2.5",
    "n < 1e999",
    "n > -1e999",
    "n == 1e999",
    "2 < n <= 7",
    "7 > n",
    "n == null",
    "n != null",
    "n is null",
    "n is not null",
    "n in [1, 2.0, 2.5, 9223372036854775807]",
    "n not in [1, 3]",
    "n not in []",
    "n in []",
    "n == m",
    "n < m",
    "s == 'a'",
    "s < 'b'",
    "s >= 'é'",
    "s in ['a', \"it's\", 'é']",
    "not (s in ['a'])",
    "s not in ['a']",
    "b == b'\\x00a'",
    "b < b'b'",
    "flag",
    "not flag",
    "flag == true",
    "flag != false",
    "flag and n > 3 or s == 'b'",
    "not (flag or n == null)",
    "true",
    "false or s is null",
]
STRINGS = st.one_of(st.none(), st.sampled_from(["", "a", "b", "it's", "é", "z", "aa"]), st.text(max_size=3))
EVENT = st.fixed_dictionaries(
    {
        "n": st.one_of(st.none(), st.integers(-10, 10), st.sampled_from([-(1 << 63), (1 << 63) - 1])),
        "m": st.one_of(st.none(), st.integers(-10, 10)),
        "s": STRINGS.filter(lambda v: v is None or "\x00" not in v),
        "b": st.one_of(st.none(), st.binary(max_size=3)),
        "flag": st.one_of(st.none(), st.booleans()),
    }
)


def sql_values(texts: list[str], events: list[dict[str, object]]) -> list[list[bool]]:
    """Per predicate, its value on every event, all in one query."""
    exprs = [predicate_sql(text, TYPES, lambda name: f'"{name}"') for text in texts]
    con = duckdb.connect()
    con.execute("CREATE TABLE e (i INTEGER, n BIGINT, m BIGINT, s VARCHAR, b BLOB, flag BOOLEAN)")
    con.executemany(
        "INSERT INTO e VALUES (?, ?, ?, ?, ?, ?)",
        [(i, e["n"], e["m"], e["s"], e["b"], e["flag"]) for i, e in enumerate(events)],
    )
    rows = con.execute(f"SELECT {', '.join(exprs)} FROM e ORDER BY i").fetchall()
    con.close()
    return [[row[k] for row in rows] for k in range(len(texts))]


@settings(max_examples=60, deadline=None)
@given(events=st.lists(EVENT, min_size=1, max_size=40))
def test_sql_equals_python(events: list[dict[str, object]]) -> None:
    for text, got in zip(PREDICATES, sql_values(PREDICATES, events), strict=True):
        python = compile_predicate(text, TYPES)
        assert got == [python(e) for e in events], text


@pytest.mark.parametrize(
    "text", ["x > 1", "x == null", "'a' in tags", "n > 1e30 and x < 2", "n > 99999999999999999999"]
)
def test_what_sql_cannot_do_exactly_is_refused(text: str) -> None:
    with pytest.raises(Untranslatable):
        predicate_sql(text, TYPES, lambda name: name)
