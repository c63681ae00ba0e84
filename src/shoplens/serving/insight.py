"""Product and service insight read from the serving file (``aspect_insight``,
``aspect_quotes``, ``aspect_alerts``, ``segment_aspects``, copied from the snapshot at
publish): the fix-first list with each row's complaint groups, the figures per product,
category or brand, the alerts and segments x aspects. Figures under the evidence
threshold come back as null with ``shown: false``. Shared by the CLI and the
``/insight`` routes (analyst and admin keys)."""

from __future__ import annotations

import sqlite3
from typing import Any

from fastapi import Header, Query, Request

from shoplens.errors import ShopLensError, StoreError

MAX_ROWS = 1000
TABLES = {
    "aspect_insight": "level TEXT, key TEXT, name TEXT, category TEXT, aspect TEXT, mentions INTEGER, customers INTEGER, "
                      "complainers INTEGER, negative_share REAL, ci_low REAL, ci_high REAL, prev_negative_share REAL, "
                      "change REAL, category_negative_share REAL, difference REAL, return_rate REAL, "
                      "category_return_rate REAL, revenue REAL, revenue_at_risk REAL, fix_rank INTEGER, shown INTEGER",
    "aspect_quotes": "customer_id TEXT, text_id TEXT, product_id TEXT, aspect TEXT, evidence TEXT, created_at TEXT, "
                     "group_id TEXT, group_size INTEGER, group_label TEXT",
    "aspect_alerts": "product_id TEXT, name TEXT, category TEXT, aspect TEXT, week TEXT, complaints INTEGER, "
                     "customers INTEGER, texts INTEGER, share REAL, baseline_share REAL, p_value REAL, q_value REAL",
    "segment_aspects": "segment_id INTEGER, segment TEXT, aspect TEXT, customers INTEGER, complainers INTEGER, "
                       "complainer_share REAL, mean_polarity REAL, clv_at_stake REAL, shown INTEGER",
    "demand_forecast": "segment_id INTEGER, segment TEXT, category TEXT, week TEXT, units REAL, units_lo_80 REAL, "
                       "units_hi_80 REAL, units_lo_95 REAL, units_hi_95 REAL, revenue REAL, revenue_lo_80 REAL, "
                       "revenue_hi_80 REAL, revenue_lo_95 REAL, revenue_hi_95 REAL, units_bottom_up REAL, "
                       "revenue_bottom_up REAL, model TEXT, disagreement REAL",
}


def _rows(cur: sqlite3.Cursor) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description or []]
    out = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    for r in out:
        if "shown" in r:
            r["shown"] = bool(r["shown"])
    return out


def _query(db: sqlite3.Connection, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    try:
        return _rows(db.execute(sql, params))
    except sqlite3.OperationalError as err:
        if "no such table" not in str(err):
            raise
        raise StoreError("the served snapshot has no insight tables: run 'shoplens build'") from None


def _text(value: str | None, what: str) -> str | None:
    if value is not None and (len(value) > 200 or "\x00" in value):
        raise ShopLensError(f"{what}: at most 200 characters, no NUL")
    return value or None


def complaint_groups(db: sqlite3.Connection, product_id: str, aspect: str, k: int = 3) -> list[dict[str, Any]]:
    """The largest complaint groups of a product x aspect: size, label, one quote each."""
    groups = _query(db, "SELECT group_id, max(group_size) AS customers, max(group_label) AS label, min(evidence) AS quote "
                        "FROM aspect_quotes WHERE product_id = ? AND aspect = ? GROUP BY group_id "
                        "ORDER BY customers DESC, group_id LIMIT ?", [product_id, aspect, k])
    return [{k2: v for k2, v in g.items() if k2 != "group_id"} for g in groups]


def fix_first(db: sqlite3.Connection, category: str | None = None, aspect: str | None = None,
              limit: int = 20) -> list[dict[str, Any]]:
    """Products x aspects ranked by revenue at risk, each with its complaint groups."""
    where, params = "level = 'product' AND fix_rank IS NOT NULL", list[Any]()
    if (cat := _text(category, "category")) is not None:
        where += " AND (category = ? OR substr(category, 1, ?) = ?)"
        params += [cat, len(cat) + 1, f"{cat}/"]
    if (asp := _text(aspect, "aspect")) is not None:
        where += " AND aspect = ?"
        params.append(asp)
    rows = _query(db, f"SELECT * FROM aspect_insight WHERE {where} ORDER BY fix_rank LIMIT ?", [*params, min(limit, MAX_ROWS)])
    for r in rows:
        r["complaints"] = complaint_groups(db, r["key"], r["aspect"])
    return rows


def aspect_figures(db: sqlite3.Connection, level: str = "category", key: str | None = None,
                   limit: int = 200) -> list[dict[str, Any]]:
    if level not in ("product", "category", "brand"):
        raise ShopLensError("level: expected product, category or brand")
    where, params = "level = ?", [level]
    if (chosen := _text(key, "key")) is not None:
        where += " AND key = ?"
        params.append(chosen)
    return _query(db, f"SELECT * FROM aspect_insight WHERE {where} ORDER BY shown DESC, key, aspect LIMIT ?",
                  [*params, min(limit, MAX_ROWS)])


def alerts(db: sqlite3.Connection, limit: int = 100) -> list[dict[str, Any]]:
    rows = _query(db, "SELECT * FROM aspect_alerts ORDER BY week DESC, q_value LIMIT ?", [min(limit, MAX_ROWS)])
    for r in rows:
        r["week"] = str(r["week"])[:10]
    return rows


def segments(db: sqlite3.Connection) -> list[dict[str, Any]]:
    return _query(db, "SELECT * FROM segment_aspects ORDER BY segment_id, aspect", [])


def demand(db: sqlite3.Connection, segment: str | None = None, category: str | None = None) -> list[dict[str, Any]]:
    """Weekly units and revenue per segment x category ahead, both sides and intervals."""
    where, params = "1 = 1", list[Any]()
    if (seg := _text(segment, "segment")) is not None:
        where += " AND (segment = ? OR CAST(segment_id AS TEXT) = ?)"
        params += [seg, seg]
    if (cat := _text(category, "category")) is not None:
        where += " AND category = ?"
        params.append(cat)
    rows = _query(db, f"SELECT * FROM demand_forecast WHERE {where} ORDER BY segment_id, category, week LIMIT ?",
                  [*params, MAX_ROWS * 10])
    for r in rows:
        r["week"] = str(r["week"])[:10]
    return rows


def add_routes(app: Any, reader: Any, principal: Any) -> None:
    """``GET /insight/products|aspects|alerts|segments|demand`` (analyst and admin keys)."""
    from shoplens.serving.access import require_role

    def allowed(request: Request, key: str | None) -> sqlite3.Connection:
        require_role(principal(request, key), "admin", "analyst", what="read product insight")
        return reader.db()

    @app.get("/insight/products")
    def insight_products(request: Request, category: str | None = Query(default=None, max_length=200),
                         aspect: str | None = Query(default=None, max_length=40),
                         limit: int = Query(default=20, ge=1, le=MAX_ROWS),
                         x_api_key: str | None = Header(default=None)) -> dict[str, Any]:
        """What to fix first: products x aspects ranked by revenue at risk, with complaint groups."""
        return {"products": fix_first(allowed(request, x_api_key), category, aspect, limit)}

    @app.get("/insight/aspects")
    def insight_aspects(request: Request, level: str = Query(default="category", pattern="^(product|category|brand)$"),
                        key: str | None = Query(default=None, max_length=200),
                        limit: int = Query(default=200, ge=1, le=MAX_ROWS),
                        x_api_key: str | None = Header(default=None)) -> dict[str, Any]:
        return {"aspects": aspect_figures(allowed(request, x_api_key), level, key, limit)}

    @app.get("/insight/alerts")
    def insight_alerts(request: Request, limit: int = Query(default=100, ge=1, le=MAX_ROWS),
                       x_api_key: str | None = Header(default=None)) -> dict[str, Any]:
        return {"alerts": alerts(allowed(request, x_api_key), limit)}

    @app.get("/insight/demand")
    def insight_demand(request: Request, segment: str | None = Query(default=None, max_length=200),
                       category: str | None = Query(default=None, max_length=200),
                       x_api_key: str | None = Header(default=None)) -> dict[str, Any]:
        """Weekly units and revenue ahead per segment x category: the time-series forecast
        with 80%/95% intervals, the bottom-up one, and their disagreement."""
        return {"demand": demand(allowed(request, x_api_key), segment, category)}

    @app.get("/insight/segments")
    def insight_segments(request: Request, x_api_key: str | None = Header(default=None)) -> dict[str, Any]:
        return {"segments": segments(allowed(request, x_api_key))}


def write_tables(store: Any, db: sqlite3.Connection, snap: int, batch: int = 50_000) -> None:
    """Copy the insight tables into a serving file (empty before the insight stage)."""
    for name, columns in TABLES.items():
        db.execute(f"CREATE TABLE {name} ({columns})")
        if not store.has_snapshot_table(snap, name):
            continue
        cur = store.con.cursor()
        cur.execute(f"SELECT * FROM snap_{snap}.{name}")
        width = len(cur.description or [])
        while rows := cur.fetchmany(batch):
            db.executemany(f"INSERT INTO {name} VALUES ({', '.join('?' * width)})",
                           [tuple(str(v) if hasattr(v, "isoformat") else v for v in r) for r in rows])
    db.execute("CREATE INDEX aspect_quotes_product ON aspect_quotes (product_id, aspect)")
    db.execute("CREATE INDEX aspect_insight_rank ON aspect_insight (level, fix_rank)")


__all__ = ["TABLES", "add_routes", "alerts", "aspect_figures", "demand", "fix_first", "segments", "write_tables"]
