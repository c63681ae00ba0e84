"""Profiles for serving: one SQLite file per snapshot, read by id in microseconds.

DuckDB is an analytic store (~2 ms per point look-up at 1M profiles, and one writer
process locks the file); serving reads a key-value layout instead (RESOURCES.md:
SQLite ~31 us p50 / 103 us p99). ``publish`` writes ``profiles/snap_<id>.sqlite`` with

- ``profiles(customer_id TEXT PRIMARY KEY, doc TEXT)``: the JSON profile documents;
- ``flat``: one typed row per customer for audience filters and segment listings;
- ``meta``: snapshot id, build time, as_of;

then switches ``profiles/CURRENT`` to it with an atomic rename, so a reader sees the old
file or the new one, never half of one. Tags are computed here from rules that are data
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

from shoplens.profiles import document, profile_query, snapshot_meta
from shoplens.serving.audience import compile_filter, parse_text
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
}
BATCH = 5000


def profiles_dir(store_path: Path) -> Path:
    return store_path.parent / (store_path.stem + ".profiles")


def load_tag_rules(path: str | None = None) -> list[dict[str, str]]:
    text = Path(path).read_text("utf-8") if path else resources.files("shoplens").joinpath("rules/tags.toml").read_text("utf-8")
    return list(tomllib.loads(text)["tag"])


class _Fmt(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "?"


def _flat_row(row: dict[str, Any], as_of_year: int) -> tuple[Any, ...]:
    values = []
    for f in FLAT_FIELDS:
        if f == "age":
            v = None if row.get("birth_year") is None else as_of_year - int(row["birth_year"])
        else:
            v = row.get(f.replace(".", "_"))
        if isinstance(v, float) and v != v:
            v = None
        values.append(v)
    return tuple(values)


def publish(store: Store, snap: int, store_path: Path, on_progress: Callable[[int], None] | None = None) -> Path:
    """Write the serving file for snapshot ``snap`` and make it current."""
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
    cur = store.con.execute(profile_query(f"snap_{snap}"))
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
    db.executemany("INSERT INTO meta VALUES (?, ?)", [(k, str(v)) for k, v in meta.items()])
    db.execute("CREATE INDEX flat_segment ON flat (rfm_segment)")
    db.commit()
    db.close()
    os.replace(tmp, target)
    pointer = folder / "CURRENT.tmp"
    pointer.write_text(target.name, encoding="utf-8")
    os.replace(pointer, folder / "CURRENT")
    return target


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


class ProfileReader:
    """Reads the current serving file; notices when ``CURRENT`` moves to a new one."""

    def __init__(self, store_path: Path) -> None:
        self.folder = profiles_dir(store_path)
        self._name: str | None = None
        self._db: sqlite3.Connection | None = None

    def db(self) -> sqlite3.Connection:
        from shoplens.errors import StoreError

        try:
            name = (self.folder / "CURRENT").read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise StoreError(f"no published profiles in {self.folder}: run 'shoplens build' first") from None
        if name != self._name or self._db is None:
            if self._db is not None:
                self._db.close()
            self._db = sqlite3.connect(f"file:{self.folder / name}?mode=ro", uri=True, check_same_thread=False)
            self._name = name
        return self._db

    def get_raw(self, customer_id: str) -> str | None:
        """The stored JSON text of a profile (served as is, without re-encoding)."""
        row = self.db().execute("SELECT doc FROM profiles WHERE customer_id = ?", [customer_id]).fetchone()
        return None if row is None else str(row[0])

    def get(self, customer_id: str) -> dict[str, Any] | None:
        raw = self.get_raw(customer_id)
        return None if raw is None else dict(json.loads(raw))
