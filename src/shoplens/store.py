"""The embedded store: one DuckDB file holding canonical tables, the quarantine, the
encrypted vault and versioned build snapshots.

Layout (all in the ``main`` schema unless said otherwise):

- ``customers``, ``products``, ``orders``, ``order_items``, ``events``, ``texts``:
  de-identified canonical data, each row with lineage (``_ingest_id``, ``_line``,
  ``_row_hash``);
- ``vault_customer_pii``, ``vault_text_raw``: Fernet ciphertexts of direct PII and raw
  texts (only readers holding the secret can open them);
- ``customer_links``: keyed hashes (``Keys.link_hash``) of each customer's normalised
  phone, e-mail, addresses, devices and payment tokens, one row per customer and value,
  for linking accounts that share one; the values themselves are not kept;
- ``quarantine``: every rejected input row with source, line, field, expected, found,
  and when a later ingest accepted the row, ``resolved_ingest`` / ``resolved_at``;
- ``ingest_log``: one row per ingested source with its counts and content hash;
- ``erased_subjects``: the suppression list, one keyed hash (``Keys.subject_hash``, a key
  of its own, so it joins with nothing else) per erased customer; ingest quarantines
  rows of these customers with reason "erased" and keeps none of their values;
- ``store_meta``: facts about the store itself, e.g. ``key_fingerprint`` (a keyed hash
  that tells whether a secret key is the one the store was built with);
- ``snapshots`` and ``current_snapshot``: each build writes schema ``snap_<id>`` and
  flips ``current_snapshot`` in one transaction only when every table is complete, so a
  killed build leaves the previous snapshot current and intact.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from shoplens.config import Config
from shoplens.errors import StoreError
from shoplens.schema import DUCKDB_TYPES, INGEST_ORDER, TABLES

SNAPSHOT_TABLES = ("customers", "customer_features", "customer_category_shares", "customer_predictions", "model_artifacts")

_META_DDL = """
CREATE SEQUENCE IF NOT EXISTS ingest_seq START 1;
CREATE SEQUENCE IF NOT EXISTS snapshot_seq START 1;
CREATE TABLE IF NOT EXISTS ingest_log (
    ingest_id BIGINT PRIMARY KEY, source VARCHAR, table_name VARCHAR, content_sha256 VARCHAR,
    started_at TIMESTAMP, finished_at TIMESTAMP, rows_in BIGINT, accepted BIGINT,
    unchanged BIGINT, quarantined BIGINT, skipped BOOLEAN);
CREATE TABLE IF NOT EXISTS quarantine (
    ingest_id BIGINT, table_name VARCHAR, source VARCHAR, line BIGINT, row_number BIGINT,
    field VARCHAR, expected VARCHAR, found VARCHAR, reason VARCHAR, record_enc VARCHAR);
CREATE TABLE IF NOT EXISTS vault_customer_pii (
    customer_id VARCHAR, field VARCHAR, ciphertext VARCHAR, _ingest_id BIGINT);
CREATE TABLE IF NOT EXISTS customer_links (
    customer_id VARCHAR, kind VARCHAR, link_hash VARCHAR, _ingest_id BIGINT);
CREATE TABLE IF NOT EXISTS vault_text_raw (text_id VARCHAR, ciphertext VARCHAR, _ingest_id BIGINT);
CREATE TABLE IF NOT EXISTS snapshots (
    snapshot_id BIGINT PRIMARY KEY, status VARCHAR, started_at TIMESTAMP, finished_at TIMESTAMP,
    as_of DATE, config_hash VARCHAR, last_ingest_id BIGINT, n_customers BIGINT, version VARCHAR);
CREATE TABLE IF NOT EXISTS current_snapshot (one INTEGER PRIMARY KEY, snapshot_id BIGINT);
CREATE TABLE IF NOT EXISTS erased_subjects (subject_hash VARCHAR PRIMARY KEY, erased_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS store_meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS build_stages (
    snapshot_id BIGINT, stage VARCHAR, action VARCHAR, reason VARCHAR, fingerprint VARCHAR,
    settings_hash VARCHAR, inputs VARCHAR, seconds DOUBLE, "rows" VARCHAR, peak_rss_mb DOUBLE,
    summary VARCHAR, skipped VARCHAR);
ALTER TABLE quarantine ADD COLUMN IF NOT EXISTS row_key VARCHAR;
ALTER TABLE quarantine ADD COLUMN IF NOT EXISTS resolved_ingest BIGINT;
ALTER TABLE quarantine ADD COLUMN IF NOT EXISTS resolved_at TIMESTAMP;
ALTER TABLE quarantine ADD COLUMN IF NOT EXISTS resolution VARCHAR;
"""


def _table_ddl(name: str) -> str:
    t = TABLES[name]
    cols = [f'"{c.name}" {DUCKDB_TYPES[c.type]}' for c in t.stored_columns]
    cols += ["_ingest_id BIGINT", "_line BIGINT", "_row_hash VARCHAR"]
    return f"CREATE TABLE IF NOT EXISTS {name} ({', '.join(cols)})"


def segments_dir(store_path: Path) -> Path:
    """Where segment maps are written, beside the store."""
    return store_path.parent / (store_path.stem + ".segments")


def tune(con: duckdb.DuckDBPyConnection, memory_limit: str | None = None) -> None:
    """Session settings for bulk work: results need no insertion order, which lets
    DuckDB stream aggregations and joins with less memory; beyond ``memory_limit`` it
    spills to disk instead of growing."""
    con.execute("SET preserve_insertion_order = false")
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")


class Store:
    """A DuckDB file with ShopLens' tables. Use as a context manager.

    >>> with Store.open(":memory:") as st:
    ...     st.current_snapshot() is None
    True
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, path: str, timezone: str = "UTC",
                 memory_limit: str | None = None, read_only: bool = False) -> None:
        self.con = con
        self.path = path
        self.timezone = timezone
        self.memory_limit = memory_limit
        self.read_only = read_only

    def ibis(self) -> Any:
        """An Ibis backend over this connection (Ibis resets the session time zone; restore it)."""
        import ibis

        backend = ibis.duckdb.from_connection(self.con)
        self.con.execute(f"SET TimeZone = '{self.timezone}'")
        return backend

    @classmethod
    def open(
        cls, path: str | Path, read_only: bool = False, timezone: str = "UTC", memory_limit: str | None = None,
        cfg: Config | None = None,
    ) -> Store:
        p = str(path)
        if read_only and p != ":memory:" and not Path(p).exists():
            raise StoreError(f"no store at {p}: run 'shoplens ingest' or 'shoplens demo' first")
        if p != ":memory:":
            Path(p).parent.mkdir(parents=True, exist_ok=True)
        try:
            con = duckdb.connect(p, read_only=read_only)
        except duckdb.IOException as err:
            raise StoreError(f"cannot open store {p}: {err}") from None
        con.execute(f"SET TimeZone = '{timezone}'")
        tune(con, memory_limit)
        store = cls(con, p, timezone, memory_limit, read_only)
        if not read_only:
            store._ensure_schema()
            store._finish_erasure(cfg)
        return store

    def reopen(self) -> None:
        """Open the connection again (after the file was replaced by compaction)."""
        try:
            self.con = duckdb.connect(self.path, read_only=self.read_only)
        except duckdb.IOException as err:
            raise StoreError(f"cannot open store {self.path}: {err}") from None
        self.con.execute(f"SET TimeZone = '{self.timezone}'")
        tune(self.con, self.memory_limit)

    def _finish_erasure(self, cfg: Config | None = None) -> None:
        """An erasure killed or failed midway left its job in a marker: with the config
        and the key, finish it (every step repeats safely); without them, at least
        compact, so no freed block keeps the erased values."""
        if self.path == ":memory:":
            return
        from shoplens.erasure import finish_pending, pending_marker

        if pending_marker(Path(self.path)).exists():
            finish_pending(self, cfg)

    @classmethod
    def for_config(cls, cfg: Config, read_only: bool = False) -> Store:
        """Open the store a config names, with its time zone and memory limit."""
        return cls.open(cfg.store_path, read_only, cfg.defaults.timezone, cfg.store.memory_limit, cfg)

    def _ensure_schema(self) -> None:
        self.con.execute(_META_DDL)
        for name in INGEST_ORDER:
            self.con.execute(_table_ddl(name))

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.con.close()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """All or nothing: commit at the end, roll back on any exception (or a kill)."""
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    def one(self, sql: str, params: list[Any] | None = None) -> tuple[Any, ...] | None:
        """First row of a query (the result is consumed whole, so the connection is free)."""
        rows = self.con.execute(sql, params or []).fetchall()
        return rows[0] if rows else None

    def scalar(self, sql: str, params: list[Any] | None = None) -> Any:
        row = self.one(sql, params)
        return None if row is None else row[0]

    def has_snapshot_table(self, snap: int, name: str) -> bool:
        """Whether snapshot ``snap`` has table ``name`` (snapshots from before a stage existed do not)."""
        return bool(self.scalar("SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
                                [f"snap_{snap}", name]))

    def record(self, sql: str, params: list[Any] | None = None) -> dict[str, Any]:
        """First row as a dict of column name -> value (empty when there is none)."""
        cur = self.con.execute(sql, params or [])
        names = [d[0] for d in cur.description or []]
        rows = cur.fetchall()
        return dict(zip(names, rows[0], strict=True)) if rows else {}

    def counts(self) -> dict[str, int]:
        """Rows per canonical table, plus the open (unresolved) quarantine entries."""
        out = {n: int(self.scalar(f"SELECT count(*) FROM {n}")) for n in INGEST_ORDER}
        # a store written before entries could resolve, opened read-only, lacks the column
        resolvable = self.scalar("SELECT count(*) FROM duckdb_columns() WHERE table_name = 'quarantine' "
                                 "AND column_name = 'resolved_ingest'")
        out["quarantine"] = int(self.scalar("SELECT count(*) FROM quarantine"
                                            + (" WHERE resolved_ingest IS NULL" if resolvable else "")))
        return out

    # ---- snapshots -------------------------------------------------------------------

    def current_snapshot(self) -> int | None:
        try:
            return self.scalar("SELECT snapshot_id FROM current_snapshot WHERE one = 1")
        except duckdb.CatalogException:
            return None

    def require_snapshot(self) -> int:
        snap = self.current_snapshot()
        if snap is None:
            raise StoreError(
                f"store {self.path} has no complete build yet: run 'shoplens build' first"
            )
        return snap

    def begin_snapshot(self, as_of: Any, config_hash: str, version: str) -> int:
        """Register a new snapshot as 'building'; drop leftovers of killed builds first."""
        self.drop_incomplete_snapshots()
        snap = int(self.scalar("SELECT nextval('snapshot_seq')"))
        last_ingest = self.scalar("SELECT max(ingest_id) FROM ingest_log")
        self.con.execute(
            "INSERT INTO snapshots VALUES (?, 'building', now(), NULL, ?, ?, ?, NULL, ?)",
            [snap, as_of, config_hash, last_ingest, version],
        )
        self.con.execute(f"CREATE SCHEMA IF NOT EXISTS snap_{snap}")
        return snap

    def complete_snapshot(self, snap: int, n_customers: int) -> None:
        """Make ``snap`` current atomically, then prune old snapshots."""
        with self.transaction() as con:
            con.execute(
                "UPDATE snapshots SET status = 'complete', finished_at = now(), n_customers = ? "
                "WHERE snapshot_id = ?",
                [n_customers, snap],
            )
            con.execute("INSERT OR REPLACE INTO current_snapshot VALUES (1, ?)", [snap])

    def prune_snapshots(self, keep: int) -> list[int]:
        """Drop complete snapshots beyond the newest ``keep``; returns the ids dropped."""
        rows = self.con.execute(
            "SELECT snapshot_id FROM snapshots WHERE status = 'complete' "
            "ORDER BY snapshot_id DESC OFFSET ?",
            [keep],
        ).fetchall()
        for (snap,) in rows:
            self.con.execute(f"DROP SCHEMA IF EXISTS snap_{snap} CASCADE")
            self.con.execute("UPDATE snapshots SET status = 'pruned' WHERE snapshot_id = ?", [snap])
        return [int(r[0]) for r in rows]

    def live_snapshots(self) -> list[int]:
        """Complete snapshots still kept, newest first."""
        rows = self.con.execute(
            "SELECT snapshot_id FROM snapshots WHERE status = 'complete' ORDER BY snapshot_id DESC").fetchall()
        return [int(r[0]) for r in rows]

    def drop_incomplete_snapshots(self) -> None:
        rows = self.con.execute(
            "SELECT snapshot_id FROM snapshots WHERE status = 'building'"
        ).fetchall()
        for (snap,) in rows:
            self.con.execute(f"DROP SCHEMA IF EXISTS snap_{snap} CASCADE")
            self.con.execute("UPDATE snapshots SET status = 'failed' WHERE snapshot_id = ?", [snap])
