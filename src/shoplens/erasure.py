"""Right to erasure: remove one customer from every table, snapshot, serving file,
vault, quarantine and the audit log.

The customer is named by pseudonym (``c_...``) or, with the secret, by the shop's own
id; with the secret, quarantined rows are also decrypted and matched on the raw id.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from shoplens.errors import NotFoundError
from shoplens.privacy import PSEUDONYM_PREFIX, Keys
from shoplens.serving.access import Access
from shoplens.serving.profile_store import profiles_dir
from shoplens.store import Store


@dataclass
class ErasureReport:
    customer_id: str
    removed: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.removed.values())


def _delete(store: Store, report: ErasureReport, label: str, sql: str, params: list[object]) -> None:
    n = store.con.execute(sql, params).fetchall()[0][0]
    if n:
        report.removed[label] = report.removed.get(label, 0) + int(n)


def forget(store: Store, ref: str, keys: Keys | None) -> ErasureReport:
    """Erase customer ``ref`` everywhere; raises NotFoundError when nothing matches."""
    raw = None if ref.startswith(PSEUDONYM_PREFIX) else ref
    if raw is not None and keys is None:
        raise NotFoundError(f"'{ref}' is not a pseudonym (c_...) and no secret key is available to map it")
    cid = ref if raw is None else keys.pseudonym(raw)  # type: ignore[union-attr]
    report = ErasureReport(cid)
    with store.transaction():
        orders = [r[0] for r in store.con.execute("SELECT order_id FROM orders WHERE customer_id = ?", [cid]).fetchall()]
        texts = [r[0] for r in store.con.execute("SELECT text_id FROM texts WHERE customer_id = ?", [cid]).fetchall()]
        if orders:
            _delete(store, report, "order_items", "DELETE FROM order_items WHERE list_contains(?, order_id)", [orders])
        if texts:
            _delete(store, report, "vault_text_raw", "DELETE FROM vault_text_raw WHERE list_contains(?, text_id)", [texts])
        for table in ("orders", "events", "texts", "vault_customer_pii", "customers"):
            _delete(store, report, table, f"DELETE FROM {table} WHERE customer_id = ?", [cid])
        _delete(store, report, "quarantine", "DELETE FROM quarantine WHERE contains(found, ?)", [cid])
        if raw is not None and keys is not None:
            hits = [
                (i, rec) for i, rec in store.con.execute(
                    "SELECT rowid, record_enc FROM quarantine WHERE record_enc IS NOT NULL").fetchall()
                if raw in _values(keys.decrypt(rec))
            ]
            for rowid, _rec in hits:
                _delete(store, report, "quarantine", "DELETE FROM quarantine WHERE rowid = ?", [rowid])
        schemas = [r[0] for r in store.con.execute(
            "SELECT DISTINCT table_schema FROM information_schema.columns "
            "WHERE table_schema LIKE 'snap_%' AND column_name = 'customer_id'").fetchall()]
        for schema in schemas:
            tables = [r[0] for r in store.con.execute(
                "SELECT table_name FROM information_schema.columns WHERE table_schema = ? AND column_name = 'customer_id'",
                [schema]).fetchall()]
            for table in tables:
                _delete(store, report, f"snapshots.{table}", f"DELETE FROM {schema}.{table} WHERE customer_id = ?", [cid])
    store.con.execute("CHECKPOINT")
    for path in sorted(profiles_dir(Path(store.path)).glob("snap_*.sqlite")):
        db = sqlite3.connect(path)
        for table in ("profiles", "flat"):
            n = db.execute(f"DELETE FROM {table} WHERE customer_id = ?", [cid]).rowcount
            if n:
                report.removed[f"serving.{table}"] = report.removed.get(f"serving.{table}", 0) + n
        db.commit()
        db.execute("VACUUM")
        db.close()
    access = Access(Path(store.path))
    n = access.forget(cid)
    access.close()
    if n:
        report.removed["audit"] = n
    if not report.total:
        raise NotFoundError(f"customer '{ref}' not found: nothing to erase")
    return report


def _values(record_json: str) -> set[str]:
    try:
        obj = json.loads(record_json)
    except json.JSONDecodeError:
        return {record_json}
    return {str(v) for v in obj.values()} if isinstance(obj, dict) else {record_json}
