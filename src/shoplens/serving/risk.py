"""The risk review queue and the decisions analysts record on it.

The queue is read from the serving file (``risk_flags``: MEDIUM and HIGH flags, most
severe first). A decision (``confirmed`` or ``dismissed``, with a note) goes into the
operational store next to the access database (``<store>.access.sqlite``, table
``risk_decisions``), never into the DuckDB store a build locks; the flag's level and
score at the time are kept with it, so the decisions are labels: ``tune`` reports per
flag type how many confirmed at each score and the lowest ``min_score`` that would
have kept the queue's precision at a target (rules/risk.toml).

Flags are for a person to review: nothing here decides credit, prices or eligibility.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from shoplens.errors import NotFoundError, ShopLensError
from shoplens.profiles import RISK_TYPES

DECISIONS = ("confirmed", "dismissed")
QUEUE_LEVELS = ("HIGH", "MEDIUM")
MAX_QUEUE = 1000
DDL = ("CREATE TABLE IF NOT EXISTS risk_decisions (id INTEGER PRIMARY KEY AUTOINCREMENT, customer_id TEXT NOT NULL, "
       "type TEXT NOT NULL, decision TEXT NOT NULL, note TEXT, decided_by TEXT, decided_at REAL, snapshot_id INTEGER, "
       "level TEXT, score REAL)")
NOTICE = ("Risk flags are for a person to review. Do not use them to refuse credit, change prices or decide "
          "eligibility. / 风险标记仅供人工复核，不得据此拒绝授信、调整价格或决定资格。")


class DecisionRequest(BaseModel):
    """An analyst's decision on one flag."""

    model_config = ConfigDict(extra="forbid")
    type: str = Field(max_length=40)
    decision: str = Field(max_length=20)
    note: str = Field(default="", max_length=1000)


def _connect(store_path: Path) -> sqlite3.Connection:
    from shoplens.serving.access import access_path

    db = sqlite3.connect(access_path(store_path), isolation_level=None, timeout=30)
    db.execute(DDL)
    return db


def check_type(flag_type: str | None) -> str | None:
    if flag_type is not None and flag_type not in RISK_TYPES:
        raise ShopLensError(f"unknown risk flag type '{flag_type[:40]}': expected one of {', '.join(RISK_TYPES)}")
    return flag_type


_FLAG = "SELECT customer_id, type, level, recommendation, score, facts, model_version, group_id FROM risk_flags"


def _flag(db: sqlite3.Connection, row: tuple[Any, ...], hidden: Callable[[str], bool] | None = None) -> dict[str, Any]:
    cid, kind, level, rec, score, facts, version, group = row
    out = {"customer_id": cid, "type": kind, "level": level, "recommendation": rec, "score": score,
           "facts": json.loads(facts), "model_version": version}
    if group is not None:  # the accounts linked with this one, as the serving file holds them now
        out["linked_with"] = [r[0] for r in db.execute(
            "SELECT customer_id FROM risk_flags WHERE group_id = ? AND customer_id <> ? ORDER BY customer_id LIMIT 50",
            [group, cid]) if hidden is None or not hidden(r[0])]
    return out


def queue(db: sqlite3.Connection, flag_type: str | None = None, level: str | None = None, limit: int = 100,
          decided: dict[tuple[str, str], str] | None = None,
          hidden: Callable[[str], bool] | None = None) -> list[dict[str, Any]]:
    """MEDIUM and HIGH flags (or one ``level``), most severe first; with ``decided``, the
    flags already decided are left out; ``hidden``: customers not to show (those who
    withdrew profiling since the build)."""
    check_type(flag_type)
    levels = QUEUE_LEVELS if level is None else (level.upper(),)
    if not set(levels) <= {"HIGH", "MEDIUM", "LOW"}:
        raise ShopLensError("level: expected HIGH, MEDIUM or LOW")
    where = f"level IN ({', '.join('?' * len(levels))})" + (" AND type = ?" if flag_type else "")
    params: list[Any] = [*levels, *([flag_type] if flag_type else [])]
    out = []
    for row in db.execute(f"{_FLAG} WHERE {where} ORDER BY level = 'HIGH' DESC, score DESC, customer_id", params).fetchall():
        if (decided and (row[0], row[1]) in decided) or (hidden is not None and hidden(row[0])):
            continue
        out.append(_flag(db, row, hidden))
        if len(out) >= min(limit, MAX_QUEUE):
            break
    return out


def flags_of(db: sqlite3.Connection, cid: str, hidden: Callable[[str], bool] | None = None) -> list[dict[str, Any]]:
    rows = db.execute(f"{_FLAG} WHERE customer_id = ? ORDER BY level = 'HIGH' DESC, score DESC", [cid]).fetchall()
    return [_flag(db, r, hidden) for r in rows]


def decide(store_path: Path, db: sqlite3.Connection, cid: str, flag_type: str, decision: str, note: str, who: str,
           snapshot_id: int | None) -> dict[str, Any]:
    """Record a decision on a flag of the served snapshot (404 when there is none)."""
    check_type(flag_type)
    if decision not in DECISIONS:
        raise ShopLensError(f"decision: expected one of {', '.join(DECISIONS)}")
    row = db.execute("SELECT level, score FROM risk_flags WHERE customer_id = ? AND type = ?", [cid, flag_type]).fetchone()
    if row is None:
        raise NotFoundError("no such risk flag in the current snapshot")
    with _connect(store_path) as ops:
        ops.execute("INSERT INTO risk_decisions (customer_id, type, decision, note, decided_by, decided_at, snapshot_id, "
                    "level, score) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [cid, flag_type, decision, note[:1000], who, time.time(), snapshot_id, row[0], row[1]])
    return {"customer_id": cid, "type": flag_type, "decision": decision, "level": row[0], "score": row[1]}


def decisions(store_path: Path) -> list[dict[str, Any]]:
    """Every recorded decision, latest last (the latest per customer and type counts)."""
    with _connect(store_path) as ops:
        cur = ops.execute("SELECT customer_id, type, decision, note, decided_by, decided_at, snapshot_id, level, score "
                          "FROM risk_decisions ORDER BY id")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def latest(store_path: Path) -> dict[tuple[str, str], str]:
    return {(d["customer_id"], d["type"]): d["decision"] for d in decisions(store_path)}


def tune(store_path: Path, target: float = 0.8) -> list[dict[str, Any]]:
    """Per flag type: decisions, the confirmed share, and the lowest score at which the
    flags at or above it were confirmed at least ``target`` of the time (None: no such
    score, or no decisions yet), to set as ``min_score`` in rules/risk.toml."""
    last: dict[tuple[str, str], dict[str, Any]] = {}
    for d in decisions(store_path):
        last[(d["customer_id"], d["type"])] = d
    out = []
    for kind in RISK_TYPES:
        ds = sorted((d for d in last.values() if d["type"] == kind), key=lambda d: -(d["score"] or 0.0))
        confirmed = sum(d["decision"] == "confirmed" for d in ds)
        suggestion, hits = None, 0
        for i, d in enumerate(ds, start=1):
            hits += d["decision"] == "confirmed"
            if hits / i >= target:
                suggestion = d["score"]
        out.append({"type": kind, "decisions": len(ds), "confirmed": confirmed,
                    "precision": confirmed / len(ds) if ds else None, "suggested_min_score": suggestion})
    return out


def add_routes(app: Any, reader: Any, principal: Any, resolve: Any, store_path: Path,
               hidden: Callable[[str], bool]) -> None:
    """``GET /risk`` (the queue), ``GET /profiles/{id}/risk`` (a customer's flags and the
    decisions on them) and ``POST /profiles/{id}/risk/decisions``: analysts and admins
    only (a service key activates audiences; flags are not for activation). ``hidden``:
    customers who withdrew profiling since the build, shown nowhere."""
    from shoplens.serving.access import require_role
    from shoplens.serving.guard import audit_record

    what = "read or decide risk flags"

    @app.get("/risk")
    def risk_queue(request: Request, type: str | None = Query(default=None, max_length=40),  # noqa: A002
                   level: str | None = Query(default=None, pattern="^(HIGH|MEDIUM|LOW|high|medium|low)$"),
                   limit: int = Query(default=100, ge=1, le=MAX_QUEUE), include_decided: bool = False,
                   x_api_key: str | None = Header(default=None)) -> dict[str, Any]:
        """MEDIUM and HIGH flags, most severe first, with their facts (decided ones left out)."""
        require_role(principal(request, x_api_key), "admin", "analyst", what=what)
        decided = None if include_decided else latest(store_path)
        return {"notice": NOTICE, "flags": queue(reader.db(), type, level, limit, decided, hidden)}

    @app.get("/profiles/{customer_id}/risk")
    def customer_risk(request: Request, customer_id: str, x_api_key: str | None = Header(default=None)) -> dict[str, Any]:
        record = audit_record(request)
        who = principal(request, x_api_key)
        require_role(who, "admin", "analyst", what=what)
        cid = resolve(who, customer_id, record)
        if reader.db().execute("SELECT 1 FROM flat WHERE customer_id = ?", [cid]).fetchone() is None or hidden(cid):
            raise NotFoundError("customer not found in the current snapshot")
        record.path, record.customer_id = f"/profiles/{cid}/risk", cid
        mine = [d for d in decisions(store_path) if d["customer_id"] == cid]
        return {"notice": NOTICE, "customer_id": cid, "flags": flags_of(reader.db(), cid, hidden), "decisions": mine}

    @app.post("/profiles/{customer_id}/risk/decisions")
    def risk_decision(request: Request, customer_id: str, body: DecisionRequest,
                      x_api_key: str | None = Header(default=None)) -> dict[str, Any]:
        """Confirm or dismiss a flag; kept in the operational store as a label."""
        record = audit_record(request)
        who = principal(request, x_api_key)
        require_role(who, "admin", "analyst", what=what)
        cid = resolve(who, customer_id, record)
        if hidden(cid):
            raise NotFoundError("no such risk flag in the current snapshot")
        out = decide(store_path, reader.db(), cid, body.type, body.decision, body.note, who.name,
                     reader.snapshot_id(fresh=False))
        record.path, record.customer_id = f"/profiles/{cid}/risk/decisions", cid
        return out
