"""Snapshots: a build killed midway (a real process, SIGKILL) leaves the previous
snapshot current, readable and unchanged; the next build recovers."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from shoplens.jobs import Summary
from shoplens.store import Store


def _fingerprint(store: Store, snap: int) -> tuple:
    return store.one(
        f"SELECT count(*), sum(total_spend), sum(n_orders), string_agg(rfm_segment, ',' ORDER BY customer_id) "
        f"FROM snap_{snap}.customer_features"
    )


def test_killed_build_leaves_previous_snapshot_intact(demo_shop: Summary, tmp_path: Path) -> None:
    folder = tmp_path / "shop"
    shutil.copytree(demo_shop.folder, folder)
    with Store.open(folder / "shoplens.duckdb", read_only=True) as st:
        before = st.require_snapshot()
        expected = _fingerprint(st, before)

    env = dict(os.environ, SHOPLENS_FAULT_PAUSE="features:120")
    proc = subprocess.Popen(
        [sys.executable, "-m", "shoplens.cli", "build", "--config", str(folder / "shoplens.toml")],
        env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        assert proc.stderr is not None
        for line in proc.stderr:  # wait until the build is midway: features written, not switched
            if "fault-injection: paused after features" in line or time.monotonic() > deadline:
                break
        assert proc.poll() is None, "the build should still be running"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    with Store.open(folder / "shoplens.duckdb", read_only=True) as st:
        assert st.current_snapshot() == before
        assert _fingerprint(st, before) == expected
        statuses = dict(st.con.execute("SELECT snapshot_id, status FROM snapshots").fetchall())
    assert statuses[before] == "complete" and max(statuses) > before

    done = subprocess.run([sys.executable, "-m", "shoplens.cli", "build", "--config", str(folder / "shoplens.toml")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with Store.open(folder / "shoplens.duckdb", read_only=True) as st:
        now = st.require_snapshot()
        assert now > before
        assert _fingerprint(st, now) == expected  # same data, same features
        killed = [s for s, status in st.con.execute("SELECT snapshot_id, status FROM snapshots").fetchall() if status == "failed"]
        assert len(killed) == 1
        assert st.scalar("SELECT count(*) FROM information_schema.schemata WHERE schema_name = ?", [f"snap_{killed[0]}"]) == 0


def test_kill_while_embedding_keeps_the_cache_and_the_snapshot(demo_shop: Summary, tmp_path: Path) -> None:
    """SIGKILL in the middle of the text step's embedding: the previous snapshot stays
    current, the embedding cache is a valid file with what was embedded so far, and the
    next build takes those from the cache."""
    import re
    import sqlite3

    folder = tmp_path / "shop"
    shutil.copytree(demo_shop.folder, folder)
    cache = folder / ".shoplens" / "embeddings.sqlite"
    cache.unlink(missing_ok=True)
    with Store.open(folder / "shoplens.duckdb", read_only=True) as st:
        before = st.require_snapshot()
        n_texts = st.scalar("SELECT count(*) FROM texts")
    # --force: with unchanged inputs the text stage would be reused, and nothing embedded
    proc = subprocess.Popen([sys.executable, "-m", "shoplens.cli", "build", "--force", "--config", str(folder / "shoplens.toml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        rows = 0
        while time.monotonic() < deadline and proc.poll() is None:
            if cache.exists():
                try:
                    with sqlite3.connect(cache) as con:
                        rows = con.execute("SELECT count(*) FROM embeddings").fetchone()[0]
                except sqlite3.OperationalError:  # table not created yet
                    rows = 0
                if rows >= 64:
                    break
            time.sleep(0.05)
        assert proc.poll() is None and 64 <= rows < n_texts, f"not killed mid-embedding: {rows} of {n_texts}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    with Store.open(folder / "shoplens.duckdb", read_only=True) as st:
        assert st.current_snapshot() == before
    with sqlite3.connect(cache) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        kept = con.execute("SELECT count(*) FROM embeddings").fetchone()[0]
    assert kept >= rows
    done = subprocess.run([sys.executable, "-m", "shoplens.cli", "build", "--force", "--config", str(folder / "shoplens.toml")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    match = re.search(r"embeddings:\s+([\d,]+)\s+computed,\s+([\d,]+)\s+from\s+the\s+cache", done.stdout)
    assert match, done.stdout
    assert int(match.group(2).replace(",", "")) >= kept  # what the killed build embedded is not embedded again
