"""A tiny, safe expression language for ``where`` predicates and source filters.

Grammar (a strict subset of Python expressions, parsed with :mod:`ast`)::

    accepted == true and duration_s >= 30
    kind in ["like", "superlike"] and not is_bot
    reason != null
    0 < score <= 1.5
    "vip" in tags               # membership in a list-typed field

Allowed: ``and``, ``or``, ``not``; comparisons ``== != < <= > >= in not in`` (chains such
as ``0 < x <= 1`` mean ``0 < x and x <= 1``); ``is null`` / ``is not null``; field names; literal
numbers (``-5`` included), strings, bytes, ``true``/``false``/``null`` (or Python's
``True``/``False``/``None``); lists or tuples of literals on the right of ``in``. A bare boolean
field (``is_bot``) is true only when the field is ``true``. Anything else (calls, attributes,
arithmetic, indexing...) is rejected when the registry is compiled, never at run time. Line breaks
and tabs count as spaces, so multi-line YAML scalars work. A field named ``true``, ``false`` or
``null`` (the literal wins) or like a Python keyword (``class``, ``in``...) cannot be referenced.

Types are checked against the source schema: both sides of a comparison must be numbers
(int64/float64 mix freely), strings, bytes or booleans of the same kind; ordering (``<`` ...)
is not defined on booleans; ``null`` can only be compared with ``==``/``!=``/``is``/``is not``.

Null semantics (two-valued, *not* SQL's three-valued logic): a field that is missing from the
event or is ``None`` makes every comparison involving it **false**, except ``== null``/``is null``
(true) and ``!= null``/``is not null``. ``x not in [...]`` is therefore false when ``x`` is null,
while ``not (x in [...])`` is true: ``not`` simply negates. Events are trusted to match the
declared field types (they come from the Avro decoder).

The validated tree is translated into the source of a single Python lambda over a namespace with
no builtins (constants are bound by name, never spliced in as text), so evaluating a predicate
costs one function call and a few dict lookups.
"""

from __future__ import annotations

import ast
import difflib
import struct
from collections.abc import Callable, Mapping
from typing import Final, cast

from feature_store.core.model import ValueType

Predicate = Callable[[Mapping[str, object]], bool]

__all__ = [
    "Predicate",
    "PredicateError",
    "PredicateTreeError",
    "canonical_predicate",
    "compile_predicate",
    "predicate_fields",
    "predicate_tree",
]


class PredicateError(ValueError):
    """A predicate that does not parse, uses a disallowed construct, or is ill-typed.

    ``column`` is the 1-based character offset into the original text, so a caller can point
    a caret at the problem.
    """

    def __init__(self, message: str, column: int) -> None:
        super().__init__(f"{message} (column {column})")
        self.message = message
        self.column = column

    def __reduce__(self) -> tuple[type[PredicateError], tuple[str, int]]:
        return PredicateError, (self.message, self.column)  # picklable across worker processes


_LITERALS: Final[dict[str, bool | None]] = {"true": True, "false": False, "null": None}

# Value categories of the type checker: what can be compared with what.
_NUMBER, _STRING, _BYTES, _BOOL, _NULL = "number", "string", "bytes", "boolean", "null"
_ORDERED = frozenset({_NUMBER, _STRING, _BYTES})

_SCALAR_CATEGORY: Final[dict[ValueType, str]] = {
    ValueType.INT64: _NUMBER,
    ValueType.FLOAT64: _NUMBER,
    ValueType.STRING: _STRING,
    ValueType.BYTES: _BYTES,
    ValueType.BOOL: _BOOL,
}
_LIST_CATEGORY: Final[dict[ValueType, str]] = {
    ValueType.INT64_LIST: _NUMBER,
    ValueType.FLOAT64_LIST: _NUMBER,
    ValueType.STRING_LIST: _STRING,
    ValueType.BYTES_LIST: _BYTES,
    ValueType.BOOL_LIST: _BOOL,
}

_CMP_SOURCE: Final[dict[type[ast.cmpop], str]] = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.In: "in",
    ast.NotIn: "not in",
    ast.Is: "is",
    ast.IsNot: "is not",
}
_ORDERING = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)
_EQUALITY = (ast.Eq, ast.NotEq, ast.Is, ast.IsNot)
_MEMBERSHIP = (ast.In, ast.NotIn)

_UNSUPPORTED_HINTS: Final[dict[type[ast.AST], str]] = {
    ast.Call: "function calls are not supported",
    ast.Attribute: "attribute access is not supported; refer to top-level event fields by name",
    ast.Subscript: "indexing is not supported",
    ast.BinOp: "arithmetic is not supported in predicates; compute the value upstream",
    ast.IfExp: "conditional expressions are not supported",
    ast.Lambda: "lambdas are not supported",
    ast.NamedExpr: "assignment expressions are not supported",
    ast.Dict: "dict literals are not supported",
    ast.Set: "set literals are not supported; use a list: x in [1, 2]",
    ast.JoinedStr: "f-strings are not supported",
    ast.Starred: "starred expressions are not supported",
}


def _char_column(text: str, byte_offset: int) -> int:
    """AST col_offset counts UTF-8 bytes; callers want characters."""
    return len(text.encode("utf-8")[:byte_offset].decode("utf-8", errors="ignore")) + 1


class _Parsed:
    """A parsed, structurally validated predicate with columns mapped back to the original text."""

    __slots__ = ("_body", "_lead", "_line", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        # Line breaks/tabs become spaces (same length, so columns stay valid); leading blanks
        # are stripped because eval-mode parsing rejects indentation.
        line = text.replace("\r", " ").replace("\n", " ").replace("\t", " ")
        stripped = line.lstrip(" ")
        self._lead = len(line) - len(stripped)
        self._line = stripped
        if not stripped.strip():
            raise PredicateError("empty predicate", 1)
        try:
            tree = ast.parse(stripped, mode="eval")
        except SyntaxError as exc:
            raise self._syntax_error(exc) from None
        self._body = self._structure(tree.body)

    @property
    def body(self) -> ast.expr:
        return self._body

    def column(self, node: ast.AST) -> int:
        return self._lead + _char_column(self._line, getattr(node, "col_offset", 0))

    def error(self, message: str, node: ast.AST) -> PredicateError:
        return PredicateError(message, self.column(node))

    def _syntax_error(self, exc: SyntaxError) -> PredicateError:
        offset = exc.offset or 0
        col = offset if 0 < offset <= len(self._line) else len(self._line) + 1
        msg = exc.msg or "invalid syntax"
        # Python hints at ':=', which is not part of this language.
        lone_equals = (
            self._line[col - 1 : col] == "="
            and self._line[col - 2 : col - 1] not in ("=", "!", "<", ">")
            and self._line[col : col + 1] != "="
        )
        if "Maybe you meant '==' or ':='" in msg or lone_equals:
            msg = "invalid syntax; use '==' to compare"
        # '&&' / '||': the offset may point at either character of the pair.
        base = max(col - 2, 0)
        around = self._line[base : col + 1]
        pair = around.find("&&") if "&&" in around else around.find("||")
        if pair >= 0:
            msg = "invalid syntax; use 'and' / 'or'"
            col = base + pair + 1
        elif col > len(self._line):
            msg = "unexpected end of predicate"
        return PredicateError(msg, self._lead + col)

    def _structure(self, node: ast.expr) -> ast.expr:
        """Reject non-whitelisted nodes; turn true/false/null names into constants."""
        if isinstance(node, ast.BoolOp):
            node.values = [self._structure(v) for v in node.values]
            return node
        if isinstance(node, ast.UnaryOp):
            return self._unary(node)
        if isinstance(node, ast.Compare):
            node.left = self._structure(node.left)
            node.comparators = [self._structure(c) for c in node.comparators]
            return node
        if isinstance(node, ast.Name):
            if node.id in _LITERALS:
                return ast.copy_location(ast.Constant(_LITERALS[node.id]), node)
            return node
        if isinstance(node, ast.Constant | ast.List | ast.Tuple):
            return self._literal(node)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitAnd | ast.BitOr):
            word = "and" if isinstance(node.op, ast.BitAnd) else "or"
            raise self.error(f"bitwise operators are not supported; use '{word}'", node)
        hint = _UNSUPPORTED_HINTS.get(type(node), f"{type(node).__name__} expressions are not supported")
        raise self.error(hint, node)

    def _unary(self, node: ast.UnaryOp) -> ast.expr:
        if isinstance(node.op, ast.Not):
            node.operand = self._structure(node.operand)
            return node
        if isinstance(node.op, ast.USub | ast.UAdd):
            operand = node.operand
            if (
                isinstance(operand, ast.Constant)
                and isinstance(operand.value, int | float)
                and not isinstance(operand.value, bool)
            ):
                value = -operand.value if isinstance(node.op, ast.USub) else operand.value
                return ast.copy_location(ast.Constant(value), node)
            raise self.error("unary minus/plus is only allowed before a number literal", node)
        hint = "use 'not'" if isinstance(node.op, ast.Invert) else "not supported"
        raise self.error(f"unary operator: {hint}", node)

    def _literal(self, node: ast.Constant | ast.List | ast.Tuple) -> ast.expr:
        if isinstance(node, ast.Constant):
            if node.value is None or isinstance(node.value, bool | int | float | str | bytes):
                return node
            raise self.error(f"literal {ast.unparse(node)} is not supported", node)
        node.elts = [self._structure(e) for e in node.elts]
        for elt in node.elts:
            if not isinstance(elt, ast.Constant):
                raise self.error("lists may only contain literals", elt)
        return node

    def fields(self) -> frozenset[str]:
        return frozenset(n.id for n in ast.walk(self._body) if isinstance(n, ast.Name))


# --- type checking and code generation --------------------------------------------------------


class _Operand:
    """One side of a comparison: a field read (``expr`` is a getter) or a literal."""

    __slots__ = ("category", "expr", "is_field", "is_list", "node")

    def __init__(self, node: ast.expr, category: str, expr: str, is_field: bool, is_list: bool) -> None:
        self.node = node
        self.category = category
        self.expr = expr
        self.is_field = is_field
        self.is_list = is_list


def _literal_category(value: object) -> str:
    if value is None:
        return _NULL
    if isinstance(value, bool):
        return _BOOL
    if isinstance(value, int | float):
        return _NUMBER
    if isinstance(value, str):
        return _STRING
    return _BYTES


class _Compiler:
    __slots__ = ("_consts", "_parsed", "_temps", "_types")

    def __init__(self, parsed: _Parsed, field_types: Mapping[str, ValueType]) -> None:
        self._parsed = parsed
        self._types = field_types
        self._consts: dict[str, object] = {}
        self._temps = 0

    def namespace(self) -> dict[str, object]:
        return {"__builtins__": {}, **self._consts}

    def _const(self, value: object) -> str:
        name = f"_c{len(self._consts)}"
        self._consts[name] = value
        return name

    def _temp(self) -> str:
        self._temps += 1
        return f"_t{self._temps}"

    def _field_type(self, node: ast.Name) -> ValueType:
        vt = self._types.get(node.id)
        if vt is None:
            close = difflib.get_close_matches(node.id, list(self._types), n=3)
            if close:
                hint = "did you mean " + " or ".join(repr(c) for c in close) + "?"
            else:
                hint = "known fields: " + ", ".join(sorted(self._types)[:20])
            raise self._parsed.error(f"unknown field {node.id!r}; {hint}", node)
        return vt

    def boolean(self, node: ast.expr) -> str:
        """Python source for a boolean-valued node."""
        if isinstance(node, ast.BoolOp):
            op = " and " if isinstance(node.op, ast.And) else " or "
            return "(" + op.join(self.boolean(v) for v in node.values) + ")"
        if isinstance(node, ast.UnaryOp):  # only `not` survives _structure
            return f"(not {self.boolean(node.operand)})"
        if isinstance(node, ast.Compare):
            return self._compare(node)
        if isinstance(node, ast.Name):
            vt = self._field_type(node)
            if vt is not ValueType.BOOL:
                raise self._parsed.error(
                    f"field {node.id!r} is {vt.value}, not bool; compare it, e.g. {node.id} != null", node
                )
            return f"(e.get({node.id!r}) is True)"
        if isinstance(node, ast.Constant) and isinstance(node.value, bool):
            return repr(node.value)
        raise self._parsed.error(f"{ast.unparse(node)} is not a condition (expected true or false)", node)

    def _operand(self, node: ast.expr) -> _Operand:
        if isinstance(node, ast.Name):
            vt = self._field_type(node)
            if vt in _LIST_CATEGORY:
                return _Operand(node, _LIST_CATEGORY[vt], f"e.get({node.id!r})", True, True)
            return _Operand(node, _SCALAR_CATEGORY[vt], f"e.get({node.id!r})", True, False)
        if isinstance(node, ast.Constant):
            return _Operand(node, _literal_category(node.value), self._const(node.value), False, False)
        if isinstance(node, ast.List | ast.Tuple):
            values = [cast(ast.Constant, e).value for e in node.elts]
            cats = {_literal_category(v) for v in values}
            if _NULL in cats:
                bad = next(e for e in node.elts if cast(ast.Constant, e).value is None)
                raise self._parsed.error("null in a list never matches; write `x == null or x in [...]`", bad)
            if len(cats) > 1:
                raise self._parsed.error("list mixes " + " and ".join(sorted(cats)) + " literals", node)
            category = cats.pop() if cats else ""
            return _Operand(node, category, self._const(frozenset(values)), False, True)
        raise self._parsed.error(
            f"{ast.unparse(node)} cannot be compared; use a field name or a literal", node
        )

    def _compare(self, node: ast.Compare) -> str:
        operands = [self._operand(node.left)] + [self._operand(c) for c in node.comparators]
        parts = [self._pair(operands[i], op, operands[i + 1]) for i, op in enumerate(node.ops)]
        return parts[0] if len(parts) == 1 else "(" + " and ".join(parts) + ")"

    def _pair(self, left: _Operand, op: ast.cmpop, right: _Operand) -> str:
        sym = _CMP_SOURCE[type(op)]
        err = self._parsed.error
        if not left.is_field and not right.is_field:
            raise err("comparison between two literals; one side must be a field", left.node)
        if isinstance(op, ast.Is | ast.IsNot) and _NULL not in (left.category, right.category):
            raise err(f"'{sym}' only works with null; use '==' or '!='", right.node)
        if _NULL in (left.category, right.category):
            if not isinstance(op, _EQUALITY):
                raise err(f"null can only be compared with == or != (not '{sym}')", right.node)
            field = left if right.category == _NULL else right  # the other side is a field
            return f"({field.expr} is {'' if isinstance(op, ast.Eq | ast.Is) else 'not '}None)"
        self._check_pair(left, op, right, sym)
        guards: list[str] = []
        values: list[str] = []
        for side in (left, right):
            if side.is_field:
                tmp = self._temp()
                guards.append(f"({tmp} := {side.expr}) is not None")
                values.append(tmp)
            else:
                values.append(side.expr)
        return "(" + " and ".join([*guards, f"{values[0]} {sym} {values[1]}"]) + ")"

    def _check_pair(self, left: _Operand, op: ast.cmpop, right: _Operand, sym: str) -> None:
        err = self._parsed.error
        if isinstance(op, _MEMBERSHIP):
            if left.is_list:
                raise err(f"the left side of '{sym}' must be a single value", left.node)
            if not right.is_list:
                raise err(f"the right side of '{sym}' must be a list or a list-typed field", right.node)
            self._check_categories(left, right, sym)
        else:
            for side in (left, right):
                if side.is_list:
                    raise err(f"lists can only be used with 'in' / 'not in', not '{sym}'", side.node)
            self._check_categories(left, right, sym)
            if isinstance(op, _ORDERING) and left.category not in _ORDERED:
                raise err(f"'{sym}' is not defined on {left.category} values", left.node)

    def _check_categories(self, left: _Operand, right: _Operand, sym: str) -> None:
        if right.category in ("", left.category):  # "" = empty list literal
            return
        culprit = right if left.is_field else left
        field = left if left.is_field else right
        what = f"field {ast.unparse(field.node)!r} ({field.category}{' list' if field.is_list else ''})"
        raise self._parsed.error(
            f"type mismatch: {what} cannot be compared with {ast.unparse(culprit.node)} "
            f"({culprit.category}) using '{sym}'",
            culprit.node,
        )


def compile_predicate(text: str, field_types: Mapping[str, ValueType]) -> Predicate:
    """Validate ``text`` against ``field_types`` and return a fast callable over one event.

    Raises :class:`PredicateError` (with a 1-based column) for syntax errors, disallowed
    constructs, unknown fields and type mismatches, so bad registries fail at ``apply`` time.
    """
    parsed = _Parsed(text)
    compiler = _Compiler(parsed, field_types)
    source = f"lambda e: {compiler.boolean(parsed.body)}"
    # Only generated source is compiled: field names are repr()'d identifiers, literals are bound
    # in the namespace, and there are no builtins to reach.
    code = compile(source, "<predicate>", "eval")
    fn = eval(code, compiler.namespace())  # noqa: S307
    return cast(Predicate, fn)


def predicate_fields(text: str) -> frozenset[str]:
    """The event fields a predicate reads (syntax and constructs are validated, types are not)."""
    return _Parsed(text).fields()


def canonical_predicate(text: str) -> str:
    """A whitespace/spelling-independent form (``true`` -> ``True``...), for stable fingerprints."""
    return ast.unparse(_Parsed(text).body)


class PredicateTreeError(ValueError):
    """A valid predicate that :func:`predicate_tree` cannot express (e.g. a list-typed field)."""


def predicate_tree(text: str, field_types: Mapping[str, ValueType]) -> dict[str, object]:
    """The validated predicate as a JSON-able tree, for an evaluator outside Python (the job's
    JVM router), with this module's semantics spelled out node by node:

    * ``{"and": [..]}``, ``{"or": [..]}``, ``{"not": node}``, ``{"const": bool}``;
    * ``{"flag": field}``: a bare boolean field, true only when the field is ``true``;
    * ``{"null": field, "negate": bool}``: ``field == null`` (``negate``: ``!= null``);
    * ``{"cmp": op, "left": operand, "right": operand}`` with ``op`` one of ``== != < <= > >=
      in``, ``not in``: false when a field operand is null; numbers compare exactly across
      int64 and float64, strings by code point, bytes unsigned;
    * operands: ``{"field": name}``, ``{"value": literal}``, ``{"values": [literal, ...]}``;
      a literal is ``{"int": n}`` (int64), ``{"float": bits}`` (the IEEE-754 bits as int64),
      ``{"str": s}``, ``{"bytes": hex}`` or ``{"bool": b}``.

    Raises :class:`PredicateError` for an invalid predicate and :class:`PredicateTreeError`
    for one the tree does not cover (list-typed fields, integers beyond int64).
    """
    compile_predicate(text, field_types)  # validates and type-checks
    return _tree(_Parsed(text).body, field_types)


def _tree(node: ast.expr, types: Mapping[str, ValueType]) -> dict[str, object]:
    if isinstance(node, ast.BoolOp):
        return {"and" if isinstance(node.op, ast.And) else "or": [_tree(v, types) for v in node.values]}
    if isinstance(node, ast.UnaryOp):  # only `not` survives validation
        return {"not": _tree(node.operand, types)}
    if isinstance(node, ast.Constant):
        return {"const": bool(node.value)}
    if isinstance(node, ast.Name):
        return {"flag": node.id}
    if isinstance(node, ast.Compare):
        sides = [node.left, *node.comparators]
        pairs = [_tree_pair(sides[i], op, sides[i + 1], types) for i, op in enumerate(node.ops)]
        return pairs[0] if len(pairs) == 1 else {"and": pairs}
    raise PredicateTreeError(f"unexpected node {ast.unparse(node)}")


def _tree_pair(
    left: ast.expr, op: ast.cmpop, right: ast.expr, types: Mapping[str, ValueType]
) -> dict[str, object]:
    is_null = [isinstance(s, ast.Constant) and s.value is None for s in (left, right)]
    if any(is_null):
        field = cast(ast.Name, right if is_null[0] else left)
        return {"null": field.id, "negate": isinstance(op, ast.NotEq | ast.IsNot)}
    return {
        "cmp": _CMP_SOURCE[type(op)],
        "left": _tree_operand(left, types),
        "right": _tree_operand(right, types),
    }


def _tree_operand(node: ast.expr, types: Mapping[str, ValueType]) -> dict[str, object]:
    if isinstance(node, ast.Name):
        if types[node.id] in _LIST_CATEGORY:
            raise PredicateTreeError(f"field {node.id!r} is a list")
        return {"field": node.id}
    if isinstance(node, ast.List | ast.Tuple):
        return {"values": [_tree_literal(cast(ast.Constant, e).value) for e in node.elts]}
    return {"value": _tree_literal(cast(ast.Constant, node).value)}


def _tree_literal(value: object) -> dict[str, object]:
    if isinstance(value, bool):
        return {"bool": value}
    if isinstance(value, int):
        if not -(1 << 63) <= value < (1 << 63):
            raise PredicateTreeError(f"integer {value} is beyond int64")
        return {"int": value}
    if isinstance(value, float):
        return {"float": struct.unpack(">q", struct.pack(">d", value))[0]}
    if isinstance(value, str):
        return {"str": value}
    return {"bytes": cast(bytes, value).hex()}
