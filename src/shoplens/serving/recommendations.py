"""Recommendations read from the serving file, filtered at request time without
recomputing: per customer (``GET /profiles/{id}/recommendations``, ``shoplens
recommend``), item to item (``GET /products/{id}/similar``), and for a visitor the build
never saw, from the products they are looking at or bought (``POST /recommendations``).

A list shorter than asked after the filters is filled from the popular list of the
customer's segment (or the whole shop; these top-ups are not checked against what the
customer bought: the serving file keeps purchases only for the pooled products), and
every answer says what served it: ``model``,
or a ``fallback:...`` (``popular``, ``segment``, ``history``, ``no_consent``).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar

from shoplens.errors import NotFoundError, StoreError
from shoplens.recommend.reasons import Reasons

MAX_N = 100
P = ParamSpec("P")
T = TypeVar("T")
_COLS = "rank, product_id, name, category, score, source, reason, reason_zh"


def _rows(cur: sqlite3.Cursor) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description or []]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _category_clause(category: str | None, column: str = "category") -> tuple[str, list[Any]]:
    """A category and everything under it ('数码' matches '数码/耳机')."""
    if not category:
        return "", []
    return f" AND ({column} = ? OR substr({column}, 1, ?) = ?)", [category, len(category) + 1, category + "/"]


def _served(fn: Callable[P, T]) -> Callable[P, T]:
    """A serving file published before the recommend stage has none of its tables:
    a clear error, found when a query fails rather than checked on every request."""
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except sqlite3.OperationalError as err:
            if "no such table" not in str(err):
                raise
            raise StoreError("the served snapshot has no recommendations: run 'shoplens build'") from None
    return wrapper


def _fill(db: sqlite3.Connection, out: list[dict[str, Any]], n: int, segment: str | None, category: str | None,
          reasons: Reasons, skip: set[str]) -> None:
    """Top up ``out`` to ``n`` from the segment's popular list, then the shop's."""
    where, params = _category_clause(category, "p.category")
    for seg in ([segment] if segment else []) + ["*"]:
        if len(out) >= n:
            return
        have = {r["product_id"] for r in out} | skip
        cur = db.execute(
            f"SELECT f.product_id, p.name, p.category, f.score FROM recommend_fallback f "
            f"JOIN products p USING (product_id) WHERE f.segment = ?{where} "
            "ORDER BY f.rank", [seg, *params])
        source = "segment_popular" if seg != "*" else "popular"
        en, zh = reasons.render(source, {"group": seg})
        for pid, name, cat, score in cur.fetchall():
            if len(out) >= n:
                return
            if pid not in have:
                out.append({"rank": len(out) + 1, "product_id": pid, "name": name, "category": cat, "score": score,
                            "source": f"fallback:{'segment' if seg != '*' else 'popular'}", "reason": en, "reason_zh": zh})


@_served
def for_customer(db: sqlite3.Connection, cid: str, n: int = 10, category: str | None = None,
                 exclude_purchased: bool = False, personalised: bool = True,
                 reasons: Reasons | None = None) -> dict[str, Any]:
    """The customer's list after the filters. ``personalised`` False (consent withdrawn
    since the build) serves the shop's popular list."""
    reasons = reasons or Reasons.load()
    n = max(1, min(int(n), MAX_N))
    seg = db.execute("SELECT segment_name FROM flat WHERE customer_id = ?", [cid]).fetchone()
    out: list[dict[str, Any]] = []
    served = "fallback:no_consent" if not personalised else "fallback:popular"
    if personalised:  # the whole pool (at most [rules] pool rows) in one read, filtered here
        limit = "" if category or exclude_purchased else f" LIMIT {n}"  # n is an int within 1..MAX_N
        pool_rows = _rows(db.execute(
            f"SELECT {_COLS}, purchased FROM recommendations WHERE customer_id = ? ORDER BY rank{limit}", [cid]))
        if pool_rows:
            head = pool_rows[0]["source"].split(",")[0]
            served = head if head.startswith("fallback:") else "model"
        prefix = category + "/" if category else ""
        for r in pool_rows:
            purchased = r.pop("purchased")
            if (category and r["category"] != category and not str(r["category"]).startswith(prefix)) or \
                    (exclude_purchased and purchased):
                continue
            out.append(r)
            if len(out) >= n:
                break
    pool = {r["product_id"] for r in out}
    for i, r in enumerate(out, 1):
        r["rank"] = i
    _fill(db, out, n, seg[0] if seg and personalised else None, category, reasons, pool)
    if not personalised:
        for r in out:
            r["source"] = "fallback:no_consent"
    return {"customer_id": cid, "in_build": seg is not None, "served": served, "n": n,
            "filters": {"category": category, "exclude_purchased": exclude_purchased}, "recommendations": out}


@_served
def similar(db: sqlite3.Connection, product_id: str, n: int = 10, kind: str | None = None) -> dict[str, Any]:
    """Products bought together / viewed together with ``product_id``."""
    product = db.execute("SELECT product_id, name, category FROM products WHERE product_id = ?", [product_id]).fetchone()
    if product is None:
        raise NotFoundError("product not found in the current snapshot")
    n = max(1, min(int(n), MAX_N))
    kinds = [kind] if kind else ["bought_together", "viewed_together"]
    out: dict[str, list[dict[str, Any]]] = {}
    for k in kinds:
        out[k] = _rows(db.execute(
            "SELECT s.rank, s.similar_id AS product_id, p.name, p.category, round(s.score, 4) AS score "
            "FROM product_similar s JOIN products p ON p.product_id = s.similar_id "
            "WHERE s.product_id = ? AND s.kind = ? ORDER BY s.rank LIMIT ?", [product_id, k, n]))
    return {"product_id": product[0], "name": product[1], "category": product[2], "similar": out}


@_served
def for_products(db: sqlite3.Connection, products: Sequence[str], n: int = 10, category: str | None = None,
                 segment: str | None = None, reasons: Reasons | None = None) -> dict[str, Any]:
    """A list for a visitor the build never saw, from the products they viewed or bought
    (no retrain: the published item-to-item neighbours), topped up from popularity."""
    reasons = reasons or Reasons.load()
    n = max(1, min(int(n), MAX_N))
    given = list(dict.fromkeys(str(p) for p in products))[:MAX_N]
    marks = ", ".join("?" * len(given)) or "NULL"
    where, params = _category_clause(category, "p.category")
    scores = db.execute(
        f"SELECT s.similar_id, p.name, p.category, sum(s.score) AS score FROM product_similar s "
        f"JOIN products p ON p.product_id = s.similar_id WHERE s.product_id IN ({marks}) "
        f"AND s.similar_id NOT IN ({marks}){where} "
        "GROUP BY 1, 2, 3 ORDER BY score DESC, 1 LIMIT ?", [*given, *given, *params, n]).fetchall()
    names = dict(db.execute(f"SELECT product_id, name FROM products WHERE product_id IN ({marks})", given).fetchall())
    out: list[dict[str, Any]] = []
    for pid, name, cat, score in scores:
        # the given products that weigh most in this score, the same sum's terms
        top = db.execute(f"SELECT product_id FROM product_similar WHERE similar_id = ? AND product_id IN ({marks}) "
                         "GROUP BY 1 ORDER BY sum(score) DESC LIMIT 2", [pid, *given]).fetchall()
        en, zh = reasons.render("related", {"items": [names.get(t[0], t[0]) for t in top]})
        out.append({"rank": len(out) + 1, "product_id": pid, "name": name, "category": cat, "score": round(score, 4),
                    "source": "fallback:history", "reason": en, "reason_zh": zh})
    served = "fallback:history" if out else ("fallback:segment" if segment else "fallback:popular")
    _fill(db, out, n, segment, category, reasons, set(given))
    return {"served": served, "n": n, "known_products": sorted(names), "unknown_products": sorted(set(given) - set(names)),
            "filters": {"category": category, "segment": segment}, "recommendations": out}
