"""Plain-language audience questions without an LLM: Chinese and English -> the filter
language (``serving.audience``), or a refusal that says what was not understood.

Meanings are fixed in docs/questions.md (高价值 = top spend quintile, 最近三个月没买过 =
recency above 90 days, 抱怨物流 = negative logistics aspect score, ...; the phrase rules and
filler words are in ``serving.question_rules``). The question is
normalised (width, case, Chinese numerals, 万/千/k, percentages), every phrase the rules
know is replaced by its condition, and what is left must be filler (客户, 的, show me,
customers who ...) or connectives (并且/或者/不是, and/or/not). Anything else left over is
reported and the question is refused: a condition is never silently dropped.

Combining: conditions on one field joined by "or" form one group first (北京或上海的女性
= (北京 or 上海) and female); then "or" separates groups of "and"ed conditions.

Why by hand: the phrases are few and fixed by the conventions; a grammar library would
not know them, and an LLM is what this path exists to do without. Its output compiles
through the same whitelist (``compile_filter``) as any other filter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from shoplens.privacy import mask_text
from shoplens.serving.question_rules import (
    ACTIONS,
    CONNECT_AND,
    CONNECT_NOT,
    CONNECT_OR,
    FIELDS_UNKNOWN,
    FILLER_EN,
    FILLER_ZH,
    IDENTIFIER,
    RULES,
    Cond,
    condition,
    normalise,
)


@dataclass
class Parsed:
    """A compiled question: the filter (None: refused), the phrases understood and what
    was not understood (the reason for a refusal)."""

    filter: Cond | None
    understood: list[tuple[str, Cond]] = field(default_factory=list)
    not_understood: list[str] = field(default_factory=list)
    reason: str = ""


def parse_question(question: str) -> Parsed:
    """The filter a question asks for, or a refusal saying why (module docstring)."""
    masked = mask_text(question)
    if IDENTIFIER.search(masked) or masked != question and re.search(r"\[[A-Z_]+\]", masked):
        return Parsed(None, reason="asks for one person by an identifier: audiences are groups")
    q = normalise(masked)
    if ACTIONS.search(q):
        return Parsed(None, reason="asks for an action, not an audience")
    if m := FIELDS_UNKNOWN.search(q):
        return Parsed(None, not_understood=[m.group(0)], reason=f"no profile field for {m.group(0)!r}")
    found: list[tuple[int, int, str, Cond]] = []
    taken = [False] * len(q)
    for rule in RULES:
        for m in rule.pattern.finditer(q):
            if m.end() == m.start() or any(taken[m.start():m.end()]):
                continue
            try:
                cond = rule.build(m)
            except (KeyError, ValueError, StopIteration):
                continue
            found.append((m.start(), m.end(), m.group(0), cond))
            for i in range(m.start(), m.end()):
                taken[i] = True
    found.sort(key=lambda f: f[0])
    for i, (start, end, text, cond) in enumerate(found):
        if cond.get("op") == "?":  # a bare aspect: the polarity of the aspect condition before it
            before = [c for _s, _e, _t, c in found[:i] if str(c.get("field", "")).startswith("aspect.") and c["op"] != "?"]
            if not before:
                return Parsed(None, [(t, c) for _s, _e, t, c in found if c.get("op") != "?"], [text],
                              reason=f"not understood: {text!r} (praised or complained about?)")
            found[i] = (start, end, text, condition(cond["field"], before[-1]["op"], before[-1]["value"]))
    gaps, pos = [], 0
    for start, end, _t, _c2 in found:
        gaps.append(q[pos:start])
        pos = end
    gaps.append(q[pos:])
    leftovers = [w if len(w) <= 40 else w[:40] + "..." for g in gaps for w in _leftover(g)][:10]
    if leftovers:
        return Parsed(None, [(t, c) for _s, _e, t, c in found], leftovers,
                      reason="not understood: " + ", ".join(repr(w) for w in leftovers))
    if not found:
        return Parsed(None, reason="no condition found")
    conds: list[Cond] = []
    joins: list[str] = []  # between condition i and i+1: and / or
    for i, (_s, _e, _t, cond) in enumerate(found):
        if _has(gaps[i], CONNECT_NOT):
            cond = {"not": cond}
        conds.append(cond)
        if i + 1 < len(found):
            joins.append("or" if _has(gaps[i + 1], CONNECT_OR) else "and")
    return Parsed(_combine(conds, joins), [(t, c) for _s, _e, t, c in found])


_SKIP_ZH = sorted({w for w in (*FILLER_ZH, *CONNECT_AND, *CONNECT_OR, *CONNECT_NOT) if not w.isascii()}, key=len, reverse=True)
# one pattern for every English filler word and connective, longest first
_SKIP_EN = re.compile(r"(?<![a-z'])(?:" + "|".join(re.escape(w) for w in sorted(
    {w for w in (*FILLER_EN, *CONNECT_AND, *CONNECT_OR, *CONNECT_NOT) if w.isascii()}, key=len, reverse=True)) + r")(?![a-z'])")


def _words(gap: str) -> str:
    """A gap with filler and connectives removed (longest first); what remains is unknown."""
    for w in _SKIP_ZH:
        gap = gap.replace(w, " ")
    phrase = " ".join(re.findall(r"[a-z']+|[\u4e00-\u9fff]+|\d+(?:\.\d+)?", gap))
    while True:  # removing "who are" can bring two filler words together: repeat until stable
        shorter = _SKIP_EN.sub(" ", phrase)
        if shorter == phrase:
            return phrase
        phrase = shorter


def _leftover(gap: str) -> list[str]:
    """Unknown words in a gap; an English word one typo away from a filler word is filler."""
    import difflib

    out = []
    for w in _words(gap).split():
        if not w.strip("'"):
            continue
        if w.isascii() and len(w) >= 5 and difflib.get_close_matches(w, _FILLER_WORDS, n=1, cutoff=0.85):
            continue
        out.append(w)
    return out


_FILLER_WORDS = [w for w in (*FILLER_EN, *CONNECT_AND) if w.isascii() and " " not in w and len(w) >= 4]


def _has(gap: str, words: tuple[str, ...]) -> bool:
    for w in words:
        if w.isascii():
            if re.search(rf"(?<![a-z']){re.escape(w)}(?![a-z'])", gap):
                return True
        elif w in gap:
            return True
    return False


def _combine(conds: list[Cond], joins: list[str]) -> Cond:
    """Same-field conditions joined by "or" group first, then "or" splits groups of "and"."""
    items: list[Cond] = [conds[0]]
    ops: list[str] = []
    for cond, join in zip(conds[1:], joins, strict=True):
        prev = items[-1]
        if join == "or" and _field(prev) is not None and _field(prev) == _field(cond):
            items[-1] = {"or": [*prev["or"], cond]} if "or" in prev and _same_field_or(prev) else {"or": [prev, cond]}
            continue
        items.append(cond)
        ops.append(join)
    groups: list[list[Cond]] = [[items[0]]]
    for cond, op in zip(items[1:], ops, strict=True):
        if op == "or":
            groups.append([cond])
        else:
            groups[-1].append(cond)
    groups = [[c for i, c in enumerate(g) if c not in g[:i]] for g in groups]  # 高价值的高价值客户: once
    parts = [g[0] if len(g) == 1 else {"and": g} for g in groups]
    return parts[0] if len(parts) == 1 else {"or": parts}


def _field(cond: Cond) -> str | None:
    if "field" in cond:
        return str(cond["field"])
    if "or" in cond and _same_field_or(cond):
        return _field(cond["or"][0])
    return None


def _same_field_or(cond: Cond) -> bool:
    kids = cond.get("or", [])
    return bool(kids) and all("field" in k for k in kids) and len({k["field"] for k in kids}) == 1


# ---- evaluation ----------------------------------------------------------------------


def canonical(tree: Cond | None) -> Any:
    """A filter in a form where equal meaning compares equal: and/or children sorted,
    nested and/or flattened, single-child groups unwrapped, numbers as floats, "in"
    written as an "or" of equalities and "between" as its two bounds."""
    if tree is None:
        return None
    if "not" in tree:
        return ("not", canonical(tree["not"]))
    for op in ("and", "or"):
        if op in tree:
            kids: list[Any] = []
            for k in tree[op]:
                c = canonical(k)
                kids.extend(c[1] if isinstance(c, tuple) and c[0] == op else [c])
            kids = sorted(set(kids), key=repr)
            return kids[0] if len(kids) == 1 else (op, tuple(kids))
    f, o, v = tree["field"], tree["op"], tree["value"]
    if o == "in":
        return canonical({"or": [{"field": f, "op": "=", "value": x} for x in v]})
    if o == "between":
        return canonical({"and": [{"field": f, "op": ">=", "value": v[0]}, {"field": f, "op": "<=", "value": v[1]}]})
    value = float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
    return (f, o, value)


def load_questions(split: str) -> list[dict[str, Any]]:
    """The evaluation questions of ``split`` (``dev`` or ``heldout``): id, lang, question,
    expected filter (None: the parser should refuse)."""
    import json
    from importlib import resources

    text = resources.files("shoplens").joinpath(f"data/questions_{split}.jsonl").read_text("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def evaluate_questions(splits: tuple[str, ...] = ("dev", "heldout")) -> dict[str, Any]:
    """Exact-semantics accuracy per split and language: a compiled question is right when
    its canonical filter equals the expected one; a refusal is right only where one is
    expected."""
    out: dict[str, Any] = {}
    for split in splits:
        rows = load_questions(split)
        per: dict[str, list[bool]] = {}
        misses = []
        for r in rows:
            got = parse_question(r["question"]).filter
            ok = canonical(got) == canonical(r["expected"])
            per.setdefault(r["lang"], []).append(ok)
            per.setdefault("all", []).append(ok)
            if not ok:
                misses.append({"id": r["id"], "question": r["question"], "expected": r["expected"], "got": got})
        refusals = [r for r in rows if r["expected"] is None]
        out[split] = {"n": len(rows), "refusals_expected": len(refusals),
                      "accuracy": {k: round(sum(v) / len(v), 4) for k, v in per.items()},
                      "correct": {k: sum(v) for k, v in per.items()}, "misses": misses}
    return out
