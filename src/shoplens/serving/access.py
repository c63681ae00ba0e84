"""API keys, roles and the audit log, in ``<store>.access.sqlite``.

Keys are 32 random bytes shown once at creation; only their SHA-256 is stored (a key
has full entropy, so a plain hash is enough: nothing to brute-force). Roles:

- ``admin``: everything, including decrypted PII (with the secret) and erasure;
- ``analyst``: profiles, segments and audiences, never PII;
- ``service``: profiles for activation (ids, segment, tags, predictions), no exports.

A key may expire (``expires_at``) and can be revoked or rotated (a new secret under the
same name and role; the old one stops working at once). ``last_used`` is written at most
once a minute per key, so authentication stays a read. Older access files gain the new
columns on open.

The audit table holds one row per request: time, key name and role, method, the route
with the customer's pseudonym (never the shop's own id), the pseudonym, status and a
detail (``raw-id lookup``, ``pii``).
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from shoplens.errors import AuthError, ForbiddenError, NotFoundError, ShopLensError

ROLES = ("admin", "analyst", "service")
LAST_USED_EVERY_S = 60.0
_KEY_COLUMNS = {"expires_at": "REAL", "revoked_at": "REAL", "last_used": "REAL"}
__all__ = ["ROLES", "Access", "AuthError", "ForbiddenError", "KeyInfo", "Principal", "access_path", "require_role"]


@dataclass(frozen=True)
class Principal:
    name: str
    role: str


@dataclass(frozen=True)
class KeyInfo:
    """What ``keys list`` shows about a key: never the key or its hash. Times are Unix seconds."""

    name: str
    role: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used: float | None


def access_path(store_path: Path) -> Path:
    return store_path.parent / (store_path.stem + ".access.sqlite")


class Access:
    def __init__(self, store_path: Path) -> None:
        self.path = access_path(store_path)
        self._lock = threading.Lock()
        self._used: dict[str, float] = {}  # key name -> when last_used was last written
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.executescript(
            "PRAGMA journal_mode=WAL;"
            "CREATE TABLE IF NOT EXISTS api_keys (key_hash TEXT PRIMARY KEY, name TEXT UNIQUE, role TEXT, created_at REAL);"
            "CREATE TABLE IF NOT EXISTS audit (ts REAL, name TEXT, role TEXT, method TEXT, path TEXT, customer_id TEXT, status INTEGER, detail TEXT);"
        )
        have = {row[1] for row in self.db.execute("PRAGMA table_info(api_keys)")}
        for column, kind in _KEY_COLUMNS.items():
            if column not in have:  # an access file from an older version
                try:
                    self.db.execute(f"ALTER TABLE api_keys ADD COLUMN {column} {kind}")
                except sqlite3.OperationalError as err:  # another process added it just now
                    if "duplicate column" not in str(err):
                        raise

    @staticmethod
    def _hash(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    @staticmethod
    def _expiry(days: float | None, now: float) -> float | None:
        if days is None:
            return None
        if not days > 0:
            raise ShopLensError(f"--expires-days: expected a number of days above 0, found {days:g}")
        return now + days * 86400

    def create_key(self, name: str, role: str, expires_days: float | None = None) -> str:
        """A new key for ``name`` with ``role``; the key itself is returned once, never stored."""
        if role not in ROLES:
            raise ShopLensError(f"unknown role '{role}': expected one of {', '.join(ROLES)}")
        now = time.time()
        expires = self._expiry(expires_days, now)
        key = "slk_" + secrets.token_urlsafe(32)
        with self._lock:
            try:
                self.db.execute("INSERT INTO api_keys (key_hash, name, role, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                                [self._hash(key), name, role, now, expires])
            except sqlite3.IntegrityError:
                raise ShopLensError(f"an API key named '{name}' exists already; 'shoplens keys rotate {name}' "
                                    "gives it a new secret") from None
        return key

    def list_keys(self) -> list[KeyInfo]:
        """Every key, oldest first, revoked and expired ones included."""
        with self._lock:
            rows = self.db.execute("SELECT name, role, created_at, expires_at, revoked_at, last_used FROM api_keys "
                                   "ORDER BY created_at").fetchall()
        return [KeyInfo(*row) for row in rows]

    def revoke(self, name: str) -> None:
        """Stop ``name``'s key from working (it stays listed, marked revoked)."""
        with self._lock:
            changed = self.db.execute("UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE name = ?",
                                      [time.time(), name]).rowcount
        if not changed:
            raise NotFoundError(f"no API key named '{name}': 'shoplens keys list' shows them")

    def rotate(self, name: str, expires_days: float | None = None) -> str:
        """A new secret for ``name`` (same role); the old one stops working at once. The
        new key expires after ``expires_days``, or after the old key's lifetime if it had one."""
        now = time.time()
        key = "slk_" + secrets.token_urlsafe(32)
        with self._lock:
            row = self.db.execute("SELECT created_at, expires_at FROM api_keys WHERE name = ?", [name]).fetchone()
            if row is None:
                raise NotFoundError(f"no API key named '{name}': 'shoplens keys list' shows them")
            created, expires = row
            new_expiry = self._expiry(expires_days, now) if expires_days is not None else \
                None if expires is None else now + (expires - created)
            self.db.execute("UPDATE api_keys SET key_hash = ?, created_at = ?, expires_at = ?, revoked_at = NULL, "
                            "last_used = NULL WHERE name = ?", [self._hash(key), now, new_expiry, name])
        return key

    def authenticate(self, key: str | None) -> Principal:
        if not key:
            raise AuthError("missing API key: send it in the X-API-Key header")
        with self._lock:
            row = self.db.execute("SELECT name, role, expires_at, revoked_at FROM api_keys WHERE key_hash = ?",
                                  [self._hash(key)]).fetchone()
        if row is None:
            raise AuthError("invalid API key")
        name, role, expires, revoked = row
        now = time.time()
        if revoked is not None:
            raise AuthError("this API key was revoked; ask an admin for a new one")
        if expires is not None and now >= expires:
            raise AuthError(f"this API key expired on {_date(expires)}; ask an admin to rotate it")
        if now - self._used.get(name, 0.0) >= LAST_USED_EVERY_S:
            self._used[name] = now
            with self._lock:
                self.db.execute("UPDATE api_keys SET last_used = ? WHERE name = ?", [now, name])
        return Principal(name, role)

    def audit(self, who: Principal | None, method: str, path: str, customer_id: str | None, status: int, detail: str = "") -> None:
        with self._lock:
            self.db.execute(
                "INSERT INTO audit (ts, name, role, method, path, customer_id, status, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [time.time(), who.name if who else None, who.role if who else None, method, path, customer_id, status, detail],
            )

    def forget(self, customer_id: str) -> int:
        """Drop a customer's id from the audit log (right to erasure); returns rows changed."""
        with self._lock:
            return self.db.execute("UPDATE audit SET customer_id = NULL, path = '(erased)' WHERE customer_id = ?", [customer_id]).rowcount

    def close(self) -> None:
        self.db.close()


def require_role(who: Principal, *roles: str, what: str = "do this") -> None:
    if who.role not in roles:
        raise ForbiddenError(f"role '{who.role}' may not {what}; needs one of: {', '.join(roles)}")


def _date(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")
