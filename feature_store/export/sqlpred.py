"""`where` predicates and source filters as DuckDB SQL, with exactly the core's semantics, or not at all.

The core evaluates predicates in Python (:mod:`feature_store.core.predicates`) with two-valued
null semantics: a comparison involving a null field is false (``== null`` aside) and ``not``
simply negates. The SQL emitted here guards every field read with ``IS NOT NULL``, so no
sub-expression is ever SQL NULL and three-valued logic never kicks in.

Only a subset whose SQL meaning provably equals Python's is translated; anything else raises
:class:`Untranslatable` and the caller falls back to evaluating the predicate in Python:

* fields of type int64, string, bytes, bool (float64 fields are left to Python: NaN and -0.0
  compare differently in SQL; list-typed fields too);
* int literals within int64; float literals against int64 fields are rewritten to exact integer
  bounds (``n > 2.5`` is ``n >= 3``), since SQL would compare in floating point;
* strings compare by code point in Python and by UTF-8 bytes in DuckDB: the same order.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping

from feature_store.core.model import ValueType
from feature_store.core.predicates import _Parsed

_SQL_TYPES = frozenset({ValueType.INT64, ValueType.STRING, ValueType.BYTES, ValueType.BOOL})
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_OPS: dict[type[ast.cmpop], str] = {
    ast.Eq: "=",
    ast.NotEq: "<>",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
}
_SWAP = {"=": "=", "<>": "<>", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
TRUE, FALSE = "TRUE", "FALSE"


class Untranslatable(ValueError):
    """The predicate uses something this translator does not prove equal in SQL."""


Column = Callable[[str], str]  # field name -> SQL expression reading it


def sql_literal(value: object) -> str:
    if isinstance(value, bool):
        return TRUE if value else FALSE
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise Untranslatable(f"integer literal {value} is outside int64")
        return str(value)
    if isinstance(value, str):
        if "\x00" in value:
            raise Untranslatable("NUL in a string literal")
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, bytes):
        return f"unhex('{value.hex()}')"
    raise Untranslatable(f"literal {value!r}")


class _Translator:
    def __init__(self, types: Mapping[str, ValueType], column: Column) -> None:
        self._types = types
        self._column = column

    def boolean(self, node: ast.expr) -> str:
        if isinstance(node, ast.BoolOp):
            op = " AND " if isinstance(node.op, ast.And) else " OR "
            return "(" + op.join(self.boolean(v) for v in node.values) + ")"
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return f"(NOT {self.boolean(node.operand)})"
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            parts = [self._pair(operands[i], op, operands[i + 1]) for i, op in enumerate(node.ops)]
            return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"
        if isinstance(node, ast.Name):
            col = self._field(node.id)
            return f"({col} IS NOT NULL AND {col})"  # a bare bool field: true only when true
        if isinstance(node, ast.Constant) and isinstance(node.value, bool):
            return TRUE if node.value else FALSE
        raise Untranslatable(f"expression {ast.unparse(node)}")

    def _field(self, name: str) -> str:
        vt = self._types.get(name)
        if vt not in _SQL_TYPES:
            raise Untranslatable(f"field {name!r} of type {vt.value if vt else 'unknown'}")
        return self._column(name)

    def _pair(self, left: ast.expr, op: ast.cmpop, right: ast.expr) -> str:
        if isinstance(op, ast.In | ast.NotIn):
            return self._membership(left, op, right)
        if isinstance(op, ast.Is | ast.IsNot):  # only ever with null (checked when compiled)
            return self._compare_null(left if isinstance(left, ast.Name) else right, isinstance(op, ast.Is))
        sym = _OPS.get(type(op))
        if sym is None:
            raise Untranslatable(f"operator {type(op).__name__}")
        if not isinstance(left, ast.Name) and isinstance(right, ast.Name):  # literal <op> field
            left, right, sym = right, left, _SWAP[sym]
        return self._compare(left, sym, right)

    def _compare_null(self, field: ast.expr, is_null: bool) -> str:
        if not isinstance(field, ast.Name):
            raise Untranslatable("null compared with a non-field")
        col = self._field(field.id)
        return f"({col} IS {'' if is_null else 'NOT '}NULL)"

    def _compare(self, left: ast.expr, sym: str, right: ast.expr) -> str:
        if not isinstance(left, ast.Name):
            raise Untranslatable("comparison without a field on either side")
        if isinstance(right, ast.Constant) and right.value is None:
            if sym not in ("=", "<>"):
                raise Untranslatable("null with an ordering")
            return self._compare_null(left, sym == "=")
        col = self._field(left.id)
        if isinstance(right, ast.Name):
            other = self._field(right.id)
            if self._types[left.id] is not self._types[right.id]:
                raise Untranslatable("fields of different types")
            return f"({col} IS NOT NULL AND {other} IS NOT NULL AND {col} {sym} {other})"
        if not isinstance(right, ast.Constant):
            raise Untranslatable(ast.unparse(right))
        value = right.value
        if isinstance(value, float) and not isinstance(value, bool):
            if self._types[left.id] is not ValueType.INT64:
                raise Untranslatable("float literal against a non-int field")
            return self._int_vs_float(col, sym, value)
        return f"({col} IS NOT NULL AND {col} {sym} {sql_literal(value)})"

    @staticmethod
    def _int_vs_float(col: str, sym: str, value: float) -> str:
        """``int_field <op> float``, exactly as Python compares an int with a float."""
        present = f"({col} IS NOT NULL)"
        if math.isnan(value):
            return present if sym == "<>" else FALSE
        if math.isinf(value):
            below = value > 0  # every int is below +inf, above -inf
            truthy = {"<": below, "<=": below, ">": not below, ">=": not below, "=": False, "<>": True}[sym]
            return present if truthy else FALSE
        if value.is_integer():
            return f"({col} IS NOT NULL AND {col} {sym} {sql_literal(int(value))})"
        if sym == "=":
            return FALSE
        if sym == "<>":
            return present
        bound = math.floor(value) if sym in ("<", "<=") else math.ceil(value)
        exact = {"<": "<=", "<=": "<=", ">": ">=", ">=": ">="}[sym]
        return f"({col} IS NOT NULL AND {col} {exact} {sql_literal(bound)})"

    def _membership(self, left: ast.expr, op: ast.cmpop, right: ast.expr) -> str:
        negate = isinstance(op, ast.NotIn)
        if not isinstance(left, ast.Name) or not isinstance(right, ast.List | ast.Tuple):
            raise Untranslatable("membership other than field in [literals]")
        col = self._field(left.id)
        values = [e.value for e in right.elts if isinstance(e, ast.Constant)]
        if self._types[left.id] is ValueType.INT64:  # 3 in {3.0} is true in Python; 3.5 never matches
            values = [int(v) if isinstance(v, float) and v.is_integer() else v for v in values]
            values = [v for v in values if not isinstance(v, float)]
        literals = sorted({sql_literal(v) for v in values})
        if not literals:
            return f"({col} IS NOT NULL)" if negate else FALSE
        return f"({col} IS NOT NULL AND {col} {'NOT IN' if negate else 'IN'} ({', '.join(literals)}))"


def predicate_sql(text: str, types: Mapping[str, ValueType], column: Column) -> str:
    """The SQL boolean for ``text`` (never NULL), or :class:`Untranslatable`."""
    parsed = _Parsed(text)
    return _Translator(types, column).boolean(parsed.body)
