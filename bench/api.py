"""Benchmark: the REST API under a real load generator (wrk), against the stack's floor.

    .venv/bin/python bench/api.py                    # ~3 min; builds the demo shop once
    .venv/bin/python bench/api.py --shop demo --seconds 15

Two real uvicorn processes on 127.0.0.1, each one worker with the access log off:

- **ShopLens**: ``shoplens serve`` on the demo shop (API key check, role handling, an
  audit row per request, the body limit, the one error shape: everything a user gets);
- **bare**: a raw ASGI callable, no framework, doing the same SQLite point read of the
  same serving file (``SELECT doc FROM profiles WHERE customer_id = ?``) and returning
  the stored JSON; no key, no audit. That is the floor of this stack.

wrk (Debian's package) drives both with one thread and a Lua script that asks for a
random customer each request: paced at a fixed 200 req/s (``delay()`` per connection),
then closed-loop at 1-32 connections to find the most requests per second with p99
under 50 ms. Then ``POST /audiences`` under 8 concurrent connections. The last line is
the ratio of ShopLens' best throughput at p99 < 50 ms to the bare endpoint's.

``--recommendations`` instead compares ``GET /profiles/{id}/recommendations`` (top 10
with reasons, filters applied at request time) with ``GET /profiles/{id}`` on the same
server: paced at 200 req/s and closed-loop at 8 connections, in alternation, and prints
the p99 ratio last.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / ".cache"
LEVELS = (1, 2, 4, 8, 16, 32)
RATE = 200
PACED_CONNECTIONS = 8

LUA = r"""
local ids = {}
for line in io.lines(os.getenv("BENCH_IDS")) do ids[#ids + 1] = line end
local key = os.getenv("BENCH_KEY") or ""
local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
local body = os.getenv("BENCH_BODY") or ""
local suffix = os.getenv("BENCH_SUFFIX") or ""
local counter = 0
function setup(thread) counter = counter + 1; thread:set("seed", counter) end
function init(args) math.randomseed(os.time() + (seed or 0)) end
function request()
  if body ~= "" then
    return wrk.format("POST", "/audiences", {["X-API-Key"] = key, ["Content-Type"] = "application/json"}, body)
  end
  return wrk.format("GET", "/profiles/" .. ids[math.random(#ids)] .. suffix, {["X-API-Key"] = key})
end
if pause > 0 then function delay() return pause end end
function done(s, latency, requests)
  local e = s.errors
  io.write(string.format('BENCH{"requests":%d,"duration_us":%d,"errors":%d,"non2xx":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d}\n',
    s.requests, s.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""

BARE_APP = r'''
import sqlite3, sys, threading
path = sys.argv[1]
local = threading.local()

def con():
    c = getattr(local, "c", None)
    if c is None:
        c = local.c = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    return c

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    cid = scope["path"].rsplit("/", 1)[-1]
    row = con().execute("SELECT doc FROM profiles WHERE customer_id = ?", (cid,)).fetchone()
    status, body = (200, row[0].encode()) if row else (404, b'{"error": "not found"}')
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

import uvicorn
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
'''


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(base: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            httpx.get(base + "/health", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("server did not start")


def shop_folder(path: Path | None) -> Path:
    """The demo shop (2,000 customers), generated and built once into bench/.cache/demo."""
    folder = path or CACHE / "demo"
    if not (folder / "shoplens.profiles" / "CURRENT").exists():
        from shoplens.jobs import run_demo

        print(f"building the demo shop in {folder} (once)", file=sys.stderr)
        run_demo(folder)
    return folder


def wrk(base: str, lua: Path, env: dict[str, str], connections: int, seconds: float) -> dict[str, float]:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--latency", "-s", str(lua), base],
                         capture_output=True, text=True, env={**os.environ, **env}, check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("BENCH{"))
    r = json.loads(line[len("BENCH"):])
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    return r


def fmt(r: dict[str, float]) -> str:
    bad = f", {int(r['errors'] + r['non2xx'])} errors" if r["errors"] or r["non2xx"] else ""
    return f"{r['p50'] / 1000:.2f} / {r['p99'] / 1000:.2f} ms ({r['rps']:.0f} req/s{bad})"


def run(name: str, base: str, lua: Path, env: dict[str, str], seconds: float) -> dict[str, Any]:
    wrk(base, lua, env, 4, 2)  # warm-up
    paced = wrk(base, lua, {**env, "BENCH_DELAY_MS": str(1000 * PACED_CONNECTIONS // RATE)}, PACED_CONNECTIONS, seconds)
    levels = {c: wrk(base, lua, env, c, seconds) for c in LEVELS}
    ok = [r["rps"] for r in levels.values() if r["p99"] < 50_000 and not r["errors"] and not r["non2xx"]]
    print(f"{name}: paced {fmt(paced)}; " + "; ".join(f"{c} conn {fmt(r)}" for c, r in levels.items()), file=sys.stderr)
    return {"paced": paced, "levels": levels, "best": max(ok) if ok else 0.0}


def compare_recommendations(base: str, lua: Path, env: dict[str, str], seconds: float) -> None:
    recs = {**env, "BENCH_SUFFIX": "/recommendations"}
    wrk(base, lua, env, 4, 2)
    wrk(base, lua, recs, 4, 2)  # warm-up of both routes
    paced = {**env, "BENCH_DELAY_MS": str(1000 * PACED_CONNECTIONS // RATE)}
    rows = {}
    for label, extra in (("paced 200 req/s", paced), ("8 connections", {})):
        rows[label] = (wrk(base, lua, {**env, **extra}, PACED_CONNECTIONS, seconds),
                       wrk(base, lua, {**recs, **extra}, PACED_CONNECTIONS, seconds))
    print("\n| load | GET /profiles/{id} p50 / p99 (req/s) | GET /profiles/{id}/recommendations |\n|---|---|---|")
    for label, (prof, rec) in rows.items():
        print(f"| {label} | {fmt(prof)} | {fmt(rec)} |")
    for label, (prof, rec) in rows.items():
        print(f"p99 ratio recommendations / profile, {label}: {rec['p99'] / max(prof['p99'], 1e-9):.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shop", type=Path, default=None, help="a built shop folder (default: the demo, built once)")
    ap.add_argument("--seconds", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--recommendations", action="store_true", help="recommendations route vs the profile route")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk")
    folder = shop_folder(args.shop)
    from shoplens.config import load_config
    from shoplens.serving.access import Access
    from shoplens.serving.reader import current_name, profiles_dir

    cfg = load_config(folder / "shoplens.toml")
    serving = profiles_dir(cfg.store_path)
    current = serving / str(current_name(serving))
    work = Path(tempfile.mkdtemp(prefix="shoplens-bench-"))
    ids = work / "ids.txt"
    with sqlite3.connect(f"file:{current}?mode=ro", uri=True) as db:
        all_ids = [r[0] for r in db.execute("SELECT customer_id FROM profiles")]
    ids.write_text("\n".join(all_ids) + "\n")
    lua = work / "bench.lua"
    lua.write_text(LUA)
    access = Access(cfg.store_path)
    key = access.create_key(f"bench-{time.time_ns()}", "analyst")
    access.close()
    env = {"BENCH_IDS": str(ids), "BENCH_KEY": key}

    procs = []
    try:
        ours_port, bare_port = _port(), _port()
        ours = subprocess.Popen([sys.executable, "-m", "shoplens.cli", "serve", "-c", str(folder / "shoplens.toml"),
                                 "--port", str(ours_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(ours)
        if args.recommendations:
            _wait(f"http://127.0.0.1:{ours_port}", ours)
            compare_recommendations(f"http://127.0.0.1:{ours_port}", lua, env, args.seconds)
            return
        bare = subprocess.Popen([sys.executable, "-c", BARE_APP, str(current), str(bare_port)])
        procs.append(bare)
        _wait(f"http://127.0.0.1:{ours_port}", ours)
        _wait(f"http://127.0.0.1:{bare_port}", bare)
        results: dict[str, dict[str, Any]] = {"bare": run("bare", f"http://127.0.0.1:{bare_port}", lua, env, args.seconds),
                   "shoplens": run("shoplens", f"http://127.0.0.1:{ours_port}", lua, env, args.seconds)}
        audience = {"BENCH_BODY": json.dumps({"text": "churn_risk > 0.5 AND total_spend > 1000", "page_size": 100})}
        aud = wrk(f"http://127.0.0.1:{ours_port}", lua, {**env, **audience}, 8, args.seconds)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nGET /profiles/{{id}} over {len(all_ids):,} profiles, random ids, wrk -t1, "
          f"{args.seconds:g} s per run; p50 / p99 (req/s)")
    print("| load | ShopLens | bare ASGI + SQLite |\n|---|---|---|")
    print(f"| paced {RATE} req/s ({PACED_CONNECTIONS} connections) | {fmt(results['shoplens']['paced'])} | "
          f"{fmt(results['bare']['paced'])} |")
    for c in LEVELS:
        print(f"| {c} connection{'s' if c > 1 else ''} | {fmt(results['shoplens']['levels'][c])} | "
              f"{fmt(results['bare']['levels'][c])} |")
    print(f"| best req/s with p99 < 50 ms | {results['shoplens']['best']:.0f} | {results['bare']['best']:.0f} |")
    print(f"\nPOST /audiences (text filter, page of 100), 8 connections: {fmt(aud)}")
    ratio = results["shoplens"]["best"] / max(results["bare"]["best"], 1e-9)
    print(f"ratio (ShopLens / bare, best req/s at p99 < 50 ms): {ratio:.2f}x")


if __name__ == "__main__":
    main()
