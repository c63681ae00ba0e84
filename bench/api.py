"""Benchmark: GET /profiles/{id} over 1M profiles on loopback, ShopLens' API (SQLite
serving file) vs the same FastAPI endpoint reading the documents from DuckDB; then
audience queries over the 1M-row flat table.

    .venv/bin/python bench/api.py                      # ~4 min, 1M profiles (cached)
    .venv/bin/python bench/api.py --profiles 100000

The profiles are the demo shop's documents replicated with new ids and figures (about
2 KB each), written once to bench/.cache/. Both servers are real uvicorn processes on
127.0.0.1; the load generator is an asyncio httpx client in this process, running a
fixed request rate of 200 req/s (open loop: the target's condition), then a fixed
number of concurrent connections per level (closed loop, for throughput). The ratio
printed last is the DuckDB-backed p99 / ours at 200 req/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import httpx
import numpy as np

CACHE = Path(__file__).resolve().parent / ".cache"
LEVELS = (1, 4, 16, 32)
SECONDS = 8.0

DUCK_APP = """
import duckdb, json, sys, threading
from fastapi import FastAPI, HTTPException
app = FastAPI()
con = duckdb.connect(sys.argv[1], read_only=True)
local = threading.local()
@app.get("/profiles/{cid}")
def profile(cid: str):
    cur = getattr(local, "cur", None)
    if cur is None:
        cur = local.cur = con.cursor()
    row = cur.execute("SELECT doc FROM profiles WHERE customer_id = ?", [cid]).fetchall()
    if not row:
        raise HTTPException(404)
    return json.loads(row[0][0])
import uvicorn
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def _template() -> tuple[dict, dict]:
    """One real profile document and flat row from a freshly built demo shop."""
    from shoplens.jobs import run_demo

    folder = Path(tempfile.mkdtemp()) / "demo"
    summary = run_demo(folder, customers=300, seed=3)
    db = sqlite3.connect(next((folder / "shoplens.profiles").glob("snap_*.sqlite")))
    doc = json.loads(db.execute("SELECT doc FROM profiles WHERE customer_id = ?", [summary.example_customer]).fetchone()[0])
    cur = db.execute("SELECT * FROM flat WHERE customer_id = ?", [summary.example_customer])
    flat = dict(zip([d[0] for d in cur.description], cur.fetchone(), strict=True))
    return doc, flat


def build_files(n: int) -> tuple[Path, Path]:
    """The serving SQLite file (in the layout `publish` writes) and a DuckDB copy."""
    folder = CACHE / f"api_{n}"
    store = folder / "shoplens.duckdb"
    serving = folder / "shoplens.profiles" / "snap_1.sqlite"
    if serving.exists() and store.exists():
        return store, serving
    serving.parent.mkdir(parents=True, exist_ok=True)
    doc, flat = _template()
    rng = np.random.default_rng(0)
    tmp = serving.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    db = sqlite3.connect(tmp)
    cols = list(flat)
    db.execute(f"CREATE TABLE flat ({', '.join(repr(c) for c in cols)}, PRIMARY KEY (customer_id)) WITHOUT ROWID")
    db.execute("CREATE TABLE profiles (customer_id TEXT PRIMARY KEY, doc TEXT NOT NULL) WITHOUT ROWID")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    db.execute("INSERT INTO meta VALUES ('snapshot_id', '1')")
    for start in range(0, n, 50_000):
        ids = [f"c_{i:020x}" for i in range(start, min(n, start + 50_000))]
        spend = rng.lognormal(7, 1, len(ids))
        churn = rng.random(len(ids))
        docs, flats = [], []
        for cid, s, c in zip(ids, spend, churn, strict=True):
            doc["customer_id"] = cid
            doc["behaviour"]["rfm"]["total_spend"] = round(float(s), 2)
            docs.append((cid, json.dumps(doc, ensure_ascii=False)))
            flats.append(tuple({**flat, "customer_id": cid, "total_spend": float(s), "churn_risk": float(c),
                                "age": int(rng.integers(18, 70))}[k] for k in cols))
        db.executemany("INSERT INTO profiles VALUES (?, ?)", docs)
        db.executemany(f"INSERT INTO flat VALUES ({', '.join('?' * len(cols))})", flats)
    db.execute("CREATE INDEX flat_segment ON flat (rfm_segment)")
    db.commit()
    db.close()
    tmp.rename(serving)
    (serving.parent / "CURRENT").write_text(serving.name)
    import pyarrow as pa

    con = duckdb.connect(str(store))
    con.execute("CREATE TABLE profiles (customer_id VARCHAR, doc VARCHAR)")
    src = sqlite3.connect(serving)
    cur = src.execute("SELECT customer_id, doc FROM profiles")
    while rows := cur.fetchmany(50_000):  # DuckDB's sqlite extension would be a download: copy by hand
        batch = pa.table({"customer_id": [r[0] for r in rows], "doc": [r[1] for r in rows]})
        con.register("batch", batch)
        con.execute("INSERT INTO profiles SELECT * FROM batch")
        con.unregister("batch")
    src.close()
    con.execute("CREATE UNIQUE INDEX profiles_id ON profiles (customer_id)")
    con.close()
    (folder / "shoplens.toml").write_text('[store]\npath = "shoplens.duckdb"\n')
    return store, serving


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(cmd: list[str], base: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd)
    for _ in range(300):
        try:
            httpx.get(base + "/profiles/none", timeout=1)
            return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server did not start: {cmd}")


async def _fixed_rate(base: str, ids: list[str], headers: dict[str, str], rate: float) -> tuple[float, float, float]:
    """Open loop: one request every 1/rate s whatever the answers do (no coordinated omission)."""
    latencies: list[float] = []
    n = int(rate * SECONDS)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10,
                                 limits=httpx.Limits(max_connections=64, max_keepalive_connections=64)) as client:
        async def one(when: float, cid: str) -> None:
            await asyncio.sleep(max(0.0, when - time.perf_counter()))
            t0 = time.perf_counter()
            r = await client.get(f"/profiles/{cid}")
            latencies.append(time.perf_counter() - max(t0, when))
            assert r.status_code == 200, r.status_code

        start = time.perf_counter() + 0.2
        await asyncio.gather(*(one(start + i / rate, random.choice(ids)) for i in range(n)))
    arr = np.array(latencies) * 1000
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99)), n / SECONDS


async def _load(base: str, ids: list[str], headers: dict[str, str], concurrency: int) -> tuple[float, float, float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + SECONDS
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=10) as client:
        async def worker() -> None:
            while time.perf_counter() < deadline:
                cid = random.choice(ids)
                t0 = time.perf_counter()
                r = await client.get(f"/profiles/{cid}")
                latencies.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.status_code

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    arr = np.array(latencies) * 1000
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99)), len(arr) / SECONDS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profiles", type=int, default=1_000_000)
    args = ap.parse_args()
    t0 = time.perf_counter()
    store, serving = build_files(args.profiles)
    print(f"{args.profiles:,} profiles ready in {time.perf_counter() - t0:.0f}s ({serving.stat().st_size / 2**30:.2f} GiB serving file)")
    from shoplens.serving.access import Access

    access = Access(store)
    key = access.create_key(f"bench-{os.getpid()}", "analyst")
    access.close()
    rng = random.Random(1)
    ids = [f"c_{rng.randrange(args.profiles):020x}" for _ in range(50_000)]
    p_ours, p_duck = _port(), _port()
    cfg_path = store.parent / "shoplens.toml"
    ours = _start([sys.executable, "-c", "import uvicorn; from shoplens.config import load_config; "
                   "from shoplens.serving.api import create_app; "
                   f"uvicorn.run(create_app(load_config({str(cfg_path)!r})), host='127.0.0.1', port={p_ours}, log_level='warning')"],
                  f"http://127.0.0.1:{p_ours}")
    duck = _start([sys.executable, "-c", DUCK_APP, str(store), str(p_duck)], f"http://127.0.0.1:{p_duck}")
    results: dict[str, dict[int, tuple[float, float, float]]] = {"shoplens (SQLite)": {}, "DuckDB-backed": {}}
    fixed: dict[str, tuple[float, float, float]] = {}
    try:
        for name, base, headers in (("shoplens (SQLite)", f"http://127.0.0.1:{p_ours}", {"X-API-Key": key}),
                                    ("DuckDB-backed", f"http://127.0.0.1:{p_duck}", {})):
            fixed[name] = asyncio.run(_fixed_rate(base, ids, headers, 200.0))
            p50, p99, rps = fixed[name]
            print(f"  fixed 200 req/s   {name:<18} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms")
        for c in LEVELS:
            results["shoplens (SQLite)"][c] = asyncio.run(_load(f"http://127.0.0.1:{p_ours}", ids, {"X-API-Key": key}, c))
            results["DuckDB-backed"][c] = asyncio.run(_load(f"http://127.0.0.1:{p_duck}", ids, {}, c))
            for name in results:
                p50, p99, rps = results[name][c]
                print(f"  concurrency {c:>3}  {name:<18} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  {rps:8,.0f} req/s")
    finally:
        ours.terminate()
        duck.terminate()
    for name, by_level in results.items():
        ok = [(rps, c) for c, (_p50, p99, rps) in by_level.items() if p99 < 20]
        best = max(ok) if ok else (0.0, 0)
        print(f"{name}: best throughput with p99 < 20 ms: {best[0]:,.0f} req/s (concurrency {best[1]})")
    db = sqlite3.connect(f"file:{serving}?mode=ro", uri=True)
    from shoplens.serving.audience import compile_filter, parse_text
    from shoplens.serving.profile_store import FLAT_FIELDS

    for text in ("age 25-34 AND churn_risk > 0.6", "rfm_segment IN ('Champions', 'Loyal') AND total_spend > 5000",
                 "churn_risk > 0.9 OR (age < 25 AND total_spend > 3000)"):
        where, params = compile_filter(parse_text(text), FLAT_FIELDS)
        t1 = time.perf_counter()
        n = db.execute(f"SELECT count(*) FROM flat WHERE {where}", params).fetchone()[0]
        print(f"audience {text!r}: {n:,} customers in {(time.perf_counter() - t1) * 1000:.0f} ms")
    ratio = fixed["DuckDB-backed"][1] / fixed["shoplens (SQLite)"][1]
    print(f"ratio (DuckDB-backed p99 / shoplens p99 at a fixed 200 req/s): {ratio:.2f}x")


if __name__ == "__main__":
    main()
