"""The serving side under stress, against a real uvicorn server on loopback: snapshot
switches under concurrent readers, damaged serving files, and erasure through the API."""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from servers import role_keys, serving

from shoplens.config import load_config
from shoplens.jobs import Summary
from shoplens.serving.reader import current_name, profiles_dir


@contextmanager
def running_server(folder: Path) -> Iterator[tuple[str, dict[str, str], subprocess.Popen[bytes]]]:
    """A uvicorn server over the shop in ``folder``; yields its base URL, a key per role, the process."""
    keys = role_keys(folder, f"rel-{time.monotonic_ns()}", ("admin", "analyst"))
    with serving(folder) as (base, proc):
        yield base, keys, proc


@pytest.fixture
def shop(demo_shop: Summary, tmp_path: Path) -> Path:
    folder = tmp_path / "shop"
    shutil.copytree(demo_shop.folder, folder)
    return folder


def _ids(folder: Path, n: int = 60) -> list[str]:
    serving = profiles_dir(load_config(folder / "shoplens.toml").store_path)
    with sqlite3.connect(serving / str(current_name(serving))) as db:
        return [r[0] for r in db.execute("SELECT customer_id FROM profiles ORDER BY customer_id LIMIT ?", [n])]


def _twin(serving: Path, name: str, twin: str) -> None:
    """A second valid serving file (same content, its own checksum)."""
    shutil.copyfile(serving / name, serving / twin)
    shutil.copyfile(serving / (name + ".sha256"), serving / (twin + ".sha256"))


def _point(serving: Path, name: str) -> None:
    (serving / "CURRENT.tmp").write_text(name, encoding="utf-8")
    os.replace(serving / "CURRENT.tmp", serving / "CURRENT")


def test_snapshot_switches_under_concurrent_readers(shop: Path) -> None:
    """CURRENT flips every 50 ms while 4 threads read: every answer is a 200, the server lives."""
    serving = profiles_dir(load_config(shop / "shoplens.toml").store_path)
    first = str(current_name(serving))
    second = first.replace(".sqlite", ".e9.sqlite")
    _twin(serving, first, second)
    ids = _ids(shop)
    statuses: Counter[int] = Counter()
    stop = threading.Event()
    with running_server(shop) as (base, keys, proc):
        def read(seed: int) -> None:
            rng = random.Random(seed)
            with httpx.Client(base_url=base, headers={"X-API-Key": keys["analyst"]}, timeout=10) as client:
                while not stop.is_set():
                    try:
                        statuses[client.get(f"/profiles/{rng.choice(ids)}").status_code] += 1
                    except httpx.TransportError:
                        statuses[-1] += 1
                        return

        threads = [threading.Thread(target=read, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 4
        flips = 0
        while time.monotonic() < deadline:
            _point(serving, second if flips % 2 == 0 else first)
            flips += 1
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join(timeout=20)
        assert proc.poll() is None, f"server died with exit code {proc.returncode}"
    assert flips >= 40
    assert set(statuses) == {200} and statuses[200] > 100, statuses


@pytest.mark.parametrize("damage", ["zeroed header", "mid-file"])
def test_damaged_serving_file_is_refused_and_an_older_one_served(shop: Path, damage: str) -> None:
    serving = profiles_dir(load_config(shop / "shoplens.toml").store_path)
    name = str(current_name(serving))
    _twin(serving, name, "snap_0.sqlite")  # an older snapshot that passes its check
    ids = _ids(shop, 200)
    with running_server(shop) as (base, keys, proc):
        h = {"X-API-Key": keys["analyst"]}
        assert httpx.get(base + "/health").json()["status"] == "ok"
        path = serving / name
        with open(path, "r+b") as fh:
            if damage == "zeroed header":
                fh.write(b"\0" * 100)
            else:
                size = path.stat().st_size
                for offset in range(size // 4, size, size // 8):
                    fh.seek(offset)
                    fh.write(os.urandom(4096))
        got = Counter(httpx.get(f"{base}/profiles/{cid}", headers=h).status_code for cid in ids)
        assert got == Counter({200: len(ids)}), got
        health = httpx.get(base + "/health").json()
        assert health["status"] == "degraded" and "checksum" in health["problem"]
        assert str(shop) not in health["problem"]
        assert httpx.get(base + "/segments", headers=h).status_code == 200
        assert proc.poll() is None


def test_a_damaged_current_file_never_falls_back_to_a_newer_one(shop: Path) -> None:
    from shoplens.serving.reader import ProfileReader

    store_path = load_config(shop / "shoplens.toml").store_path
    serving = profiles_dir(store_path)
    name = str(current_name(serving))
    _twin(serving, name, "snap_0.sqlite")  # an older complete snapshot
    _twin(serving, name, "snap_999.sqlite")  # what a build killed after writing its file leaves
    with open(serving / name, "r+b") as fh:
        fh.write(b"\0" * 100)
    assert ProfileReader(store_path)._choose().path.name == "snap_0.sqlite"


def test_nothing_servable_is_a_503_and_health_says_so(shop: Path) -> None:
    serving = profiles_dir(load_config(shop / "shoplens.toml").store_path)
    name = str(current_name(serving))
    cid = _ids(shop, 1)[0]
    with running_server(shop) as (base, keys, _proc):
        with open(serving / name, "r+b") as fh:
            fh.write(b"\0" * 100)
        r = httpx.get(f"{base}/profiles/{cid}", headers={"X-API-Key": keys["analyst"]})
        assert r.status_code == 503 and r.json()["code"] == "integrity"
        assert str(shop) not in r.text
        assert httpx.get(base + "/health").json()["status"] == "unavailable"


def test_erasure_through_the_api_takes_effect_at_once(shop: Path) -> None:
    cid = _ids(shop, 1)[0]
    with running_server(shop) as (base, keys, _proc):
        a = {"X-API-Key": keys["admin"]}
        assert httpx.get(f"{base}/profiles/{cid}", headers=a).status_code == 200
        r = httpx.delete(f"{base}/admin/customers/{cid}", headers=a, timeout=60)
        assert r.status_code == 200, r.text
        assert httpx.get(f"{base}/profiles/{cid}", headers=a).status_code == 404
        assert httpx.delete(f"{base}/admin/customers/{cid}", headers=a, timeout=60).status_code == 404
        assert httpx.delete(f"{base}/admin/customers/c_00000000000000000000", headers=a, timeout=60).status_code == 404
        assert httpx.get(base + "/health").json()["status"] == "ok"  # the rewritten file passes its check
