"""API keys, roles and the audit log, in ``<store>.access.sqlite``.

Keys are 32 random bytes shown once at creation; only their SHA-256 is stored (a key
has full entropy, so a plain hash is enough: nothing to brute-force). Roles:

- ``admin``: everything, including decrypted PII (with the secret) and erasure;
- ``analyst``: profiles, segments and audiences, never PII;
- ``service``: profiles for activation (ids, segment, tags, predictions), no exports.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from shoplens.errors import AuthError, ForbiddenError, ShopLensError

ROLES = ("admin", "analyst", "service")
__all__ = ["ROLES", "Access", "AuthError", "ForbiddenError", "Principal", "access_path", "require_role"]


@dataclass(frozen=True)
class Principal:
    name: str
    role: str


def access_path(store_path: Path) -> Path:
    return store_path.parent / (store_path.stem + ".access.sqlite")


class Access:
    def __init__(self, store_path: Path) -> None:
        self.path = access_path(store_path)
        self._lock = threading.Lock()
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.executescript(
            "PRAGMA journal_mode=WAL;"
            "CREATE TABLE IF NOT EXISTS api_keys (key_hash TEXT PRIMARY KEY, name TEXT UNIQUE, role TEXT, created_at REAL);"
            "CREATE TABLE IF NOT EXISTS audit (ts REAL, name TEXT, role TEXT, method TEXT, path TEXT, customer_id TEXT, status INTEGER, detail TEXT);"
        )

    @staticmethod
    def _hash(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    def create_key(self, name: str, role: str) -> str:
        """A new key for ``name`` with ``role``; the key itself is returned once, never stored."""
        if role not in ROLES:
            raise ShopLensError(f"unknown role '{role}': expected one of {', '.join(ROLES)}")
        key = "slk_" + secrets.token_urlsafe(32)
        with self._lock:
            try:
                self.db.execute("INSERT INTO api_keys VALUES (?, ?, ?, ?)", [self._hash(key), name, role, time.time()])
            except sqlite3.IntegrityError:
                raise ShopLensError(f"an API key named '{name}' exists already") from None
        return key

    def authenticate(self, key: str | None) -> Principal:
        if not key:
            raise AuthError("missing API key: send it in the X-API-Key header")
        with self._lock:
            row = self.db.execute("SELECT name, role FROM api_keys WHERE key_hash = ?", [self._hash(key)]).fetchone()
        if row is None:
            raise AuthError("invalid API key")
        return Principal(row[0], row[1])

    def audit(self, who: Principal | None, method: str, path: str, customer_id: str | None, status: int, detail: str = "") -> None:
        with self._lock:
            self.db.execute(
                "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [time.time(), who.name if who else None, who.role if who else None, method, path, customer_id, status, detail],
            )

    def forget(self, customer_id: str) -> int:
        """Drop a customer's id from the audit log (right to erasure); returns rows changed."""
        with self._lock:
            return self.db.execute("UPDATE audit SET customer_id = NULL, path = '(erased)' WHERE customer_id = ?", [customer_id]).rowcount

    def close(self) -> None:
        self.db.close()


def require_role(who: Principal, *roles: str) -> None:
    if who.role not in roles:
        raise ForbiddenError(f"role '{who.role}' may not do this; needs one of: {', '.join(roles)}")
