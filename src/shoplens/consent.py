"""Consent and purpose (docs/consent.md): what each customer allowed, and the checks
every use of a profile makes.

A customer's consent is a list of records (the canonical ``consents`` table, plus
changes recorded through the CLI or the API in the operational ledger): each grants or
withdraws one purpose, on one channel or on ``any``. For every *consent key* (a
purpose, or a purpose on a channel: ``marketing_sms``) the latest record that names the
key's channel or ``any`` decides (the channel's own record wins a tie); without one,
``[consent] defaults`` apply (deny by default for marketing and sharing).

Where it is enforced:

- the build reads canonical tables through ``ConsentedEngine``: customers without
  profiling consent, and their orders, events and texts, never reach a stage (no
  features, models, segments or profile); the ``consent`` stage writes every
  customer's state as ``customer_consent``;
- serving: audiences and exports that name a channel keep only customers whose
  consent for that channel holds, and say how many were left out and why; changes
  recorded after the build take effect at once (``Ledger``, the suppression set the
  API checks), and are folded into the store at the next build.

No library covers per-figure purpose checks (Unomi, Segment and Dynamics keep consent
records but leave the checks to each use), so this module is ours.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import ibis

from shoplens.config import Config, ConsentConfig
from shoplens.engine.base import number
from shoplens.errors import ConsentError
from shoplens.schema import CONSENT_CHANNELS, CONSENT_PURPOSES

# the channels each purpose is given per ("any" only: one consent for the purpose)
PURPOSE_CHANNELS: dict[str, tuple[str, ...]] = {
    "profiling": ("any",), "personalisation": ("any",),
    "marketing": ("sms", "email", "push", "phone"), "sharing": ("ads", "export"),
}
KEYS: tuple[tuple[str, str, str], ...] = tuple(
    (purpose if channel == "any" else f"{purpose}_{channel}", purpose, channel)
    for purpose, channels in PURPOSE_CHANNELS.items() for channel in channels)
KEY_NAMES = tuple(k for k, _p, _c in KEYS)
# the tables a customer's consent governs in the build (order lines through their order)
GOVERNED = ("customers", "orders", "order_items", "events", "texts")

# what each purpose serves, for the data-use report (docs/consent.md)
USES: dict[str, dict[str, Any]] = {
    "profiling": {
        "en": "customer profiles, behaviour features, text analysis, CLV/churn/propensity models, segments and personas",
        "zh": "用户画像、行为特征、文本分析、CLV/流失/购买倾向模型、分群与人群画像",
        "data": ["customers (non-PII attributes)", "orders", "order_items", "events", "texts (masked)"],
        "models": ["BG/NBD", "Gamma-Gamma", "LightGBM propensity", "k-means segments", "text analysers"]},
    "personalisation": {
        "en": "recommendations for the customer", "zh": "个性化推荐",
        "data": ["orders", "order_items", "events", "texts (masked)"], "models": ["hybrid recommender (the recommend stage)"]},
    "marketing": {
        "en": "audiences and exports for a contact channel (sms, email, push, phone)",
        "zh": "按渠道（短信、邮件、推送、电话）的营销人群与导出",
        "data": ["profile fields used in the audience filter"], "models": ["segments, predictions (as filters)"]},
    "sharing": {
        "en": "exports leaving the shop: ad platforms, data exports with match keys",
        "zh": "对外共享：广告平台、带匹配键的数据导出",
        "data": ["profile fields in the export"], "models": []},
}


def consent_key(purpose: str, channel: str = "any") -> str:
    """The key a (purpose, channel) pair is checked under.

    >>> consent_key("marketing", "sms"), consent_key("profiling")
    ('marketing_sms', 'profiling')
    """
    if purpose not in PURPOSE_CHANNELS:
        raise ConsentError(f"unknown purpose '{purpose}'; expected one of {', '.join(PURPOSE_CHANNELS)}")
    channels = PURPOSE_CHANNELS[purpose]
    if channels == ("any",):
        if channel != "any":
            raise ConsentError(f"{purpose} consent is one for every channel: give channel 'any', not '{channel}'")
        return purpose
    if channel not in channels:
        raise ConsentError(f"{purpose} consent is given per channel: one of {', '.join(channels)}")
    return f"{purpose}_{channel}"


def channel_key(channel: str) -> str:
    """The key an audience or export for ``channel`` needs (sms -> marketing_sms, ads -> sharing_ads)."""
    for key, _purpose, ch in KEYS:
        if ch == channel:
            return key
    raise ConsentError(f"unknown channel '{channel}'; expected one of "
                       f"{', '.join(c for _k, _p, c in KEYS if c != 'any')}")


def covers(key: str) -> tuple[str, tuple[str, ...]]:
    """(purpose, channels) whose records decide ``key``: its own channel and ``any``."""
    for k, purpose, channel in KEYS:
        if k == key:
            return purpose, tuple(dict.fromkeys((channel, "any")))
    raise ConsentError(f"unknown consent key '{key}'")


def state_expr(customers: Any, consents: Any, cfg: ConsentConfig, keys: Iterable[str] = KEY_NAMES) -> Any:
    """Every customer's consent per key (an Ibis table: ``customer_id`` and one boolean
    per key of ``keys``), from the consent records and the defaults."""
    out = customers.select("customer_id")
    for key in (k for k in KEY_NAMES if k in set(keys)):
        purpose, channels = covers(key)
        c = consents.filter((consents.purpose == purpose) & consents.channel.isin(list(channels)))
        order = [c.consent_ts.desc(), (c.channel == "any").cast("int8")]  # the channel's own record wins a tie
        latest = c.mutate(_k=ibis.row_number().over(group_by=c.customer_id, order_by=order)).filter(lambda t: t._k == 0)
        latest = latest.select(cid=latest.customer_id, granted=latest.status == "granted")
        out = out.left_join(latest, out.customer_id == latest.cid)
        out = out.mutate(**{key: out.granted.fill_null(cfg.default(purpose))}).drop("cid", "granted")
    return out


def allowed_expr(customers: Any, consents: Any, cfg: ConsentConfig, key: str = "profiling") -> Any:
    """The customers whose ``key`` consent holds (an Ibis table of ``cid``)."""
    state = state_expr(customers, consents, cfg, (key,))
    return state.filter(state[key]).select(cid=state.customer_id)


class ConsentedEngine:
    """An engine whose canonical tables hold only customers with profiling consent (and
    their orders, order lines, events and texts): what every build stage reads. The
    fingerprints of those tables change with who is allowed, so a profiling withdrawal
    re-runs the stages and any other consent change none of them."""

    def __init__(self, engine: Any, cfg: Config) -> None:
        self.unfiltered = engine
        self.cfg = cfg.consent
        self._everyone: bool | None = None
        self._signature: str | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.unfiltered, name)

    def _allowed(self) -> Any:
        e = self.unfiltered
        return allowed_expr(e.table("customers"), e.table("consents"), self.cfg)

    def everyone_allowed(self) -> bool:
        """Whether every customer consents to profiling (then nothing is filtered: the
        common case costs one count per build)."""
        if self._everyone is None:
            e = self.unfiltered
            state = state_expr(e.table("customers"), e.table("consents"), self.cfg, ("profiling",))
            self._everyone = number(e, (~state.profiling).cast("int64").sum()) == 0
        return self._everyone

    def table(self, name: str, snapshot: Any = None) -> Any:
        t = self.unfiltered.table(name, snapshot)
        if snapshot is not None or name not in GOVERNED or self.everyone_allowed():
            return t
        allowed = self._allowed()
        if name == "order_items":
            orders = self.unfiltered.table("orders")
            kept = orders.semi_join(allowed, orders.customer_id == allowed.cid).select(oid=orders.order_id)
            return t.semi_join(kept, t.order_id == kept.oid)
        return t.semi_join(allowed, t.customer_id == allowed.cid)

    def fingerprint(self, name: str) -> str:
        """The table's own fingerprint and, for governed tables, who is allowed: a change
        of marketing consent re-runs no stage, a profiling withdrawal re-runs them all."""
        own = self.unfiltered.fingerprint(name)
        if name not in GOVERNED:
            return own
        if self._signature is None:
            if self.everyone_allowed():
                self._signature = "everyone"
            else:
                a = self._allowed()
                row = self.unfiltered.collect(a.agg(n=a.count(), h=(a.cid.hash() % 1_000_000_007).sum())).to_pylist()[0]
                self._signature = f"{row['n']}:{row['h']}"
        return f"{own}/profiling:{self._signature}"


# ---- the ledger: changes recorded after a build (the suppression set serving checks) ----

LEDGER_DDL = (
    "CREATE TABLE IF NOT EXISTS consent_changes (id INTEGER PRIMARY KEY AUTOINCREMENT, customer_id TEXT NOT NULL, "
    "purpose TEXT NOT NULL, channel TEXT NOT NULL, status TEXT NOT NULL, consent_ts TEXT NOT NULL, source TEXT, "
    "imported_by INTEGER)"
)


@dataclass(frozen=True)
class Change:
    customer_id: str
    purpose: str
    channel: str
    status: str
    consent_ts: str
    source: str


def ledger_path(store_path: Path) -> Path:
    from shoplens.serving.access import (
        access_path,  # the operational store: keys, audit, consent changes
    )

    return access_path(store_path)


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, timeout=30)
    db.execute(LEDGER_DDL)
    return db


def normalise(purpose: str, channel: str, status: str) -> tuple[str, str, str]:
    """Canonical spellings (the same synonyms ingest accepts), or a clear error."""
    def pick(value: str, spellings: dict[str, tuple[str, ...]], what: str) -> str:
        v = value.strip().lower()
        for canonical, words in spellings.items():
            if v in words:
                return canonical
        raise ConsentError(f"unknown {what} '{value}'; expected one of {', '.join(spellings)}")

    from shoplens.schema import CONSENT_STATUSES

    p, c, s = (pick(purpose, CONSENT_PURPOSES, "purpose"), pick(channel, CONSENT_CHANNELS, "channel"),
               pick(status, CONSENT_STATUSES, "status"))
    if c != "any":
        consent_key(p, c)  # the channel must be one of the purpose's
    return p, c, s


def record_change(store_path: Path, customer_id: str, purpose: str, channel: str, status: str, source: str,
                  timezone: str = "UTC") -> Change:
    """Record a grant or withdrawal now (in the shop's ``timezone``, as the store keeps
    times): serving honours it at once, the next build folds it into the store."""
    from zoneinfo import ZoneInfo

    p, c, s = normalise(purpose, channel, status)
    now = datetime.now(ZoneInfo(timezone)).replace(tzinfo=None, microsecond=0)
    change = Change(customer_id, p, c, s, now.isoformat(sep=" "), source)
    with _connect(ledger_path(store_path)) as db:
        db.execute("INSERT INTO consent_changes (customer_id, purpose, channel, status, consent_ts, source) "
                   "VALUES (?, ?, ?, ?, ?, ?)", [change.customer_id, p, c, s, change.consent_ts, source])
    return change


def pending_changes(store_path: Path, after_snapshot: int | None = None) -> list[Change]:
    """Changes not yet in a snapshot at or before ``after_snapshot`` (None: not imported)."""
    path = ledger_path(store_path)
    if not path.exists():
        return []
    with _connect(path) as db:
        rows = db.execute("SELECT customer_id, purpose, channel, status, consent_ts, source FROM consent_changes "
                          "WHERE imported_by IS NULL OR imported_by > ? ORDER BY id",
                          [-1 if after_snapshot is None else after_snapshot]).fetchall()
    return [Change(*r) for r in rows]


def import_changes(store: Any, store_path: Path, snapshot_id: int) -> int:
    """Fold the ledger's new changes into the store's ``consents`` (the build calls this
    before its stages); returns how many. They stay in the ledger, marked with the
    snapshot that took them, so serving stops applying them once that snapshot is live."""
    path = ledger_path(store_path)
    if not path.exists():
        return 0
    with _connect(path) as db:
        rows = db.execute("SELECT id, customer_id, purpose, channel, status, consent_ts, source FROM consent_changes "
                          "WHERE imported_by IS NULL ORDER BY id").fetchall()
        if not rows:
            return 0
        with store.transaction():
            ingest_id = int(store.scalar("SELECT nextval('ingest_seq')"))
            store.con.execute("INSERT INTO ingest_log VALUES (?, 'consent changes (CLI/API)', 'consents', NULL, now(), "
                              "now(), ?, ?, 0, 0, false)", [ingest_id, len(rows), len(rows)])
            store.con.executemany(
                "INSERT INTO consents SELECT ?, ?, ?, ?, CAST(? AS TIMESTAMP), ?, ?, ?, 'ledger' WHERE NOT EXISTS "
                "(SELECT 1 FROM consents WHERE customer_id = ? AND purpose = ? AND channel = ? AND consent_ts = CAST(? AS TIMESTAMP))",
                [[cid, p, c, s, ts, src, ingest_id, rid, cid, p, c, ts] for rid, cid, p, c, s, ts, src in rows])
        db.executemany("UPDATE consent_changes SET imported_by = ? WHERE id = ?", [[snapshot_id, r[0]] for r in rows])
    return len(rows)


class Ledger:
    """The serving side's view of the changes a live snapshot does not hold yet: per
    customer, the latest status per consent key. Re-read when the ledger file changes
    (checked at most every ``every_s``), so a change made by the CLI shows within that."""

    def __init__(self, store_path: Path, every_s: float = 0.5) -> None:
        self.store_path = store_path
        self.every_s = every_s
        self._lock = threading.Lock()
        self._checked = 0.0
        self._seen: tuple[Any, ...] = ()
        self._snapshot: int | None = None
        self._state: dict[str, dict[str, bool]] = {}

    def _signature(self) -> tuple[Any, ...]:
        path = ledger_path(self.store_path)
        if not path.exists():
            return ()
        with _connect(path) as db:
            return tuple(db.execute("SELECT count(*), max(id), count(imported_by) FROM consent_changes").fetchone())

    def state(self, snapshot: int | None) -> dict[str, dict[str, bool]]:
        """customer -> {consent key: granted} for the changes ``snapshot`` lacks."""
        now = time.monotonic()
        with self._lock:
            if now - self._checked >= self.every_s or snapshot != self._snapshot:
                self._checked = now
                sig = self._signature()
                if sig != self._seen or snapshot != self._snapshot:
                    self._seen, self._snapshot = sig, snapshot
                    self._state = fold(pending_changes(self.store_path, snapshot))
            return self._state

    def refresh(self) -> None:
        with self._lock:
            self._checked = 0.0

    def denied(self, snapshot: int | None, key: str) -> set[str]:
        """Customers who withdrew ``key`` after the snapshot was built."""
        return {cid for cid, keys in self.state(snapshot).items() if keys.get(key) is False}

    def granted(self, snapshot: int | None, key: str) -> set[str]:
        return {cid for cid, keys in self.state(snapshot).items() if keys.get(key) is True}


def withdrew_profiling(ledger: Ledger, reader: Any, cid: str) -> bool:
    """Whether ``cid`` withdrew profiling after the served snapshot was built: their
    profile is no longer shown, by the API or the CLI. Call it after a read: it takes
    the snapshot of the file that read used."""
    return ledger.state(reader.snapshot_id(fresh=False)).get(cid, {}).get("profiling") is False


def fold(changes: Iterable[Change]) -> dict[str, dict[str, bool]]:
    """The latest status per customer and key from changes in time order (a record on
    ``any`` applies to every channel of its purpose)."""
    state: dict[str, dict[str, bool]] = {}
    for ch in sorted(changes, key=lambda c: c.consent_ts):
        keys = [k for k, p, c in KEYS if p == ch.purpose and (ch.channel in ("any", c))]
        for k in keys:
            state.setdefault(ch.customer_id, {})[k] = ch.status == "granted"
    return state


# ---- the build stage ------------------------------------------------------------------

def _consent_schema() -> Any:
    import pyarrow as pa

    return pa.schema([("customer_id", pa.string())] + [(k, pa.bool_()) for k in KEY_NAMES])


class ConsentStage:
    """Every customer's consent per key as of the build (``customer_consent``), those
    without profiling consent included: serving, the audiences and the data-use report
    read it. Runs on the unfiltered tables."""

    name = "consent"
    version = 1
    needs = ("customers", "consents")

    @property
    def makes(self) -> tuple[Any, ...]:
        from shoplens.pipeline.stage import TableSpec

        return (TableSpec("customer_consent", _consent_schema(), ("customer_id",)),)

    def skip_reason(self, cfg: Config) -> str | None:
        return None

    def settings(self, cfg: Config, snapshot: Any) -> dict[str, Any]:
        return cfg.consent.model_dump()

    def run(self, ctx: Any) -> Any:
        from shoplens.pipeline.stage import StageReport

        engine = getattr(ctx.engine, "unfiltered", ctx.engine)
        ctx.write(self.makes[0], state_expr(engine.table("customers"), engine.table("consents"), ctx.cfg.consent))
        counts = engine.collect(ctx.engine.table("customer_consent", ctx.snapshot).agg(
            customers=ibis._.count(), **{k: ibis._[k].cast("int64").sum() for k in KEY_NAMES})).to_pylist()[0]
        return StageReport(summary={"consented": counts})

    def on_reuse(self, ctx: Any, source: Any) -> None:
        return None


# ---- audiences and exports ----------------------------------------------------------------

@dataclass
class Selection:
    """An audience after the consent checks, as a condition on the serving file's
    ``flat`` (so counting and paging stay in SQLite): how many the filter matched, how
    many were kept, and per reason how many consent left out."""

    where: str  # the filter and the consent checks, over ``flat``
    params: list[Any]
    matched: int  # what the filter alone selects
    kept: int
    channel: str | None
    key: str | None
    excluded: dict[str, int]

    def ids(self, db: sqlite3.Connection, limit: int | None = None, offset: int = 0) -> list[str]:
        """The kept customers' ids in id order (a page of them with ``limit``)."""
        page = "" if limit is None else f" LIMIT {int(limit)} OFFSET {int(offset)}"
        return [r[0] for r in db.execute(f"SELECT customer_id FROM flat WHERE {self.where} ORDER BY customer_id{page}",
                                         self.params)]

    def report(self) -> dict[str, Any]:
        return {"channel": self.channel, "consent_key": self.key, "matched_by_filter": self.matched,
                "excluded": self.excluded, "kept": self.kept}


EXCLUDED_REASONS = {
    "no_consent": ("no consent for this channel at the last build", "上次构建时未授权该渠道"),
    "withdrawn_since_build": ("withdrawn since the last build", "上次构建后撤回授权"),
}


def select(db: sqlite3.Connection, where: str, params: list[Any], channel: str | None, ledger: Ledger | None,
           snapshot: int | None) -> Selection:
    """The customers of the serving file's ``flat`` matching ``where`` whose consent
    allows ``channel`` (None: an audience for analysis only, inside ShopLens): the
    consent state of the build, minus withdrawals recorded since (``ledger``). A
    withdrawal of profiling removes a customer from every audience."""
    key = None if channel is None else channel_key(channel)

    def count(cond: str, args: list[Any]) -> int:
        return int(db.execute(f"SELECT count(*) FROM flat WHERE {cond}", args).fetchone()[0])

    cond, args = f"({where})", list(params)
    matched = count(cond, args)
    excluded = {"no_consent": 0, "withdrawn_since_build": 0}
    kept = matched
    if key is not None:
        if not db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'consent_state'").fetchone()[0]:
            raise ConsentError("the serving file predates consent checks: run 'shoplens build' before exporting "
                               "for a channel")
        cond += f" AND customer_id IN (SELECT customer_id FROM consent_state WHERE {key} = 1)"
        kept = count(cond, args)
        excluded["no_consent"] = matched - kept
    denied = set() if ledger is None else ledger.denied(snapshot, "profiling") | (
        ledger.denied(snapshot, key) if key else set())
    if denied:  # a JSON list as one parameter: the serving file is opened read-only
        cond += " AND customer_id NOT IN (SELECT value FROM json_each(?))"
        args.append(json.dumps(sorted(denied)))
        before, kept = kept, count(cond, args)
        excluded["withdrawn_since_build"] = before - kept
    return Selection(cond, args, matched, kept, channel, key, excluded)


def consent_view(reader: Any, ledger: Ledger, cid: str) -> dict[str, Any]:
    """What ``GET /profiles/{id}/consent`` and ``shoplens consent show`` answer: the
    state per key now (the build's, then the changes since), and every record."""
    from shoplens.errors import NotFoundError

    snap = reader.snapshot_id()
    try:
        row = reader.query(f"SELECT {', '.join(KEY_NAMES)} FROM consent_state WHERE customer_id = ?", (cid,))
        history = reader.query("SELECT purpose, channel, status, consent_ts, source FROM consent_history "
                               "WHERE customer_id = ? ORDER BY consent_ts", (cid,))
    except sqlite3.OperationalError:  # a serving file from before consent
        raise ConsentError("the serving file predates consent: run 'shoplens build'") from None
    if not row:
        raise NotFoundError("customer not found in the current snapshot")
    at_build = {k: bool(v) for k, v in zip(KEY_NAMES, row[0], strict=True)}
    changes = [c for c in pending_changes(ledger.store_path, snap) if c.customer_id == cid]
    now = at_build | fold(changes).get(cid, {})
    return {
        "customer_id": cid, "snapshot_id": snap, "consent": now, "at_build": at_build,
        "profiled": now["profiling"] and at_build["profiling"],
        "history": [{"purpose": p, "channel": c, "status": s, "at": t, "source": src, "recorded": "store"}
                    for p, c, s, t, src in history]
        + [{"purpose": c.purpose, "channel": c.channel, "status": c.status, "at": c.consent_ts, "source": c.source,
            "recorded": "since the build"} for c in changes],
    }


def data_use_report(store: Any, cfg: Config) -> list[dict[str, Any]]:
    """The disclosure a shop can hand a regulator or a customer: per purpose, what it
    serves, the data and models behind it, and how many customers of the current
    snapshot consented per channel and how many not (left out of that use)."""
    snap = store.require_snapshot()
    if not store.has_snapshot_table(snap, "customer_consent"):
        raise ConsentError("the current snapshot predates consent: run 'shoplens build'")
    sums = ", ".join(f"count(*) FILTER (WHERE {k})" for k in KEY_NAMES)
    row = store.one(f"SELECT count(*), {sums} FROM snap_{snap}.customer_consent") or (0,) * (len(KEY_NAMES) + 1)
    total, granted = int(row[0]), dict(zip(KEY_NAMES, (int(v) for v in row[1:]), strict=True))
    records = dict(store.con.execute("SELECT purpose, count(*) FROM consents GROUP BY 1").fetchall())
    out = []
    for purpose, channels in PURPOSE_CHANNELS.items():
        keys = [consent_key(purpose, c) for c in channels]
        out.append({"purpose": purpose, **{k: USES[purpose][k] for k in ("en", "zh", "data", "models")},
                    "default": cfg.consent.defaults[purpose], "records": int(records.get(purpose, 0)),
                    "customers": total, "consented": {k: granted[k] for k in keys},
                    "not_consented": {k: total - granted[k] for k in keys}})
    return out
