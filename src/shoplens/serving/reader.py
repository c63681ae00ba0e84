"""Reading the published serving files safely under concurrency, switches and damage.

- **Threads**: each thread keeps its own SQLite connection per file; a connection is
  only ever closed by the thread that uses it, so a snapshot switch can never close a
  handle another thread is reading from (the old shared connection did: segfault).
- **Switches**: ``CURRENT`` is re-read when its inode or mtime changes (one ``stat``
  per request), so a new build or an erasure is served from the next request on.
- **Integrity**: before a file is served, its bytes are checked against the SHA-256
  recorded at publish (``<file>.sha256``); the check is repeated whenever the file's
  size, mtime or inode changes, and after any SQLite error. A file that fails is never
  served: the reader falls back to the newest older serving file that passes, and
  ``health()`` says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoplens.errors import IntegrityError, StoreError, public
from shoplens.fsutil import checksum_path, file_sha256, write_atomic

_SNAP_NAME = re.compile(r"^snap_(\d+)(?:\.e(\d+))?\.sqlite$")


def profiles_dir(store_path: Path) -> Path:
    return store_path.parent / (store_path.stem + ".profiles")


def serving_files(folder: Path) -> list[tuple[int, Path]]:
    """Serving files in ``folder`` as (snapshot id, path), newest snapshot first."""
    out = []
    for path in folder.glob("snap_*.sqlite"):
        m = _SNAP_NAME.match(path.name)
        if m:
            out.append((int(m.group(1)), int(m.group(2) or 0), path))
    return [(snap, path) for snap, _gen, path in sorted(out, reverse=True)]


def current_name(folder: Path) -> str | None:
    try:
        return (folder / "CURRENT").read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def verify(path: Path) -> str | None:
    """None when ``path`` matches its recorded checksum, else why it does not."""
    try:
        expected = checksum_path(path).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return _adopt(path)
    try:
        actual = file_sha256(path)
    except OSError as err:
        return f"unreadable ({err.strerror})"
    return None if actual == expected else "checksum mismatch"


def _adopt(path: Path) -> str | None:
    """A file published before checksums were recorded: served if SQLite's own check of
    the whole file passes, and its checksum recorded then (when the folder is writable)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            ok = db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    except sqlite3.DatabaseError:
        ok = False
    if not ok:
        return "no checksum recorded and SQLite's check fails"
    with contextlib.suppress(OSError):
        write_atomic(checksum_path(path), file_sha256(path) + "\n")
    return None


def _signature(path: Path | str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass
class _Choice:
    """The file being served and why."""

    path: Path
    signature: tuple[int, int, int] | None
    current: str  # the name CURRENT points at
    problem: str | None = None  # why CURRENT is not the file served

    def __post_init__(self) -> None:
        self.path_str = str(self.path)  # stat()ed on every request: no pathlib on the hot path


class ProfileReader:
    """Reads the current serving file; notices when ``CURRENT`` moves to a new one."""

    def __init__(self, store_path: Path) -> None:
        self.folder = profiles_dir(store_path)
        self._pointer = str(self.folder / "CURRENT")
        self._lock = threading.Lock()
        self._local = threading.local()
        self._pointer_sig: tuple[int, int, int] | None = None
        self._choice: _Choice | None = None
        self._bad: dict[Path, tuple[tuple[int, int, int] | None, str]] = {}

    # ---- choosing the file -----------------------------------------------------------

    def _choose(self) -> _Choice:
        """The file to serve now; re-checked only when CURRENT or the file changed."""
        psig = _signature(self._pointer)
        choice = self._choice
        if choice is not None and psig == self._pointer_sig and _signature(choice.path_str) == choice.signature:
            return choice
        with self._lock:
            psig = _signature(self._pointer)
            name = current_name(self.folder)
            if name is None:
                raise StoreError("no published profiles yet: run 'shoplens build' first")
            self._choice = self._pick(name)
            self._pointer_sig = psig
            return self._choice

    def _pick(self, name: str) -> _Choice:
        wanted = self.folder / name
        problem = self._check(wanted)
        if problem is None:
            return _Choice(wanted, _signature(wanted), name)
        m = _SNAP_NAME.match(name)
        newest = int(m.group(1)) if m else None
        for snap, path in serving_files(self.folder):
            # never a newer file: one the current points past is a build that did not complete
            if path != wanted and (newest is None or snap <= newest) and self._check(path) is None:
                return _Choice(path, _signature(path), name, f"{name}: {problem}")
        raise IntegrityError(f"the current serving file failed its integrity check ({problem}) and no older "
                             "one passes: run 'shoplens build' to publish a new one")

    def _check(self, path: Path) -> str | None:
        sig = _signature(path)
        if sig is None:
            return "missing"
        known = self._bad.get(path)
        if known is not None and known[0] == sig:
            return known[1]
        problem = verify(path)
        if problem is not None:
            self._bad[path] = (sig, problem)
        return problem

    def _invalidate(self, path: Path) -> None:
        """After a SQLite error: re-verify ``path`` on the next request."""
        with self._lock:
            if self._choice is not None and self._choice.path == path:
                self._choice = None
            self._pointer_sig = None

    # ---- connections -----------------------------------------------------------------

    def db(self) -> sqlite3.Connection:
        """This thread's read-only connection to the file being served."""
        return self._connection(self._choose())

    def _connection(self, choice: _Choice) -> sqlite3.Connection:
        conns: dict[Path, tuple[tuple[int, int, int] | None, sqlite3.Connection]] = self._local.__dict__.setdefault("conns", {})
        held = conns.get(choice.path)
        if held is not None and held[0] == choice.signature:
            return held[1]
        for path, (_sig, con) in list(conns.items()):  # this thread's own connections only
            con.close()
            del conns[path]
        con = sqlite3.connect(f"file:{choice.path}?mode=ro", uri=True, check_same_thread=False)
        conns[choice.path] = (choice.signature, con)
        return con

    def query(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run a read on the served file. When SQLite reports damage, the file's checksum
        is checked: a file that fails is marked bad and the read retried once on the file
        chosen next; one that passes is kept (the error was passing: too many open files,
        an I/O hiccup) and the read answers 503."""
        for attempt in (0, 1):
            choice = self._choose()
            path, con = choice.path, self._connection(choice)
            try:
                return con.execute(sql, params).fetchall()
            except sqlite3.ProgrammingError:
                raise
            except sqlite3.DatabaseError:
                problem = verify(path)
                if problem is None or attempt:
                    raise IntegrityError("the serving file could not be read: try again, or run 'shoplens build' "
                                         "to publish a new one") from None
                self._bad[path] = (_signature(path), problem)
                self._invalidate(path)
        raise AssertionError("unreachable")  # pragma: no cover

    def snapshot_id(self, fresh: bool = True) -> int | None:
        """The snapshot of the file being served; ``fresh=False`` takes the file chosen
        for the last read without checking again (a hot path that has just read)."""
        choice = self._choice if not fresh and self._choice is not None else self._choose()
        m = _SNAP_NAME.match(choice.path.name)
        return int(m.group(1)) if m else None

    def get_raw(self, customer_id: str) -> str | None:
        """The stored JSON text of a profile (served as is, without re-encoding)."""
        rows = self.query("SELECT doc FROM profiles WHERE customer_id = ?", (customer_id,))
        return None if not rows else str(rows[0][0])

    def get(self, customer_id: str) -> dict[str, Any] | None:
        raw = self.get_raw(customer_id)
        return None if raw is None else dict(json.loads(raw))

    def health(self) -> dict[str, Any]:
        """What is served and whether it is the published current file.

        ``status`` is ``ok``, ``degraded`` (serving an older file because the current
        one failed its check) or ``unavailable`` (nothing can be served).
        """
        try:
            choice = self._choose()
            snap = self.query("SELECT value FROM meta WHERE key = 'snapshot_id'")
        except (StoreError, IntegrityError) as err:
            return {"status": "unavailable", "snapshot_id": None, "problem": public(str(err))}
        out: dict[str, Any] = {"status": "ok" if choice.problem is None else "degraded",
                               "snapshot_id": int(snap[0][0]) if snap else None}
        if choice.problem is not None:
            out["problem"] = f"current serving file refused ({choice.problem}); serving an older snapshot"
        return out
