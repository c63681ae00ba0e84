"""File-system refusals end with one ``error:`` line and exit 2, never a traceback, and
lose nothing: a full disk mid-build, a read-only serving folder (refused before any
work), a folder the user may not write. Files ShopLens creates are private (0600), and
the default secret key lives outside the shop folder."""

from __future__ import annotations

import os
import resource
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoplens.config import load_config
from shoplens.jobs import Summary
from shoplens.serving.reader import profiles_dir
from shoplens.store import Store

NOBODY = 65534


def _unprivileged_user_works() -> bool:
    """Root with setpriv, an unprivileged user who can run this Python but not write a
    root-owned folder (the permission model these tests rely on)."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return False
    probe = Path(tempfile.mkdtemp(prefix="shoplens-perm-", dir="/tmp"))
    try:
        probe.chmod(0o755)
        code = f"import shoplens, pathlib; pathlib.Path({str(probe / 'x')!r}).touch()"
        res = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", sys.executable,
                              "-c", code], capture_output=True, text=True, timeout=60)
        return "PermissionError" in res.stderr and not (probe / "x").exists()
    finally:
        shutil.rmtree(probe, ignore_errors=True)


as_root = pytest.mark.skipif(not _unprivileged_user_works(),
                             reason="needs root, setpriv and an unprivileged user who can run this Python")


def _cli(args: list[str], env: dict[str, str] | None = None, user: int | None = None,
         limit_bytes: int | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "shoplens.cli", *args]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]

    def limit() -> None:
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env or dict(os.environ),
                          preexec_fn=limit)


def _one_error_line(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.stderr[-2000:]
    return lines[0]


@pytest.fixture
def shop(demo_shop: Summary) -> Iterator[Path]:
    """A copy of the demo shop in a folder an unprivileged user can reach."""
    base = Path(tempfile.mkdtemp(prefix="shoplens-fs-", dir="/tmp"))
    base.chmod(0o755)
    folder = base / "shop"
    shutil.copytree(demo_shop.folder, folder)
    yield folder
    shutil.rmtree(base, ignore_errors=True)


def _snapshots(folder: Path) -> list[tuple[int, str]]:
    with Store.for_config(load_config(folder / "shoplens.toml"), read_only=True) as st:
        return [(int(a), str(b)) for a, b in st.con.execute("SELECT snapshot_id, status FROM snapshots ORDER BY 1").fetchall()]


def test_disk_full_during_a_build_is_one_error_line_and_keeps_the_last_snapshot(shop: Path) -> None:
    cfg = load_config(shop / "shoplens.toml")
    before = _snapshots(shop)
    # no file may grow past 256 KiB: the store's new blocks, its WAL and the serving file all do
    res = _cli(["build", "-c", str(shop / "shoplens.toml")], limit_bytes=256 * 1024)
    line = _one_error_line(res)
    assert "too large" in line or "space" in line, line
    with Store.for_config(cfg, read_only=True) as st:
        assert st.current_snapshot() == max(s for s, status in before if status == "complete")
    assert _cli(["status", "-c", str(shop / "shoplens.toml")]).returncode == 0


@as_root
def test_read_only_serving_folder_is_refused_before_the_build(shop: Path) -> None:
    cfg = load_config(shop / "shoplens.toml")
    for path in [shop, *shop.rglob("*")]:
        os.chown(path, NOBODY, NOBODY)
    serving = profiles_dir(cfg.store_path)
    os.chown(serving, 0, 0)
    serving.chmod(0o755)  # the build's user can read it but not write
    before = _snapshots(shop)
    res = _cli(["build", "-c", str(shop / "shoplens.toml")], user=NOBODY)
    line = _one_error_line(res)
    assert "cannot write to" in line and "permission denied" in line, line
    assert _snapshots(shop) == before  # refused before a snapshot was begun


@as_root
def test_permission_denied_and_full_device_on_output_files(shop: Path) -> None:
    cfg_path = str(shop / "shoplens.toml")
    locked = shop.parent / "locked"
    locked.mkdir(mode=0o755)
    res = _cli(["report", "-c", cfg_path, "--out", str(locked / "r.html")], user=NOBODY)
    assert "permission denied" in _one_error_line(res)
    res = _cli(["audience", "n_orders >= 0", "--channel", "push", "-c", cfg_path, "--out", "/dev/full"])
    assert "no space left" in _one_error_line(res)


def test_created_files_are_private_and_the_key_lives_outside_the_shop(demo_shop: Summary, tmp_path: Path) -> None:
    folder = tmp_path / "shop"
    folder.mkdir()
    for name in ("customers.csv", "products.csv", "orders.csv", "order_items.csv", "events.parquet", "texts.jsonl",
                 "consents.csv"):
        shutil.copyfile(demo_shop.folder / name, folder / name)
    text = (demo_shop.folder / "shoplens.toml").read_text("utf-8")
    (folder / "shoplens.toml").write_text(text, encoding="utf-8")
    inputs = {p.name for p in folder.iterdir()}
    keydir = tmp_path / "config-home"
    env = {k: v for k, v in os.environ.items() if k != "SHOPLENS_SECRET_KEY"}
    env["SHOPLENS_KEY_DIR"] = str(keydir)
    cfg = str(folder / "shoplens.toml")
    for args in (["ingest", "-c", cfg], ["build", "-c", cfg], ["keys", "create", "me", "-c", cfg],
                 ["audience", "n_orders >= 0", "--channel", "push", "-c", cfg, "--out", str(folder / "aud.csv")],
                 ["report", "-c", cfg, "--out", str(folder / "r.html")]):
        res = _cli(args, env=env)
        assert res.returncode == 0, (args, res.stderr[-2000:])
    keys = list(keydir.glob("*.key"))
    assert len(keys) == 1 and stat.S_IMODE(keys[0].stat().st_mode) == 0o600
    assert not any(p.suffix == ".key" for p in folder.rglob("*"))
    loose = [f"{p.relative_to(folder)} {oct(stat.S_IMODE(p.stat().st_mode))}" for p in folder.rglob("*")
             if p.name not in inputs and stat.S_IMODE(p.stat().st_mode) & 0o077]
    assert loose == []
