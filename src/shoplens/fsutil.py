"""Small file-system helpers shared by every writer of personal data.

- files are written atomically (temporary file, fsync, rename) and created private
  (mode 0600, folders 0700): ``private_umask`` sets the process umask once at the
  doors (CLI, server), ``write_atomic`` chmods explicitly for library callers;
- serving files carry a SHA-256 recorded beside them (``<file>.sha256``);
- ``check_writable`` probes a folder before long work, so a read-only or full folder
  fails in a second with one clear message instead of after the whole build.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from pathlib import Path

from shoplens.errors import StorageError

PRIVATE_UMASK = 0o077


def private_umask() -> int:
    """Make every file this process creates private to its user; returns the old umask."""
    return os.umask(PRIVATE_UMASK)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename; the file is created with mode 0600."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def check_writable(*folders: Path) -> None:
    """Create and remove a probe file in each folder (creating missing folders first).

    Raises ``StorageError`` naming the folder and the reason (read-only, permission
    denied, disk full).

    >>> import tempfile; check_writable(Path(tempfile.mkdtemp()))
    """
    for folder in folders:
        probe = folder / f".shoplens-write-probe-{os.getpid()}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"\0" * 4096)
                os.fsync(fd)
            finally:
                os.close(fd)
            probe.unlink()
        except OSError as err:
            with contextlib.suppress(OSError):
                probe.unlink(missing_ok=True)
            raise StorageError(f"cannot write to {folder}: {describe_os_error(err)}") from None


def describe_os_error(err: OSError) -> str:
    """A one-line reason for a file-system error, in words a user can act on."""
    hints = {
        errno.ENOSPC: "no space left on the device: free some space and run the command again",
        errno.EDQUOT: "disk quota exceeded: free some space and run the command again",
        errno.EFBIG: "file too large for this file system or process limit (ulimit -f)",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
    }
    reason = hints.get(err.errno or -1, err.strerror or str(err))
    return f"{reason} ({err.filename})" if err.filename else reason
