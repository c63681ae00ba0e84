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
AUDIT_COMMIT_S = 0.05
AUDIT_COMMIT_ROWS = 500
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
        self._keys: dict[str, tuple[str, str, float | None, float | None]] = {}  # key hash -> row
        self._version = -1
        self._pending = 0  # audit rows inserted since the last commit
        self._since = 0.0
        self._timer: threading.Timer | None = None
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.executescript(
            "PRAGMA journal_mode=WAL;"
            # WAL + NORMAL: a commit survives a killed process (not a power cut) without an fsync per audit row
            "PRAGMA synchronous=NORMAL;"
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
            self._keys.clear()  # our own write: data_version does not change for it
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
            self._keys.clear()  # our own write: data_version does not change for it
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
            self._keys.clear()  # our own write: data_version does not change for it
            row = self.db.execute("SELECT created_at, expires_at FROM api_keys WHERE name = ?", [name]).fetchone()
            if row is None:
                raise NotFoundError(f"no API key named '{name}': 'shoplens keys list' shows them")
            created, expires = row
            new_expiry = self._expiry(expires_days, now) if expires_days is not None else \
                None if expires is None else now + (expires - created)
            self.db.execute("UPDATE api_keys SET key_hash = ?, created_at = ?, expires_at = ?, revoked_at = NULL, "
                            "last_used = NULL WHERE name = ?", [self._hash(key), now, new_expiry, name])
        return key

    def _key_row(self, key_hash: str) -> tuple[str, str, float | None, float | None] | None:
        """The key's row, from a cache that is dropped whenever another connection (``shoplens
        keys revoke`` in another process) has committed: ``PRAGMA data_version`` says so."""
        with self._lock:
            version = self.db.execute("PRAGMA data_version").fetchall()[0][0]
            if version != self._version:
                self._version, self._keys = version, {}
            row = self._keys.get(key_hash)
            if row is None:  # unknown keys are not cached: random keys cannot grow the cache
                rows = self.db.execute("SELECT name, role, expires_at, revoked_at FROM api_keys WHERE key_hash = ?",
                                       [key_hash]).fetchall()
                if not rows:
                    return None
                row = self._keys[key_hash] = rows[0]
            return row

    def authenticate(self, key: str | None) -> Principal:
        if not key:
            raise AuthError("missing API key: send it in the X-API-Key header")
        row = self._key_row(self._hash(key))
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
        """Record one request. Rows are committed in groups (``AUDIT_COMMIT_S``, or
        ``AUDIT_COMMIT_ROWS`` rows): a commit per request cost more than the profile read
        it records; a killed process loses at most the last group."""
        with self._lock:
            if not self._pending:
                self.db.execute("BEGIN")
                self._since = time.monotonic()
            self.db.execute(
                "INSERT INTO audit (ts, name, role, method, path, customer_id, status, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [time.time(), who.name if who else None, who.role if who else None, method, path, customer_id, status, detail],
            )
            self._pending += 1
            due = self._pending >= AUDIT_COMMIT_ROWS or time.monotonic() - self._since >= AUDIT_COMMIT_S
            if due:
                self._commit_locked()
            elif self._timer is None:
                self._timer = threading.Timer(AUDIT_COMMIT_S, self.commit)
                self._timer.daemon = True
                self._timer.start()

    def commit(self) -> None:
        """Commit the audit rows gathered so far."""
        with self._lock:
            self._commit_locked()

    def _commit_locked(self) -> None:
        if self._pending:
            self.db.execute("COMMIT")
            self._pending = 0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        self.commit()
        self.db.close()


def require_role(who: Principal, *roles: str, what: str = "do this") -> None:
    if who.role not in roles:
        raise ForbiddenError(f"role '{who.role}' may not {what}; needs one of: {', '.join(roles)}")


def _date(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")
