"""Profiles for serving: one SQLite file per snapshot, read by id in microseconds.

DuckDB is an analytic store (~2 ms per point look-up at 1M profiles, and one writer
process locks the file); serving reads a key-value layout instead (RESOURCES.md:
SQLite ~31 us p50 / 103 us p99). ``publish`` writes ``profiles/snap_<id>.sqlite`` with

- ``profiles(customer_id TEXT PRIMARY KEY, doc TEXT)``: the JSON profile documents;
- ``flat``: one typed row per customer for audience filters and segment listings;
- ``meta``: snapshot id, build time, as_of;

then records its SHA-256 beside it (``snap_<id>.sqlite.sha256``) and switches
``profiles/CURRENT`` to it with an atomic rename, so a reader sees the old file or the
new one, never half of one; readers verify the checksum before serving a file
(``shoplens.serving.reader``). Tags are computed here from rules that are data
(``rules/tags.toml``, conditions in the audience filter language).
"""

from __future__ import annotations

import json
import os
import sqlite3
import tomllib
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from shoplens.fsutil import checksum_path, file_sha256, fsync_dir, fsync_file, write_atomic
from shoplens.profiles import RISK_TYPES, document, profile_query, snapshot_meta
from shoplens.serving.audience import compile_filter, parse_text
from shoplens.serving.reader import ProfileReader, current_name, profiles_dir, serving_files
from shoplens.store import Store

FLAT_FIELDS: dict[str, str] = {
    "customer_id": "text", "gender": "text", "age": "number", "city": "text", "region": "text",
    "country": "text", "channel": "text", "recency_days": "number", "n_orders": "number",
    "total_spend": "number", "aov": "number", "frequency": "number", "r_score": "number",
    "f_score": "number", "m_score": "number", "rfm_segment": "text", "rfm_segment_zh": "text",
    "discount_rate": "number", "discounted_spend_share": "number", "return_rate": "number",
    "cancel_rate": "number", "top_category": "text", "tenure_days": "number", "n_views": "number",
    "n_cart_adds": "number", "events_last_30d": "number", "mean_interpurchase_days": "number",
    "p_alive": "number", "expected_purchases": "number", "clv": "number", "churn_risk": "number",
    "purchase_propensity": "number", "n_texts": "number", "mean_rating": "number",
    "segment_id": "number", "segment_name": "text",
    "sentiment_mean": "number", "sentiment_trend": "number", "negative_share": "number",
    # mean polarity (-1..1) of the customer's mentions of each default aspect (rules/aspects.toml)
    **{f"aspect.{a}": "number" for a in ("quality", "price", "logistics", "service", "packaging", "appearance",
                                          "function", "size")},
    # the highest risk level (HIGH / MEDIUM / LOW, NONE without a flag) and each flag type's
    "risk.level": "text", **{f"risk.{t}": "text" for t in RISK_TYPES},
}
# what exports leave out: risk flags are for a person to review, not for activation
NOT_EXPORTED = tuple(f for f in FLAT_FIELDS if f.startswith("risk."))
EXPORT_COLUMNS = ", ".join([f'"{f}"' for f in FLAT_FIELDS if f not in NOT_EXPORTED] + ["tags"])
# what the audience language filters on: the flat fields, and the products a customer is
# likely to buy (in their top 10 recommendations)
AUDIENCE_FIELDS: dict[str, str] = FLAT_FIELDS | {"likely_to_buy": "product"}
BATCH = 5000
__all__ = ["AUDIENCE_FIELDS", "EXPORT_COLUMNS", "FLAT_FIELDS", "ProfileReader", "install", "profiles_dir", "prune_serving", "publish", "switch_current"]


def load_tag_rules(path: str | None = None) -> list[dict[str, str]]:
    text = Path(path).read_text("utf-8") if path else resources.files("shoplens").joinpath("rules/tags.toml").read_text("utf-8")
    return list(tomllib.loads(text)["tag"])


class _Fmt(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "?"


def _flat_row(row: dict[str, Any], as_of_year: int) -> tuple[Any, ...]:
    values = []
    for f in FLAT_FIELDS:
        v: Any
        if f == "age":
            v = None if row.get("birth_year") is None else as_of_year - int(row["birth_year"])
        else:
            v = row.get(f.replace(".", "_"))
        if isinstance(v, float) and v != v:
            v = None
        if v is None and f.startswith("risk."):  # a value, not NULL: "risk.level != 'HIGH'" keeps the unflagged
            v = "NONE"
        values.append(v)
    return tuple(values)


def publish(store: Store, snap: int, store_path: Path, on_progress: Callable[[int], None] | None = None) -> Path:
    """Write the serving file for snapshot ``snap`` with its checksum beside it; the
    caller switches ``CURRENT`` to it once the snapshot is complete."""
    folder = profiles_dir(store_path)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"snap_{snap}.sqlite"
    tmp = target.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    meta = snapshot_meta(store, snap)
    year = meta["as_of"].year
    db = sqlite3.connect(tmp)
    cols = ", ".join(f'"{f}" {"REAL" if k == "number" else "TEXT"}' for f, k in FLAT_FIELDS.items())
    db.executescript(
        f"CREATE TABLE flat ({cols}, tags TEXT, PRIMARY KEY (customer_id)) WITHOUT ROWID;"
        "CREATE TABLE profiles (customer_id TEXT PRIMARY KEY, doc TEXT NOT NULL) WITHOUT ROWID;"
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);"
    )
    with_recs = store.has_snapshot_table(snap, "recommendations")
    with_risk = store.has_snapshot_table(snap, "risk_flags")
    cur = store.con.execute(profile_query(f"snap_{snap}", recommendations=with_recs, risk=with_risk))
    names = [d[0] for d in cur.description or []]
    placeholders = ", ".join("?" * (len(FLAT_FIELDS) + 1))
    done = 0
    while batch := cur.fetchmany(BATCH):
        dicts = [dict(zip(names, r, strict=True)) for r in batch]
        db.executemany(f"INSERT INTO flat VALUES ({placeholders})", [(*_flat_row(d, year), "[]") for d in dicts])
        db.executemany("INSERT INTO profiles VALUES (?, ?)",
                       [(d["customer_id"], json.dumps(document(d, meta), ensure_ascii=False, default=str)) for d in dicts])
        done += len(dicts)
        if on_progress:
            on_progress(done)
    _apply_tags(db)
    _write_consent(store, db, snap)
    _write_recommendations(store, db, snap, with_recs)
    _write_risk(store, db, snap, with_risk)
    from shoplens.serving.insight import write_tables

    write_tables(store, db, snap)
    db.executemany("INSERT INTO meta VALUES (?, ?)", [(k, str(v)) for k, v in meta.items()])
    db.execute("CREATE INDEX flat_segment ON flat (rfm_segment)")
    db.commit()
    db.close()
    install(tmp, target)
    return target


# the recommend stage's tables as the serving file keeps them (request-time filters,
# item-to-item look-ups, the list for customers who are not in the build)
_REC_TABLES = {
    "recommendations": ("customer_id TEXT, rank INTEGER, product_id TEXT, name TEXT, category TEXT, score REAL, "
                        "source TEXT, reason TEXT, reason_zh TEXT, purchased INTEGER, PRIMARY KEY (customer_id, rank)"),
    "product_similar": "product_id TEXT, kind TEXT, rank INTEGER, similar_id TEXT, score REAL, PRIMARY KEY (product_id, kind, rank)",
    "recommend_fallback": "segment TEXT, rank INTEGER, product_id TEXT, score REAL, PRIMARY KEY (segment, rank)",
    "products": "product_id TEXT PRIMARY KEY, name TEXT, category TEXT",
}


def _write_recommendations(store: Store, db: sqlite3.Connection, snap: int, built: bool) -> None:
    """The tables, empty for a snapshot built before the recommend stage."""
    for name, columns in _REC_TABLES.items():
        db.execute(f"CREATE TABLE {name} ({columns}) WITHOUT ROWID")
        if not built:
            continue
        cur = store.con.cursor()
        cur.execute("SELECT product_id, name, category FROM products" if name == "products"
                    else f"SELECT * FROM snap_{snap}.{name}")
        width = len(cur.description or [])
        while batch := cur.fetchmany(BATCH * 10):
            db.executemany(f"INSERT INTO {name} VALUES ({', '.join('?' * width)})", batch)
    db.execute("CREATE INDEX recommendations_product ON recommendations (product_id, rank)")


def _write_risk(store: Store, db: sqlite3.Connection, snap: int, built: bool) -> None:
    """The review queue: every flag with its facts (empty before the risk stage)."""
    db.execute("CREATE TABLE risk_flags (customer_id TEXT, type TEXT, level TEXT, recommendation TEXT, score REAL, "
               "facts TEXT, model_version TEXT, group_id TEXT, PRIMARY KEY (customer_id, type)) WITHOUT ROWID")
    if built:
        cur = store.con.cursor()
        cur.execute(f"SELECT customer_id, type, level, recommendation, score, facts, model_version, group_id "
                    f"FROM snap_{snap}.risk_flags")
        while batch := cur.fetchmany(BATCH * 10):
            db.executemany("INSERT INTO risk_flags VALUES (?, ?, ?, ?, ?, ?, ?, ?)", batch)
    db.execute("CREATE INDEX risk_flags_queue ON risk_flags (level, score)")
    db.execute("CREATE INDEX risk_flags_group ON risk_flags (group_id)")


def _write_consent(store: Store, db: sqlite3.Connection, snap: int) -> None:
    """Every customer's consent state at the build and the records behind it (those
    without profiling consent included: they have no profile, but their consent is
    still shown and checked)."""
    from shoplens.consent import KEY_NAMES

    keys = ", ".join(KEY_NAMES)
    db.executescript(
        f"CREATE TABLE consent_state (customer_id TEXT PRIMARY KEY, {', '.join(k + ' INTEGER' for k in KEY_NAMES)}) WITHOUT ROWID;"
        "CREATE TABLE consent_history (customer_id TEXT, purpose TEXT, channel TEXT, status TEXT, consent_ts TEXT, source TEXT);")
    has_state = store.has_snapshot_table(snap, "customer_consent")
    if not has_state:  # a snapshot built before consent: nothing to show
        return
    cur = store.con.cursor()
    cur.execute(f"SELECT customer_id, {keys} FROM snap_{snap}.customer_consent")
    while batch := cur.fetchmany(BATCH):
        db.executemany(f"INSERT INTO consent_state VALUES ({', '.join('?' * (len(KEY_NAMES) + 1))})", batch)
    cur.execute("SELECT customer_id, purpose, channel, status, strftime(consent_ts, '%Y-%m-%d %H:%M:%S'), source "
                "FROM consents ORDER BY customer_id, consent_ts")
    while batch := cur.fetchmany(BATCH):
        db.executemany("INSERT INTO consent_history VALUES (?, ?, ?, ?, ?, ?)", batch)
    db.execute("CREATE INDEX consent_history_customer ON consent_history (customer_id)")


def install(tmp: Path, target: Path) -> None:
    """Move a finished serving file into place with its checksum recorded beside it.

    The checksum goes first, so a file in place always has one; a reader that finds a
    file whose bytes do not match refuses it (and falls back to an older one).
    """
    fsync_file(tmp)
    write_atomic(checksum_path(target), file_sha256(tmp) + "\n")
    os.replace(tmp, target)
    fsync_dir(target.parent)


def switch_current(folder: Path, name: str) -> None:
    """Point ``CURRENT`` at serving file ``name`` with one atomic rename."""
    write_atomic(folder / "CURRENT", name)


def prune_serving(folder: Path, keep: set[int]) -> list[Path]:
    """Delete the serving files of snapshots not in ``keep`` (pruned ones, and those of
    builds that never completed), never the current one."""
    current = current_name(folder)
    removed = []
    for snap, path in serving_files(folder):
        if snap in keep or path.name == current:
            continue
        path.unlink(missing_ok=True)
        checksum_path(path).unlink(missing_ok=True)
        removed.append(path)
    return removed


def _apply_tags(db: sqlite3.Connection) -> None:
    """Evaluate every tag rule over ``flat`` and add the tag, with its reason, to the
    customer's ``flat.tags`` and profile document."""
    tags: dict[str, list[dict[str, str]]] = {}
    names = list(FLAT_FIELDS)
    for rule in load_tag_rules():
        where, params = compile_filter(parse_text(rule["when"]), FLAT_FIELDS)
        for row in db.execute(f"SELECT * FROM flat WHERE {where}", params):
            values = _Fmt(zip(names, row, strict=False))
            tags.setdefault(row[0], []).append({
                "tag": rule["name_zh"], "tag_en": rule["name"],
                "reason": rule["reason_zh"].format_map(values), "reason_en": rule["reason"].format_map(values),
            })
    for cid, items in tags.items():
        db.execute("UPDATE flat SET tags = ? WHERE customer_id = ?", [json.dumps([t["tag_en"] for t in items]), cid])
        doc = json.loads(db.execute("SELECT doc FROM profiles WHERE customer_id = ?", [cid]).fetchone()[0])
        doc["tags"] = items
        db.execute("UPDATE profiles SET doc = ? WHERE customer_id = ?", [json.dumps(doc, ensure_ascii=False), cid])

