"""The quarantine's life cycle: entries are written by ingest, and resolved by a later one.

Each entry carries ``row_key``, a keyed hash of the row's table key (or of its whole raw
record when the key cannot be read). When a later ingest accepts that row, or finds it
already stored unchanged, the entry is resolved (``resolution = 'accepted'``); when a
later ingest quarantines the same row again, the older entry is ``superseded`` by the new
one, so a row shows once however often its file is re-read. Entries for rows of erased
customers carry no key; each read of their source supersedes the previous read's.
Open entries (``resolved_ingest IS NULL``) are what ``shoplens quarantine`` and
``shoplens status`` show.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb

from shoplens.store import Store

COLUMNS = (
    "ingest_id", "table_name", "source", "line", "row_number", "field", "expected", "found", "reason",
    "record_enc", "row_key",
)
INSERT = f"INSERT INTO quarantine ({', '.join(COLUMNS)}) "


def insert_rows(con: duckdb.DuckDBPyConnection, rows: Sequence[tuple[object, ...]]) -> None:
    """Insert entries given as tuples in ``COLUMNS`` order."""
    if rows:
        con.executemany(INSERT + f"VALUES ({', '.join('?' for _ in COLUMNS)})", list(rows))


def resolve(con: duckdb.DuckDBPyConnection, ingest_id: int, table_name: str, source: str, accepted: str | None) -> None:
    """Resolve older open entries of ``table_name`` after ingest ``ingest_id`` of ``source``.

    ``accepted`` names a relation with a ``_row_key`` column: the rows this ingest stored
    or found unchanged (None when it staged none).
    """
    settle = "UPDATE quarantine SET resolved_ingest = ?, resolved_at = now(), resolution = ? "
    open_before = "resolved_ingest IS NULL AND ingest_id < ? AND table_name = ?"
    again = "SELECT row_key FROM quarantine WHERE ingest_id = ? AND row_key IS NOT NULL"
    con.execute(
        settle + f"WHERE {open_before} AND row_key IN ({again})",
        [ingest_id, "superseded", ingest_id, table_name, ingest_id],
    )
    con.execute(
        settle + f"WHERE {open_before} AND reason = 'erased' AND source = ?",
        [ingest_id, "superseded", ingest_id, table_name, source],
    )
    if accepted is not None:
        con.execute(
            settle + f"WHERE {open_before} AND row_key IN (SELECT _row_key FROM {accepted})",
            [ingest_id, "accepted", ingest_id, table_name],
        )


def quarantine_report(
    store: Store, limit: int = 20, table_name: str | None = None, include_resolved: bool = False
) -> list[dict[str, object]]:
    """The most recent quarantined rows, newest ingest first; open ones only unless
    ``include_resolved``.

    >>> # see tests/test_ingest_fixes.py for runnable examples
    """
    resolvable = _resolvable(store)
    if not resolvable:
        include_resolved = True
    where = [] if include_resolved else ["resolved_ingest IS NULL"]
    params: list[object] = []
    if table_name:
        where.append("table_name = ?")
        params.append(table_name)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    resolution = "resolved_ingest, resolution" if resolvable else "NULL, NULL"
    rows = store.con.execute(
        f"SELECT ingest_id, table_name, source, line, field, expected, found, reason, {resolution} "
        f"FROM quarantine {clause} ORDER BY ingest_id DESC, line LIMIT ?",
        [*params, limit],
    ).fetchall()
    keys = ("ingest_id", "table", "source", "line", "field", "expected", "found", "reason", "resolved_ingest", "resolution")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def _resolvable(store: Store) -> bool:
    """False for a store written before entries could resolve, opened read-only."""
    return bool(store.scalar("SELECT count(*) FROM duckdb_columns() WHERE table_name = 'quarantine' "
                             "AND column_name = 'resolved_ingest'"))


def quarantine_counts(store: Store) -> tuple[int, int]:
    """(open, resolved) quarantine entries."""
    if not _resolvable(store):
        return int(store.scalar("SELECT count(*) FROM quarantine")), 0
    row = store.one("SELECT count(*) FILTER (resolved_ingest IS NULL), count(*) FILTER (resolved_ingest IS NOT NULL) "
                    "FROM quarantine")
    return (int(row[0]), int(row[1])) if row else (0, 0)
