"""Right to erasure: remove one customer from every file of a shop, leaving no
recoverable byte, and keep them out of later ingests.

The customer is named by pseudonym (``c_...``) or, with the secret, by the shop's own
id. In one DuckDB transaction every row of theirs goes (canonical tables, vault,
quarantine, every snapshot table, quotes in segment summaries) and a keyed hash joins
the suppression list (``erased_subjects``) that ingest honours. Deleting is not
enough, because DuckDB keeps deleted values in freed blocks that neither CHECKPOINT nor
VACUUM clears; so the store is then **compacted**: copied into a new file with
``COPY FROM DATABASE`` and swapped in with an atomic rename. SQLite files (serving
files, audit log, caches) are rewritten the same way (``secure_delete``, ``VACUUM``, WAL
truncated); registered exports are rewritten without the customer; a registered
report is written again from the erased store.

A kill between the transaction and the compaction leaves a marker
(``<store>.erasure-pending``); the next ``forget`` or ``Store.open`` for writing
finishes the compaction.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shoplens.errors import ConfigError, NotFoundError, StoreError
from shoplens.fsutil import checksum_path, fsync_dir, write_atomic
from shoplens.ingest.rejects import ID_WORD
from shoplens.ingest.validate import lit
from shoplens.privacy import PSEUDONYM_PREFIX, Keys
from shoplens.serving.access import access_path
from shoplens.serving.profile_store import install, profiles_dir, switch_current
from shoplens.serving.reader import current_name, serving_files
from shoplens.store import Store

if TYPE_CHECKING:
    from shoplens.config import Config

DATA_TABLES = ("orders", "events", "texts", "consents", "vault_customer_pii", "customer_links", "customers")


@dataclass
class ErasureReport:
    customer_id: str
    removed: dict[str, int] = field(default_factory=dict)
    rewritten: list[str] = field(default_factory=list)  # files rewritten so no freed byte keeps the data

    @property
    def total(self) -> int:
        return sum(self.removed.values())

    def add(self, label: str, n: int) -> None:
        if n:
            self.removed[label] = self.removed.get(label, 0) + int(n)


def _delete(store: Store, report: ErasureReport, label: str, sql: str, params: list[object]) -> None:
    report.add(label, store.con.execute(sql, params).fetchall()[0][0])


def forget(store: Store, ref: str | None, keys: Keys | None, cfg: Config | None = None) -> ErasureReport:
    """Erase customer ``ref`` everywhere; raises NotFoundError when nothing matches.

    ``cfg`` names the caches to clean (embedding and LLM caches); without it only the
    store, serving files, audit log and registered exports are cleaned. The work is a
    job recorded first (Fernet-encrypted, in ``<store>.erasure-pending``) and removed
    last, so an erasure killed or failed at any step is finished by the next ``forget``
    (of anyone, or ``ref=None`` to only finish pending ones).
    """
    if keys is None:
        raise ConfigError("erasure needs the shop's secret key (to add the customer to the suppression list "
                          "that keeps later ingests from bringing them back)")
    if cfg is not None:
        from shoplens.privacy import check_key

        check_key(cfg, store, keys)
    store_path = Path(store.path)
    marker = pending_marker(store_path)
    jobs = _pending(marker, keys)
    cid = None
    new: set[str] = set()  # asked for now, not resumed: unknown ones are a 404
    if ref is not None:
        raw = None if ref.startswith(PSEUDONYM_PREFIX) else ref
        cid = ref if raw is None else keys.pseudonym(raw)
        if not any(j["cid"] == cid for j in jobs):
            texts = [r[0] for r in store.con.execute("SELECT text FROM texts WHERE customer_id = ?", [cid]).fetchall()]
            jobs.append({"cid": cid, "raw": raw, "texts": texts})
            new.add(cid)
    if not jobs:
        raise NotFoundError("no erasure is pending: name the customer to erase")
    write_atomic(marker, keys.fernet.encrypt(json.dumps(jobs).encode()).decode() + "\n")
    reports = {j["cid"]: ErasureReport(j["cid"]) for j in jobs}
    for job in jobs:
        _erase_store(store, reports[job["cid"]], job["cid"], job["raw"], keys)
        reports[job["cid"]].rewritten += _erase_serving(store_path, job["cid"], reports[job["cid"]])
    unknown = [j for j in jobs if j["cid"] in new and not reports[j["cid"]].total]
    jobs = [j for j in jobs if j not in unknown]
    if jobs:
        compact(store)
    for job in jobs:
        report = reports[job["cid"]]
        report.rewritten.insert(0, store_path.name)
        _erase_access(store_path, job["cid"], job["raw"], report)
        if cfg is not None:
            _erase_caches(cfg, job["texts"], report)
        _erase_exports(store_path, job["cid"], report, store)
    marker.unlink(missing_ok=True)
    if unknown:
        raise NotFoundError(f"customer '{ref}' not found: nothing to erase")
    return reports[cid] if cid is not None else next(iter(reports.values()))


def finish_pending(store: Store, cfg: Config | None) -> None:
    """Finish erasures a kill or an error interrupted (``Store.open`` calls this when the
    marker exists). Without the config or the key, only the compaction is done."""
    from shoplens.privacy import optional_keys

    marker = pending_marker(Path(store.path))
    keys = optional_keys(cfg) if cfg is not None else None
    if keys is not None and _pending(marker, keys):
        forget(store, None, keys, cfg)
        return
    compact(store)
    if keys is not None:  # nothing recorded beyond the compaction (or an unreadable marker)
        marker.unlink(missing_ok=True)


def _pending(marker: Path, keys: Keys) -> list[dict[str, Any]]:
    """Erasures recorded but not finished (a kill or an error stopped them)."""
    try:
        token = marker.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return []
    try:
        return list(json.loads(keys.decrypt(token)))
    except Exception:  # a marker from before jobs were recorded: only the compaction is owed
        return []


def _erase_store(store: Store, report: ErasureReport, cid: str, raw: str | None, keys: Keys) -> None:
    """Delete every row of ``cid`` in one transaction and list them as erased (repeatable)."""
    con = store.con
    with store.transaction():
        orders = [r[0] for r in con.execute("SELECT order_id FROM orders WHERE customer_id = ?", [cid]).fetchall()]
        text_rows = con.execute("SELECT text_id, text FROM texts WHERE customer_id = ?", [cid]).fetchall()
        text_ids, texts = [r[0] for r in text_rows], [r[1] for r in text_rows]
        if orders:
            _delete(store, report, "order_items", "DELETE FROM order_items WHERE list_contains(?, order_id)", [orders])
        if text_ids:
            _delete(store, report, "vault_text_raw", "DELETE FROM vault_text_raw WHERE list_contains(?, text_id)", [text_ids])
        for table in DATA_TABLES:
            _delete(store, report, table, f"DELETE FROM {table} WHERE customer_id = ?", [cid])
        ids = {*orders, *text_ids}
        hits = [rowid for rowid, found, rec in con.execute("SELECT rowid, found, record_enc FROM quarantine").fetchall()
                if _names(found, rec, cid, ids, keys)]
        if hits:
            _delete(store, report, "quarantine", "DELETE FROM quarantine WHERE list_contains(?, rowid)", [hits])
        for schema, table in _snapshot_tables(store, "BASE TABLE"):
            _delete(store, report, f"snapshots.{table}", f"DELETE FROM {schema}.{table} WHERE customer_id = ?", [cid])
        if texts:
            _erase_quotes(store, texts, report)
        if report.total:
            from shoplens.ingest.validate import ERASED_ORDER_PREFIX

            hashes = [keys.subject_hash(cid)] + [keys.subject_hash(ERASED_ORDER_PREFIX + o) for o in orders]
            con.executemany("INSERT OR IGNORE INTO erased_subjects VALUES (?, now())", [[h] for h in hashes])
    _erase_warehouse(store, report, cid)


def _snapshot_tables(store: Store, kind: str) -> list[tuple[str, str]]:
    """(schema, table) of snapshot tables with a ``customer_id``: stored in the store
    (``BASE TABLE``) or views over a Spark build's Parquet files (``VIEW``)."""
    return [(r[0], r[1]) for r in store.con.execute(
        "SELECT c.table_schema, c.table_name FROM information_schema.columns c JOIN information_schema.tables t "
        "ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
        "WHERE c.table_schema LIKE 'snap_%' AND c.column_name = 'customer_id' AND t.table_type = ?", [kind]).fetchall()]


def _erase_warehouse(store: Store, report: ErasureReport, cid: str) -> None:
    """A Spark build's snapshot tables are Parquet files under the warehouse: rewrite
    each without the customer (repeatable), and drop the canonical exports."""
    from shoplens.engine.spark import drop_canonical_exports, drop_orphan_folders, erase_rows

    # erasure holds the store's write lock, so no build is running: a snapshot still
    # 'building' is a dead build's; drop it (and below, its files) rather than search it
    store.drop_incomplete_snapshots()
    for schema, table in _snapshot_tables(store, "VIEW"):
        report.add(f"snapshots.{table}", erase_rows(store, schema, table, "customer_id IS DISTINCT FROM ?", [cid]))
    report.rewritten += [f"warehouse/{name} (removed)" for name in drop_orphan_folders(store)]
    report.rewritten += [f"warehouse/{name}" for name in drop_canonical_exports(store)]


def _names(found: str | None, record_enc: str | None, cid: str, ids: set[str], keys: Keys) -> bool:
    """Whether a quarantine row is the customer's: its ``found`` value or its decrypted
    record holds their pseudonym, one of their order or text ids, or a value whose
    pseudonym is theirs (the shop's raw id), compared as whole values, never substrings."""
    values = set(ID_WORD.findall(found or ""))
    if record_enc:
        record = keys.decrypt(record_enc)
        try:
            obj = json.loads(record)
        except json.JSONDecodeError:
            obj = None
        fields = [str(v) for v in obj.values() if v is not None] if isinstance(obj, dict) else [record]
        values |= {*fields, *(w for f in fields for w in ID_WORD.findall(f))}
    return cid in values or bool(values & ids) or any(keys.pseudonym(v) == cid for v in values)


def _erase_quotes(store: Store, texts: list[str], report: ErasureReport) -> None:
    """Drop the customer's words from segment summaries (quotes are verbatim texts)."""
    from shoplens.engine.spark import is_parquet_view, rewrite

    con = store.con
    for (schema,) in con.execute("SELECT DISTINCT table_schema FROM information_schema.tables "
                                 "WHERE table_schema LIKE 'snap_%' AND table_name = 'segments'").fetchall():
        for sid, praise, complaints in con.execute(f"SELECT segment_id, praise, complaints FROM {schema}.segments").fetchall():
            kept = [_without(praise, texts), _without(complaints, texts)]
            n = len(json.loads(praise or "[]")) + len(json.loads(complaints or "[]")) - len(kept[0]) - len(kept[1])
            if n:
                values = [json.dumps(kept[0], ensure_ascii=False), json.dumps(kept[1], ensure_ascii=False), sid]
                if is_parquet_view(store, schema, "segments"):  # a Spark build's table: rewrite its file
                    rewrite(store, schema, "segments", "SELECT * REPLACE (CASE WHEN segment_id = $3 THEN $1 ELSE praise "
                            "END AS praise, CASE WHEN segment_id = $3 THEN $2 ELSE complaints END AS complaints) "
                            "FROM read_parquet({files})", values)
                else:
                    con.execute(f"UPDATE {schema}.segments SET praise = ?, complaints = ? WHERE segment_id = ?", values)
                report.add("segment quotes", n)


def _without(quotes_json: str | None, texts: Iterable[str]) -> list[str]:
    quotes = json.loads(quotes_json or "[]")
    return [q for q in quotes if not any(q and (q in t or t in q) for t in texts)]


def pending_marker(store_path: Path) -> Path:
    return store_path.with_name(store_path.name + ".erasure-pending")


def compact(store: Store) -> None:
    """Rewrite the DuckDB file so no freed block keeps deleted values.

    ``COPY FROM DATABASE`` copies schemas, tables, sequences (with their values),
    indexes and constraints into a new file, which replaces the old one by rename; the
    old WAL and spill folder go with it. ``store.con`` is reopened on the new file.
    """
    path = Path(store.path)
    fresh = path.with_name(path.name + ".compact")
    for leftover in (fresh, fresh.with_name(fresh.name + ".wal")):
        leftover.unlink(missing_ok=True)
    con = store.con
    con.execute("CHECKPOINT")
    name = con.execute("SELECT current_database()").fetchall()[0][0]
    con.execute(f"ATTACH {lit(str(fresh))} AS shoplens_compact")
    try:
        con.execute(f'COPY FROM DATABASE "{name}" TO shoplens_compact')
    finally:
        con.execute("DETACH shoplens_compact")
    con.close()
    os.replace(fresh, path)
    fsync_dir(path.parent)
    for leftover in (path.with_name(path.name + ".wal"), fresh.with_name(fresh.name + ".wal")):
        leftover.unlink(missing_ok=True)
    spill = path.with_name(path.name + ".tmp")
    if spill.is_dir():
        for f in spill.iterdir():
            f.unlink(missing_ok=True)
    store.reopen()


def scrub_sqlite(path: Path, statements: list[tuple[str, list[Any]]], vacuum: bool = True) -> int:
    """Run deletes/updates on a SQLite file so that no byte of the old values survives:
    ``secure_delete`` zeroes deleted and freed content, ``VACUUM`` (unless ``vacuum`` is
    False, for files too large to rebuild under a running server) rebuilds the file, and
    the WAL is checkpointed and truncated. Returns the rows changed."""
    if not path.exists():
        return 0
    db = sqlite3.connect(path, isolation_level=None, timeout=10)
    try:
        db.execute("PRAGMA secure_delete = ON")
        changed = sum(db.execute(sql, params).rowcount for sql, params in statements)
        if changed and vacuum:
            db.execute("VACUUM")
        busy = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()[0][0]
        if busy:  # a reader held an old snapshot of the WAL: its frames would survive
            raise StoreError(f"{path.name} is busy: its log could not be cleared; stop the readers and "
                             "run the erasure again")
    finally:
        db.close()
    return changed


def _erase_serving(store_path: Path, cid: str, report: ErasureReport) -> list[str]:
    """Rewrite each serving file holding ``cid`` into a new generation and switch to it.

    Written as a new file (``snap_<id>.e<n>.sqlite``) rather than in place, so a running
    server sees a new name, verifies its checksum and never reads a half-changed file.
    """
    folder = profiles_dir(store_path)
    current = current_name(folder)
    rewritten = []
    for leftover in folder.glob("*.tmp"):  # a publish or an erasure killed midway
        leftover.unlink(missing_ok=True)
    for _snap, path in serving_files(folder):
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as src:
            # every table with a customer_id column: a new stage's table is covered without a list
            tables = [t for (t,) in src.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
                      if any(c[1] == "customer_id" for c in src.execute(f'PRAGMA table_info("{t}")'))]
            # a customer without profiling consent has no profile but a consent state
            n = sum(src.execute(f"SELECT count(*) FROM {t} WHERE customer_id = ?", [cid]).fetchone()[0] for t in tables)
            if not n:
                continue
            target = _next_generation(path)
            tmp = target.with_suffix(".tmp")
            tmp.unlink(missing_ok=True)
            with contextlib.closing(sqlite3.connect(tmp)) as dst:
                src.backup(dst)
        changed = scrub_sqlite(tmp, [(f"DELETE FROM {t} WHERE customer_id = ?", [cid]) for t in tables])
        report.add("serving", changed)
        install(tmp, target)
        if path.name == current:
            switch_current(folder, target.name)
        path.unlink()
        checksum_path(path).unlink(missing_ok=True)
        rewritten.append(f"{folder.name}/{target.name}")
    return rewritten


def _next_generation(path: Path) -> Path:
    stem = path.name.removesuffix(".sqlite")
    base, _, gen = stem.partition(".e")
    return path.with_name(f"{base}.e{int(gen or 0) + 1}.sqlite")


def _erase_access(store_path: Path, cid: str, raw: str | None, report: ErasureReport) -> None:
    """Audit rows keep who did what, never the customer: ids leave the row and its path."""
    needles = [cid] + ([raw] if raw else [])
    cond = " OR ".join(["customer_id = ?"] + ["instr(path, ?) > 0", "instr(coalesce(detail, ''), ?) > 0"] * len(needles))
    params: list[Any] = [cid] + [n for n in needles for _ in (0, 1)]
    # no VACUUM: the audit log grows without bound and a running server writes to it;
    # secure_delete zeroes the replaced values in place
    report.add("audit", scrub_sqlite(access_path(store_path), [
        (f"UPDATE audit SET customer_id = NULL, path = '(erased)', detail = '' WHERE {cond}", params)], vacuum=False))
    for table in ("consent_changes", "risk_decisions"):  # consent and risk decisions recorded through the CLI or API
        if _has_table(access_path(store_path), table):
            report.add(table, scrub_sqlite(access_path(store_path), [
                (f"DELETE FROM {table} WHERE customer_id = ?", [cid])], vacuum=False))


def _has_table(path: Path, table: str) -> bool:
    if not path.exists():
        return False
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [table]).fetchone() is not None


def _erase_caches(cfg: Config, texts: list[str], report: ErasureReport) -> None:
    """Embeddings of the customer's texts and clauses, and LLM replies quoting them."""
    if not texts:
        return
    from shoplens.text.embed import EMBEDDERS, text_key
    from shoplens.text.preprocess import prepare
    from shoplens.text.rows import result_key

    pieces: set[str] = set()
    results: list[str] = []  # the text stage's result cache (``text.rows``)
    for t in texts:
        p = prepare(t, cfg.text.max_chars)
        pieces |= {t, p.text, *(c.text for c in p.clauses)}
        results.append(result_key(p))
    ids = [getattr(factory, "id", None) for factory in EMBEDDERS.values()]
    keys = [text_key(i, piece) for i in ids if i for piece in pieces]
    if cfg.text.cache:
        cache = cfg.resolve(cfg.text.cache)
        deletes = [(table, chunk) for table, ks in (("embeddings", keys), ("text_results", results))
                   if _has_table(cache, table) for chunk in (ks[i:i + 900] for i in range(0, len(ks), 900))]
        report.add("embedding cache", scrub_sqlite(cache, [
            (f"DELETE FROM {table} WHERE key IN ({','.join('?' * len(chunk))})", chunk) for table, chunk in deletes]))
    if cfg.llm.cache:
        quoted = [t[:200] for t in texts if len(t) >= 8]
        if quoted:
            report.add("LLM cache", scrub_sqlite(cfg.resolve(cfg.llm.cache), [
                ("DELETE FROM replies WHERE " + " OR ".join(["instr(reply, ?) > 0"] * len(quoted)), quoted)]))


# ---- exports -------------------------------------------------------------------------

def register_export(store_path: Path, path: Path, kind: str) -> None:
    """Remember a file written outside the store (an audience export, a report), so that
    erasure can rewrite it. ``kind`` is ``csv``, ``parquet`` or ``report``."""
    with contextlib.closing(sqlite3.connect(access_path(store_path), isolation_level=None)) as db:
        db.execute("CREATE TABLE IF NOT EXISTS exports (path TEXT PRIMARY KEY, kind TEXT, created_at REAL)")
        db.execute("INSERT OR REPLACE INTO exports VALUES (?, ?, strftime('%s', 'now'))", [str(path.resolve()), kind])


def _erase_exports(store_path: Path, cid: str, report: ErasureReport, store: Store) -> None:
    db_path = access_path(store_path)
    if not db_path.exists():
        return
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        try:
            rows = db.execute("SELECT path, kind FROM exports").fetchall()
        except sqlite3.OperationalError:
            return
    for path_text, kind in rows:
        path = Path(path_text)
        if not path.exists():
            continue
        if kind == "report":
            from shoplens.report import build_report

            build_report(store, path)
            report.rewritten.append(path.name)
            continue
        import pandas as pd

        frame = pd.read_parquet(path) if kind == "parquet" else pd.read_csv(path, dtype=str, keep_default_na=False)
        if "customer_id" not in frame.columns or not (frame["customer_id"] == cid).any():
            continue
        kept = frame[frame["customer_id"] != cid]
        tmp = path.with_name(path.name + ".tmp")
        if kind == "parquet":
            kept.to_parquet(tmp, index=False)
        else:
            kept.to_csv(tmp, index=False)
        os.replace(tmp, path)
        report.add("exports", len(frame) - len(kept))
        report.rewritten.append(path.name)
