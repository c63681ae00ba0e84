"""The audience filter language: a JSON form and a short text form, both parsed to one
tree and compiled to *parameterised* SQL over the flat profile table. Field names are
checked against a whitelist and values are always bound parameters, so nothing a user
types is ever concatenated into SQL.

Text form (case-insensitive keywords)::

    age 25-34 AND churn_risk > 0.6 AND (city = '上海' OR city = '北京')
    rfm_segment IN ('Champions', 'Loyal') AND NOT top_category = '数码'
    total_spend BETWEEN 1000 AND 5000

JSON form::

    {"and": [{"field": "age", "op": "between", "value": [25, 34]},
             {"field": "churn_risk", "op": ">", "value": 0.6}]}

Written by hand because the grammar is tiny and the compiler must emit our own
placeholders and error messages; a parser generator would add a dependency for ~60 lines.
"""

from __future__ import annotations

import math
import re
from typing import Any

from shoplens.errors import FilterError

OPS = {"=", "!=", "<", "<=", ">", ">=", "between", "in"}
_TOKEN = re.compile(
    r"\s*(?:(?P<num>-?\d+(?:\.\d+)?)(?:\s*-\s*(?P<num2>-?\d+(?:\.\d+)?))?(?![\w.])"
    r"|'(?P<str>(?:[^'\\]|\\.)*)'|\"(?P<dstr>(?:[^\"\\]|\\.)*)\""
    r"|(?P<op><=|>=|!=|<>|=|<|>)|(?P<punct>[(),])|(?P<word>[A-Za-z_\u4e00-\u9fff][\w.\u4e00-\u9fff]*))"
)
MAX_NODES = 200
# SQLite's parser stack (YYSTACKDEPTH 100) overflows at about 30 nested parenthesised
# ANDs; 20 levels of and/or/not (or parentheses in the text form) leaves a margin.
MAX_DEPTH = 20
MAX_INT = 2**63  # SQLite binds 64-bit integers only


def tokenize(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise FilterError(f"filter: cannot read {text[pos:pos + 20]!r} at position {pos}")
        pos = m.end()
        if m.group("num") is not None:
            a = float(m.group("num"))
            if m.group("num2") is not None:
                out.append(("range", (a, float(m.group("num2")))))
            else:
                out.append(("value", a))
        elif m.group("str") is not None or m.group("dstr") is not None:
            out.append(("value", (m.group("str") if m.group("str") is not None else m.group("dstr")).replace("\\'", "'")))
        elif m.group("op"):
            out.append(("op", "!=" if m.group("op") == "<>" else m.group("op")))
        elif m.group("punct"):
            out.append((m.group("punct"), m.group("punct")))
        else:
            word = m.group("word")
            kw = word.lower()
            out.append(("kw", kw) if kw in ("and", "or", "not", "between", "in") else ("field", word))
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, Any]]) -> None:
        self.t = tokens
        self.i = 0
        self.depth = 0

    def peek(self) -> tuple[str, Any] | None:
        return self.t[self.i] if self.i < len(self.t) else None

    def take(self, kind: str, value: Any = None) -> Any:
        tok = self.peek()
        if tok is None or tok[0] != kind or (value is not None and tok[1] != value):
            want = value or kind
            raise FilterError(f"filter: expected {want} but found {tok[1] if tok else 'the end'!r}")
        self.i += 1
        return tok[1]

    def expr(self) -> dict[str, Any]:
        parts = [self.term()]
        while self.peek() == ("kw", "or"):
            self.i += 1
            parts.append(self.term())
        return parts[0] if len(parts) == 1 else {"or": parts}

    def term(self) -> dict[str, Any]:
        parts = [self.factor()]
        while self.peek() == ("kw", "and"):
            self.i += 1
            parts.append(self.factor())
        return parts[0] if len(parts) == 1 else {"and": parts}

    def factor(self) -> dict[str, Any]:
        tok = self.peek()
        if tok in (("kw", "not"), ("(", "(")):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise FilterError(f"filter: NOT and parentheses nested more than {MAX_DEPTH} levels deep")
            self.i += 1
            if tok == ("kw", "not"):
                inner = {"not": self.factor()}
            else:
                inner = self.expr()
                self.take(")")
            self.depth -= 1
            return inner
        field = self.take("field")
        nxt = self.peek()
        if nxt and nxt[0] == "range":  # "age 25-34"
            self.i += 1
            return {"field": field, "op": "between", "value": list(nxt[1])}
        if nxt == ("kw", "between"):
            self.i += 1
            lo = self.take("value")
            self.take("kw", "and")
            return {"field": field, "op": "between", "value": [lo, self.take("value")]}
        if nxt == ("kw", "in"):
            self.i += 1
            self.take("(")
            values = [self.take("value")]
            while self.peek() == (",", ","):
                self.i += 1
                values.append(self.take("value"))
            self.take(")")
            return {"field": field, "op": "in", "value": values}
        op = self.take("op")
        return {"field": field, "op": op, "value": self.take("value")}


def parse_text(text: str) -> dict[str, Any]:
    """Parse the text form into the JSON form.

    >>> parse_text("age 25-34 AND churn_risk > 0.6")
    {'and': [{'field': 'age', 'op': 'between', 'value': [25.0, 34.0]}, {'field': 'churn_risk', 'op': '>', 'value': 0.6}]}
    """
    if len(text) > 2000:
        raise FilterError("filter: longer than 2,000 characters")
    p = _Parser(tokenize(text))
    tree = p.expr()
    if p.peek() is not None:
        raise FilterError(f"filter: unexpected {p.peek()[1]!r} after a complete condition")  # type: ignore[index]
    return tree


def compile_filter(tree: dict[str, Any], fields: dict[str, str]) -> tuple[str, list[Any]]:
    """SQL WHERE clause (with ``?`` placeholders) and its parameters.

    ``fields`` maps allowed field names to "number" or "text". Operators are case-blind;
    numbers must be finite (integers within 64 bits), text valid Unicode.
    """
    params: list[Any] = []
    count = [0]

    def node(n: Any, depth: int) -> str:
        count[0] += 1
        if count[0] > MAX_NODES:
            raise FilterError(f"filter: more than {MAX_NODES} conditions")
        if depth > MAX_DEPTH:
            raise FilterError(f"filter: and/or/not nested more than {MAX_DEPTH} levels deep")
        if not isinstance(n, dict):
            raise FilterError(f"filter: expected an object, found {type(n).__name__}")
        if set(n) in ({"and"}, {"or"}):
            key = next(iter(n))
            items = n[key]
            if not isinstance(items, list) or not items:
                raise FilterError(f"filter: '{key}' needs a non-empty list")
            return "(" + f" {key.upper()} ".join(node(i, depth + 1) for i in items) + ")"
        if set(n) == {"not"}:
            return f"(NOT {node(n['not'], depth + 1)})"
        if set(n) != {"field", "op", "value"}:
            raise FilterError(f"filter: a condition has keys field, op, value; found {sorted(n)}")
        field, op, value = n["field"], n["op"], n["value"]
        if not isinstance(field, str) or not isinstance(op, str):
            raise FilterError(f"filter: field and op are text, found {type(field).__name__} and {type(op).__name__}")
        op = op.lower()
        if field not in fields:
            raise FilterError(f"filter: unknown field {_short(field)}; allowed: {', '.join(sorted(fields))}")
        if op not in OPS:
            raise FilterError(f"filter: unknown operator {_short(op)}; allowed: {', '.join(sorted(OPS))}")
        kind = fields[field]
        col = '"' + field + '"'

        def bind(v: Any) -> str:
            if kind == "number":
                if not (isinstance(v, int | float) and not isinstance(v, bool)):
                    raise FilterError(f"filter: {field} is a number, found {_short(v)}")
                if isinstance(v, float) and not math.isfinite(v):
                    raise FilterError(f"filter: {field} needs a finite number, found {v!r}")
                if isinstance(v, int) and not -MAX_INT <= v < MAX_INT:
                    raise FilterError(f"filter: {field}: {_short(v)} is out of range (integers are 64-bit)")
            if kind == "text":
                if not isinstance(v, str):
                    raise FilterError(f"filter: {field} is text, found {_short(v)}")
                if not valid_unicode(v):
                    raise FilterError(f"filter: {field}: the value is not valid Unicode (a lone surrogate)")
            params.append(v)
            return "?"

        if op == "between" and kind != "product":
            if not isinstance(value, list) or len(value) != 2:
                raise FilterError(f"filter: between needs [low, high], found {_short(value)}")
            return f"({col} BETWEEN {bind(value[0])} AND {bind(value[1])})"
        if op == "in" and kind != "product":
            if not isinstance(value, list) or not value or len(value) > 1000:
                raise FilterError(f"filter: in needs a list of 1 to 1,000 values, found {_short(value)}")
            return f"({col} IN ({', '.join(bind(v) for v in value)}))"
        if kind == "product":  # customers with the product in their top 10 recommendations
            if op not in ("=", "in"):
                raise FilterError(f"filter: {field} takes = or in (product ids), not {op}")
            kind = "text"
            values = value if op == "in" else [value]
            if not isinstance(values, list) or not values or len(values) > 1000:
                raise FilterError(f"filter: in needs a list of 1 to 1,000 values, found {_short(value)}")
            marks = ", ".join(bind(v) for v in values)
            return f'("customer_id" IN (SELECT customer_id FROM recommendations WHERE rank <= 10 AND product_id IN ({marks})))'
        if op in ("<", "<=", ">", ">=") and kind != "number":
            raise FilterError(f"filter: {op} needs a number field, {field} is text")
        return f"({col} {op} {bind(value)})"

    return node(tree, 0), params


def valid_unicode(text: str) -> bool:
    """False for text holding a lone surrogate (not encodable, so not storable).

    >>> valid_unicode("上海"), valid_unicode("\\ud800")
    (True, False)
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def to_text(tree: dict[str, Any]) -> str:
    """The text form of a filter tree (shown to users next to their question)."""
    if "and" in tree or "or" in tree:
        key = "and" if "and" in tree else "or"
        return "(" + f" {key.upper()} ".join(to_text(i) for i in tree[key]) + ")"
    if "not" in tree:
        return f"NOT {to_text(tree['not'])}"

    def lit(v: Any) -> str:
        return "'" + v.replace("'", "\\'") + "'" if isinstance(v, str) else f"{v:g}"

    f, op, v = tree["field"], str(tree["op"]).lower(), tree["value"]
    if op == "between":
        return f"{f} BETWEEN {lit(v[0])} AND {lit(v[1])}"
    if op == "in":
        return f"{f} IN ({', '.join(lit(x) for x in v)})"
    return f"{f} {op} {lit(v)}"
