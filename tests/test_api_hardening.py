"""REST API hardening (issue #11, items 4, 5, 8, 9, 10, 13) against a real server on
loopback started with ``shoplens serve``: the raw-id oracle, ids in the audit and the
access log, concurrent /analyze, every bad input a 4xx in the one error shape, the body
limit on streamed bodies, key expiry/revocation/rotation, and the LLM cache keeping only
validated answers."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from openai_stub import Stub
from pydantic import BaseModel
from servers import free_port, role_keys, serving, wait_up

from shoplens.config import load_config
from shoplens.jobs import Summary
from shoplens.llm.base import LLMError, ResponseCache, ask_json
from shoplens.llm.openai_compat import OpenAICompatible
from shoplens.privacy import optional_keys
from shoplens.serving.access import AUDIT_COMMIT_S, Access

ERROR_SHAPE = {"error", "code"}


@pytest.fixture(scope="module")
def stub() -> Iterator[Stub]:
    s = Stub()
    yield s
    s.close()


@pytest.fixture(scope="module")
def server(demo_shop: Summary, tmp_path_factory: pytest.TempPathFactory, stub: Stub) -> Iterator[dict]:
    """``shoplens serve`` on a copy of the demo shop with the fast hash embedder and an
    LLM (the stub) whose response cache is on; its stdout and stderr go to a file."""
    folder = tmp_path_factory.mktemp("hardening") / "shop"
    shutil.copytree(demo_shop.folder, folder)
    with open(folder / "shoplens.toml", "a", encoding="utf-8") as fh:
        fh.write(f'\n[text]\nembedder = "hash"\n\n[llm]\ntype = "openai"\nbase_url = "{stub.url}"\nmodel = "stub"\n'
                 'max_retries = 0\ncache = ".shoplens/llm-cache.sqlite"\n')
    cfg = load_config(folder / "shoplens.toml")
    keys = role_keys(folder)
    with open(folder / "customers.csv", encoding="gb18030", newline="") as fh:
        raw = next(csv.DictReader(fh))["customer_id"]
    secret = optional_keys(cfg)
    assert secret is not None
    log_path = folder.parent / "server.log"
    with open(log_path, "wb") as log, serving(folder, cli=True, output=log) as (base, proc):
        yield {"base": base, "keys": keys, "folder": folder, "cfg": cfg, "raw": raw, "pseudonym": secret.pseudonym(raw),
               "log": log_path, "port": int(base.rsplit(":", 1)[1]), "proc": proc}


def call(server: dict, method: str, path: str, role: str | None = "analyst", **kw) -> httpx.Response:
    headers = {"X-API-Key": server["keys"][role]} if role else {}
    headers.update(kw.pop("headers", {}))
    return httpx.request(method, server["base"] + path, headers=headers, timeout=30, **kw)


def audit_rows(server: dict) -> list[tuple]:
    time.sleep(4 * AUDIT_COMMIT_S)  # the server commits audit rows in groups
    with sqlite3.connect(server["folder"] / "shoplens.access.sqlite") as db:
        return db.execute("SELECT * FROM audit").fetchall()


# ---- item 4: raw-id look-ups are for admins ---------------------------------------------

@pytest.mark.parametrize("role", ["analyst", "service"])
def test_raw_id_lookup_is_forbidden_without_revealing_existence(server: dict, role: str) -> None:
    known = call(server, "GET", f"/profiles/{server['raw']}", role)
    unknown = call(server, "GET", "/profiles/U99999999", role)
    assert known.status_code == unknown.status_code == 403
    assert known.json() == unknown.json() and known.json()["code"] == "forbidden"
    assert server["pseudonym"] not in known.text
    assert call(server, "GET", f"/profiles/{server['pseudonym']}", role).status_code == 200  # pseudonyms still work


def test_raw_id_lookup_by_admin_is_audited(server: dict) -> None:
    r = call(server, "GET", f"/profiles/{server['raw']}", "admin")
    assert r.status_code == 200 and r.json()["customer_id"] == server["pseudonym"]
    rows = [row for row in audit_rows(server) if row[1] == "test-admin" and "raw-id lookup" in (row[7] or "")]
    assert rows and rows[-1][4] == f"/profiles/{server['pseudonym']}" and rows[-1][5] == server["pseudonym"]


# ---- item 5: no ids in the audit's paths or in the access log -----------------------------

def test_no_raw_id_in_audit_and_no_ids_in_the_access_log(server: dict) -> None:
    raw, pseudonym = server["raw"], server["pseudonym"]
    assert call(server, "GET", f"/profiles/{raw}", "admin").status_code == 200
    assert call(server, "GET", f"/profiles/{raw}", "service").status_code == 403
    assert call(server, "GET", f"/profiles/{raw}", None).status_code == 401
    assert call(server, "GET", f"/profiles/{pseudonym}", "analyst").status_code == 200
    rows = audit_rows(server)
    assert not [row for row in rows if any(raw in str(v) for v in row)]
    assert any(row[4] == f"/profiles/{pseudonym}" for row in rows)
    access_file = server["folder"] / "shoplens.access.sqlite"
    for path in (access_file, access_file.with_name(access_file.name + "-wal")):
        if path.exists():
            assert raw.encode() not in path.read_bytes()
    time.sleep(0.2)
    log = server["log"].read_text("utf-8", "replace")
    assert raw not in log and pseudonym not in log
    assert "GET /profiles/{customer_id} 200" in log and "GET /profiles/{customer_id} 403" in log


# ---- item 8: /analyze from many threads --------------------------------------------------

def test_concurrent_analyze_keeps_working(server: dict) -> None:
    def one(i: int) -> int:
        return call(server, "POST", "/analyze", "service", json={"texts": [f"物流很快，质量不错 {i}", "太慢了"]}).status_code

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(one, range(8))) == [200] * 8
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(one, range(8, 16))) == [200] * 8
    assert one(99) == 200


# ---- item 9: every bad input is a 4xx in the one error shape -----------------------------

def _nested(levels: int) -> dict:
    tree: dict = {"field": "n_orders", "op": ">", "value": 1}
    for _ in range(levels):
        tree = {"not": tree}
    return tree


BIG = 2**63
BAD_INPUTS = [
    ("NOT x 50", "POST", "/audiences", {"json": {"text": "NOT " * 50 + "n_orders > 1"}}, 400),
    ("parentheses x 330", "POST", "/audiences", {"json": {"text": "(" * 330 + "n_orders > 1" + ")" * 330}}, 400),
    ("JSON not x 50", "POST", "/audiences", {"json": {"filter": _nested(50)}}, 400),
    ("JSON not x 900", "POST", "/audiences", {"json": {"filter": _nested(900)}}, 400),
    ("and/or x 35", "POST", "/audiences", {"json": {"text": "n_orders > 1 AND (" * 35 + "n_orders > 2" + ")" * 35}}, 400),
    ("page 2^63", "POST", "/audiences", {"json": {"text": "n_orders > 1", "page": BIG}}, 422),
    ("page_size 2^63", "POST", "/audiences", {"json": {"text": "n_orders > 1", "page_size": BIG}}, 422),
    ("value 2^63", "POST", "/audiences", {"json": {"filter": {"field": "n_orders", "op": ">", "value": BIG}}}, 400),
    ("value -2^63-1", "POST", "/audiences", {"json": {"filter": {"field": "n_orders", "op": ">", "value": -BIG - 1}}}, 400),
    ("IN value 2^63", "POST", "/audiences", {"json": {"filter": {"field": "age", "op": "IN", "value": [1, BIG]}}}, 400),
    ("query page 2^63", "GET", "/segments/Champions/members?page=9223372036854775808", {}, 422),
    ("query page_size 2^63", "GET", "/segments/Champions/members?page_size=9223372036854775808", {}, 422),
    ("segment ²", "GET", "/segments/²/members", {}, 404),
    ("segment id 2^64", "GET", "/segments/18446744073709551616/members", {}, 404),
    ("segment 5000 digits", "GET", "/segments/" + "9" * 5000 + "/members", {}, 404),
    ("surrogate analyze", "POST", "/analyze", {"content": b'{"texts": ["ok \\ud800"]}'}, 422),
    ("surrogate text", "POST", "/audiences", {"content": b'{"text": "city = \'\\ud800\'"}'}, 422),
    ("surrogate question", "POST", "/audiences", {"content": b'{"question": "\\udfff customers"}'}, 422),
    ("surrogate filter value", "POST", "/audiences",
     {"content": b'{"filter": {"field": "city", "op": "=", "value": "\\ud800"}}'}, 400),
    ("surrogate field", "POST", "/audiences", {"content": b'{"filter": {"field": "\\ud800", "op": "=", "value": 1}}'}, 400),
    ("surrogate key", "POST", "/audiences", {"content": b'{"text": "n_orders > 1", "\\ud800": 1}'}, 422),
    ("NaN", "POST", "/audiences", {"content": b'{"filter": {"field": "age", "op": ">", "value": NaN}}'}, 400),
    ("Infinity", "POST", "/audiences", {"content": b'{"filter": {"field": "age", "op": "<", "value": -Infinity}}'}, 400),
    ("huge text number", "POST", "/audiences", {"json": {"text": "age > " + "9" * 400}}, 400),
    ("field not text", "POST", "/audiences", {"json": {"filter": {"field": ["age"], "op": ">", "value": 1}}}, 400),
    ("op not text", "POST", "/audiences", {"json": {"filter": {"field": "age", "op": {"x": 1}, "value": 1}}}, 400),
    ("not JSON", "POST", "/audiences", {"content": b'{"text": '}, 422),
]


@pytest.mark.parametrize(("label", "method", "path", "kw", "status"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_inputs_answer_4xx_in_one_shape(server: dict, label: str, method: str, path: str, kw: dict, status: int) -> None:
    kw = dict(kw)
    if "content" in kw:
        kw["headers"] = {"Content-Type": "application/json"}
    r = call(server, method, path, "analyst", **kw)
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == ERROR_SHAPE and body["error"] and body["code"]
    assert call(server, "GET", "/segments", "analyst").status_code == 200  # still up


def test_upper_case_op_is_accepted_and_shown(server: dict) -> None:
    tree = {"and": [{"field": "rfm_segment", "op": "IN", "value": ["Champions", "Loyal"]},
                    {"field": "n_orders", "op": "BETWEEN", "value": [1, 99]}]}
    r = call(server, "POST", "/audiences", json={"filter": tree})
    assert r.status_code == 200, r.text
    assert r.json()["filter_text"] == "(rfm_segment IN ('Champions', 'Loyal') AND n_orders BETWEEN 1 AND 99)"


def test_an_internal_error_is_500_without_detail_and_audited(server: dict, tmp_path: Path) -> None:
    import uvicorn

    from shoplens.serving.api import create_app

    app = create_app(server["cfg"])

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("/srv/secret/path PID 4242 upstream said no")

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        wait_up(f"http://127.0.0.1:{port}")
        r = httpx.get(f"http://127.0.0.1:{port}/boom", timeout=10)
        assert r.status_code == 500 and r.json() == {"error": "internal error", "code": "internal"}
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code in (200, 503)
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
    assert [row for row in audit_rows(server) if row[4] == "/boom" and row[6] == 500]


# ---- item 10: the body limit holds on streams; errors say nothing they should not --------

def test_chunked_body_over_the_limit_is_413(server: dict) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"text": "n_orders > 1", "pad": "'
        for _ in range(16):
            yield b"x" * 65536
        yield b'"}'

    t0 = time.perf_counter()
    r = call(server, "POST", "/audiences", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["code"] == "too_large" and "xxxx" not in r.text
    big = json.dumps({"texts": ["好" * 2000] * 100}).encode()  # 2.3 MB of /analyze work, streamed
    r = call(server, "POST", "/analyze", "service", content=iter([big[i:i + 65536] for i in range(0, len(big), 65536)]),
             headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and time.perf_counter() - t0 < 10


def test_413_comes_as_soon_as_the_limit_is_crossed(server: dict) -> None:
    with socket.create_connection(("127.0.0.1", server["port"]), timeout=10) as s:
        s.sendall(b"POST /audiences HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"X-API-Key: " + server["keys"]["analyst"].encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(3):  # 96 KiB sent, the body not finished
            s.sendall(b"8000\r\n" + b"x" * 0x8000 + b"\r\n")
        head = s.recv(65536)
    assert head.startswith(b"HTTP/1.1 413")


def test_422_does_not_echo_the_input(server: dict) -> None:
    r = call(server, "POST", "/audiences", json={"text": "n_orders > 1", "colour": "SECRET-VALUE-123"})
    assert r.status_code == 422 and set(r.json()) == ERROR_SHAPE and r.json()["code"] == "validation"
    assert "SECRET-VALUE-123" not in r.text and "colour" in r.json()["error"]
    r = call(server, "GET", "/segments/Champions/members?page_size=SECRET-VALUE-456")
    assert r.status_code == 422 and "SECRET-VALUE-456" not in r.text and "page_size" in r.json()["error"]


def test_http_errors_use_the_one_shape(server: dict) -> None:
    r = call(server, "GET", "/no/such/endpoint")
    assert r.status_code == 404 and r.json()["code"] == "not_found" and set(r.json()) == ERROR_SHAPE
    r = call(server, "PUT", "/segments")
    assert r.status_code == 405 and r.json()["code"] == "method_not_allowed" and set(r.json()) == ERROR_SHAPE
    r = call(server, "GET", "/profiles/c_nobody")
    assert r.status_code == 404 and r.json()["code"] == "not_found"


def test_llm_errors_carry_no_url_or_upstream_body(server: dict, stub: Stub) -> None:
    stub.script.append({"status": 401})  # the stub's body: {"error": {"message": "scripted"}}
    r = call(server, "POST", "/audiences", json={"question": "who bought twice?"})
    assert r.status_code == 502 and r.json()["code"] == "llm" and "HTTP 401" in r.json()["error"]
    assert "scripted" not in r.text and "127.0.0.1" not in r.text and "/v1" not in r.text


# ---- item 13: keys, PII audit, the LLM cache -------------------------------------------

def test_key_expiry_revocation_and_rotation(server: dict) -> None:
    access = Access(server["cfg"].store_path)
    try:
        short = access.create_key("short-lived", "analyst", expires_days=1 / 86400)  # one second
        revoked = access.create_key("leaver", "analyst")
        old = access.create_key("rotating", "service", expires_days=30)
        path = f"/profiles/{server['pseudonym']}"
        assert call(server, "GET", path, headers={"X-API-Key": short}, role=None).status_code == 200
        time.sleep(1.2)
        r = call(server, "GET", path, headers={"X-API-Key": short}, role=None)
        assert r.status_code == 401 and "expired" in r.json()["error"] and r.json()["code"] == "unauthorized"
        access.revoke("leaver")
        r = call(server, "GET", path, headers={"X-API-Key": revoked}, role=None)
        assert r.status_code == 401 and "revoked" in r.json()["error"]
        assert call(server, "GET", path, headers={"X-API-Key": old}, role=None).status_code == 200
        new = access.rotate("rotating")
        assert call(server, "GET", path, headers={"X-API-Key": old}, role=None).status_code == 401
        assert call(server, "GET", path, headers={"X-API-Key": new}, role=None).status_code == 200
        listed = {k.name: k for k in access.list_keys()}
        assert listed["leaver"].revoked_at is not None and listed["test-analyst"].last_used is not None
        rotated = listed["rotating"]
        assert rotated.role == "service" and rotated.expires_at is not None
        assert abs((rotated.expires_at - rotated.created_at) - 30 * 86400) < 1
        with pytest.raises(Exception, match="no API key named 'nobody'"):
            access.revoke("nobody")
    finally:
        access.close()


def test_keys_cli_list_revoke_rotate(server: dict) -> None:
    def shoplens(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "shoplens.cli", *args, "-c", str(server["folder"] / "shoplens.toml")],
                              capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=120)

    made = shoplens("keys", "create", "cli-bot", "--role", "service", "--expires-days", "7")
    assert made.returncode == 0, made.stderr
    key = made.stdout.split("shown once:")[1].split()[0]
    listed = shoplens("keys", "list")
    assert listed.returncode == 0 and "cli-bot" in listed.stdout and "service" in listed.stdout
    assert "last used" in listed.stdout and "expires" in listed.stdout
    assert key not in listed.stdout and Access._hash(key) not in listed.stdout
    rotated = shoplens("keys", "rotate", "cli-bot")
    assert rotated.returncode == 0 and "shown once" in rotated.stdout and key not in rotated.stdout
    assert call(server, "GET", "/segments", None, headers={"X-API-Key": key}).status_code == 401
    assert shoplens("keys", "revoke", "cli-bot").returncode == 0
    missing = shoplens("keys", "revoke", "nobody")
    assert missing.returncode == 2 and "no API key named 'nobody'" in missing.stderr


def test_old_access_files_gain_the_new_columns(tmp_path: Path) -> None:
    store = tmp_path / "shoplens.duckdb"
    key = "slk_old"
    with sqlite3.connect(tmp_path / "shoplens.access.sqlite") as db:
        db.execute("CREATE TABLE api_keys (key_hash TEXT PRIMARY KEY, name TEXT UNIQUE, role TEXT, created_at REAL)")
        db.execute("CREATE TABLE audit (ts REAL, name TEXT, role TEXT, method TEXT, path TEXT, customer_id TEXT, "
                   "status INTEGER, detail TEXT)")
        db.execute("INSERT INTO api_keys VALUES (?, 'old', 'analyst', 0)", [Access._hash(key)])
    access = Access(store)
    try:
        assert access.authenticate(key).name == "old"
        info = access.list_keys()[0]
        assert info.expires_at is None and info.revoked_at is None and info.last_used is not None
    finally:
        access.close()


def test_pii_reads_are_marked_in_the_audit(server: dict) -> None:
    r = call(server, "GET", f"/profiles/{server['pseudonym']}?include_pii=true", "admin")
    assert r.status_code == 200 and r.json()["pii"]
    assert call(server, "GET", f"/profiles/{server['pseudonym']}?include_pii=true", "analyst").status_code == 403
    rows = [row for row in audit_rows(server) if "pii" in (row[7] or "").split(", ")]
    assert {(row[1], row[6]) for row in rows} >= {("test-admin", 200), ("test-analyst", 403)}


def test_rejected_llm_filter_is_not_cached(server: dict, stub: Stub) -> None:
    question = {"question": "customers who complain about delivery"}
    stub.script.append({"reply": json.dumps({"filter": {"field": "no_such_field", "op": "=", "value": 1}})})
    r = call(server, "POST", "/audiences", json=question)
    assert r.status_code == 400 and "the LLM's filter was rejected" in r.json()["error"]
    good = {"filter": {"field": "aspect.logistics", "op": "<", "value": 0}, "explanation": "unhappy with delivery"}
    stub.script.append({"reply": json.dumps(good)})
    before = len(stub.requests)
    r = call(server, "POST", "/audiences", json=question)
    assert r.status_code == 200, r.text
    assert len(stub.requests) == before + 1  # asked again, not replayed from the cache
    r = call(server, "POST", "/audiences", json=question)
    assert r.status_code == 200 and len(stub.requests) == before + 1  # the accepted answer is cached


class _Answer(BaseModel):
    n: int


def test_ask_json_caches_only_accepted_answers(stub: Stub, tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache.sqlite")
    provider = OpenAICompatible(stub.url, "m", max_retries=0, cache=cache)
    msg = [{"role": "user", "content": "n?"}]
    stub.script.extend([{"reply": "not json"}, {"reply": "still not"}])
    with pytest.raises(LLMError):
        ask_json(provider, msg, _Answer)
    stub.script.append({"reply": '{"n": -1}'})
    with pytest.raises(LLMError, match="rejected: n must be positive"):
        ask_json(provider, msg, _Answer, check=lambda a: [] if a.n > 0 else ["n must be positive"])
    assert cache.db.execute("SELECT count(*) FROM replies").fetchone()[0] == 0
    stub.script.append({"reply": '{"n": 3}'})
    assert ask_json(provider, msg, _Answer, check=lambda a: []).n == 3
    assert ask_json(provider, msg, _Answer).n == 3  # from the cache now
    assert cache.db.execute("SELECT count(*) FROM replies").fetchone()[0] == 1


def test_llm_error_messages_hold_no_url_or_body(stub: Stub) -> None:
    stub.script.append({"status": 400})
    with pytest.raises(LLMError) as err:
        OpenAICompatible(stub.url, "m", max_retries=0).complete([{"role": "user", "content": "x"}])
    assert "HTTP 400" in str(err.value) and stub.url not in str(err.value) and "scripted" not in str(err.value)
