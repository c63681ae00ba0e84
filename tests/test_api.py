"""The REST API against a real uvicorn server on loopback: auth, roles, masking,
audiences and injection attempts, limits, erasure."""

from __future__ import annotations

import csv
import io
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import pytest
from servers import demo_server

from shoplens.jobs import Summary
from shoplens.serving.access import AUDIT_COMMIT_S


@pytest.fixture(scope="module")
def server(demo_shop: Summary, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    with demo_server(demo_shop, tmp_path_factory, "api") as srv:
        yield srv


def get(server: dict, path: str, role: str | None = None, **kw) -> httpx.Response:
    headers = {"X-API-Key": server["keys"][role]} if role else {}
    return httpx.get(server["base"] + path, headers=headers, timeout=10, **kw)


def post(server: dict, path: str, role: str | None, body: dict, **kw) -> httpx.Response:
    headers = {"X-API-Key": server["keys"][role]} if role else {}
    return httpx.post(server["base"] + path, headers=headers, json=body, timeout=10, **kw)


def test_health_needs_no_key(server: dict) -> None:
    r = get(server, "/health")
    assert r.status_code == 200 and r.json()["snapshot_id"] >= 1


def test_auth_no_key_wrong_key(server: dict) -> None:
    cid = server["example"]
    assert get(server, f"/profiles/{cid}").status_code == 401
    r = httpx.get(server["base"] + f"/profiles/{cid}", headers={"X-API-Key": "slk_wrong"}, timeout=10)
    assert r.status_code == 401 and r.json() == {"error": "invalid API key", "code": "unauthorized"}


def test_profile_by_role_and_masking(server: dict) -> None:
    cid = server["example"]
    analyst = get(server, f"/profiles/{cid}", "analyst").json()
    assert analyst["customer_id"] == cid and "behaviour" in analyst and "pii" not in analyst
    assert isinstance(analyst["tags"], list)
    assert get(server, f"/profiles/{cid}?include_pii=true", "analyst").status_code == 403
    admin = get(server, f"/profiles/{cid}?include_pii=true", "admin").json()
    assert admin["pii"]["phone"] and admin["pii"]["name"]  # decrypted from the vault
    service = get(server, f"/profiles/{cid}", "service").json()
    assert set(service) <= {"profile_version", "customer_id", "segment", "tags", "predictions", "provenance"}
    assert "demographics" not in service


def test_unknown_id_is_404_with_message(server: dict) -> None:
    r = get(server, "/profiles/c_doesnotexist", "analyst")
    assert r.status_code == 404 and "not found" in r.json()["error"]


def test_segments_and_paged_members(server: dict) -> None:
    body = get(server, "/segments", "analyst").json()
    clusters = body["segments"]
    assert clusters and all(c["name"] for c in clusters)
    first = get(server, f"/segments/{clusters[0]['id']}/members?page_size=3", "analyst").json()
    assert first["total"] == clusters[0]["customers"] and len(first["customer_ids"]) == min(3, first["total"])
    top = body["rfm_segments"][0]
    assert top["customers"] > 0
    page = get(server, f"/segments/{top['segment']}/members?page=1&page_size=5", "analyst").json()
    assert page["total"] == top["customers"] and len(page["customer_ids"]) == min(5, top["customers"])
    assert get(server, f"/segments/{top['segment']}/members?page_size=5000", "analyst").status_code == 422
    assert get(server, "/segments/Nope/members", "analyst").status_code == 404


def test_audience_text_and_json_agree(server: dict) -> None:
    text = post(server, "/audiences", "analyst", {"text": "n_orders >= 2 AND churn_risk > 0.5"}).json()
    tree = {"and": [{"field": "n_orders", "op": ">=", "value": 2}, {"field": "churn_risk", "op": ">", "value": 0.5}]}
    js = post(server, "/audiences", "analyst", {"filter": tree}).json()
    assert text["total"] == js["total"] > 0
    assert text["filter_text"] == "(n_orders >= 2 AND churn_risk > 0.5)"
    db = sqlite3.connect(next((server["folder"] / "shoplens.profiles").glob("snap_*.sqlite")))
    assert db.execute("SELECT count(*) FROM flat WHERE n_orders >= 2 AND churn_risk > 0.5").fetchone()[0] == text["total"]
    assert post(server, "/audiences", "service", {"text": "n_orders >= 2"}).status_code == 403


def test_audience_export_csv(server: dict) -> None:
    body = {"text": "rfm_segment = 'Champions'", "channel": "push"}
    r = post(server, "/audiences", "analyst", body | {"format": "csv"})
    rows = list(csv.DictReader(io.StringIO(r.text)))
    count = post(server, "/audiences", "analyst", body).json()["total"]
    everyone = post(server, "/audiences", "analyst", {"text": "rfm_segment = 'Champions'"}).json()["total"]
    assert r.status_code == 200 and len(rows) == count > 0 and all(x["rfm_segment"] == "Champions" for x in rows)
    assert count < everyone  # customers without push consent are not exported


@pytest.mark.parametrize("text", [
    "city = 'x' OR 1=1",
    "city = 'x'; DROP TABLE flat",
    "customer_id) OR (1 = 1",
    "n_orders > 1 UNION SELECT doc FROM profiles",
])
def test_injection_attempts_in_text_filters_are_rejected(server: dict, text: str) -> None:
    r = post(server, "/audiences", "analyst", {"text": text})
    assert r.status_code == 400 and r.json()["error"].startswith("filter:")


def test_injection_attempts_in_json_filters(server: dict) -> None:
    bad_field = {"field": "city = '' OR 1=1 --", "op": "=", "value": "x"}
    assert post(server, "/audiences", "analyst", {"filter": bad_field}).status_code == 400
    bad_op = {"field": "city", "op": "= '' OR 1=1 --", "value": "x"}
    assert post(server, "/audiences", "analyst", {"filter": bad_op}).status_code == 400
    value = {"field": "city", "op": "=", "value": "x' OR '1'='1"}  # a value is only ever a bound parameter
    r = post(server, "/audiences", "analyst", {"filter": value})
    assert r.status_code == 200 and r.json()["total"] == 0
    assert post(server, "/audiences", "analyst", {"filter": {"field": "n_orders", "op": ">", "value": "1 OR 1=1"}}).status_code == 400


def test_oversized_and_malformed_requests(server: dict) -> None:
    huge = {"text": "n_orders > 1", "pad": "x" * 70_000}
    assert post(server, "/audiences", "analyst", huge).status_code == 413
    assert post(server, "/audiences", "analyst", {"text": "n_orders > 1", "colour": 1}).status_code == 422
    assert post(server, "/audiences", "analyst", {}).status_code == 400


def test_erasure_removes_every_trace(server: dict) -> None:
    cid = server["example"]
    assert get(server, f"/profiles/{cid}", "analyst").status_code == 200
    assert httpx.delete(server["base"] + f"/admin/customers/{cid}", headers={"X-API-Key": server["keys"]["analyst"]}).status_code == 403
    r = httpx.delete(server["base"] + f"/admin/customers/{cid}", headers={"X-API-Key": server["keys"]["admin"]}, timeout=30)
    assert r.status_code == 200, r.text
    removed = r.json()["removed"]
    assert removed["customers"] == 1 and removed["serving"] >= 1
    assert get(server, f"/profiles/{cid}", "analyst").status_code == 404
    folder = server["folder"]
    con = duckdb.connect(str(folder / "shoplens.duckdb"), read_only=True)
    cols = con.execute("SELECT table_schema, table_name, column_name FROM information_schema.columns WHERE data_type = 'VARCHAR'").fetchall()
    hits = [(s, t, c) for s, t, c in cols if con.execute(f'SELECT count(*) FROM {s}.{t} WHERE contains("{c}", ?)', [cid]).fetchall()[0][0]]
    con.close()
    assert hits == []
    for path in [*(folder / "shoplens.profiles").glob("*"), *folder.glob("shoplens.access.sqlite*")]:
        assert cid.encode() not in path.read_bytes(), path.name


def test_requests_are_audited(server: dict) -> None:
    get(server, f"/profiles/{server['example']}", "service")
    time.sleep(4 * AUDIT_COMMIT_S)  # rows are committed in groups
    db = sqlite3.connect(Path(server["folder"]) / "shoplens.access.sqlite")
    names = {r[0] for r in db.execute("SELECT DISTINCT name FROM audit WHERE name IS NOT NULL")}
    assert {"test-analyst", "test-admin", "test-service"} <= names
    assert db.execute("SELECT count(*) FROM audit WHERE status = 401").fetchone()[0] >= 2


def test_served_documents_follow_the_published_json_schema(server: dict) -> None:
    import json

    from shoplens.profile_schema import ProfileDocument, json_schema

    committed = json.loads((Path(__file__).resolve().parents[1] / "docs" / "profile.schema.json").read_text())
    assert committed == json_schema()  # regenerate with: python -m shoplens.profile_schema > docs/profile.schema.json
    db = sqlite3.connect(next((server["folder"] / "shoplens.profiles").glob("snap_*.sqlite")))
    docs = [json.loads(d) for (d,) in db.execute("SELECT doc FROM profiles LIMIT 200")]
    for doc in docs:
        ProfileDocument.model_validate(doc)
    assert any(d["tags"] for d in docs) and any(d["predictions"] for d in docs)


def test_plain_language_questions_without_an_llm(server: dict) -> None:
    """The default config has no LLM: the offline parser answers, or refuses with a 400
    that says what it did not understand (issue #14)."""
    r = post(server, "/audiences", "analyst", {"question": "最近三个月没买过东西、抱怨物流的高价值客户"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["filter"] == {"and": [{"field": "recency_days", "op": ">", "value": 90},
                                      {"field": "aspect.logistics", "op": "<", "value": 0},
                                      {"field": "m_score", "op": ">=", "value": 5}]}
    assert body["explanation"].startswith("understood: ") and "recency_days > 90" in body["explanation"]
    r = post(server, "/audiences", "analyst", {"question": "high value customers who own a yacht"})
    assert r.status_code == 400 and "not understood" in r.json()["error"] and "yacht" in r.json()["error"]
    r = post(server, "/audiences", "analyst", {"question": "the customer with phone 13812345678"})
    assert r.status_code == 400 and "identifier" in r.json()["error"] and "13812345678" not in r.text


def test_analyze_endpoint_masks_and_analyses(server: dict) -> None:
    r = post(server, "/analyze", "service", {"texts": ["物流太慢了，但是质量很好，电话13812345678", "👍👍"]})
    assert r.status_code == 200, r.text
    first, emoji = r.json()["results"]
    assert "13812345678" not in r.text and "[PHONE]" in first["text"]
    assert {(a["aspect"], a["polarity"]) for a in first["aspects"]} >= {("logistics", "negative"), ("quality", "positive")}
    assert emoji["language"] == "und" and emoji["sentiment"] is None
    assert post(server, "/analyze", "service", {"texts": []}).status_code == 422
    assert post(server, "/analyze", "service", {"texts": ["x"] * 101}).status_code == 422
    assert httpx.post(server["base"] + "/analyze", json={"texts": ["hi"]}, timeout=10).status_code == 401


def test_profiles_carry_text_signals_and_aspect_audiences_work(server: dict) -> None:
    r = post(server, "/audiences", "analyst", {"text": "aspect.service < 0 and sentiment_mean < 0.5"})
    assert r.status_code == 200, r.text
    ids = r.json()["customer_ids"]
    assert r.json()["total"] > 0
    doc = get(server, f"/profiles/{ids[0]}", "analyst").json()
    assert doc["text"]["aspects"]["service"] < 0 and doc["text"]["sentiment"]["mean"] < 0.5


def test_cli_and_api_return_the_same_document(server: dict) -> None:
    import json

    from typer.testing import CliRunner

    from shoplens.cli import app
    from shoplens.serving.reader import ProfileReader

    # a tagged customer (tags are added at publish: where the two read paths used to differ),
    # not the example, which the erasure test removes
    reader = ProfileReader(Path(server["folder"]) / "shoplens.duckdb")
    cid = reader.query("SELECT customer_id FROM flat WHERE tags <> '[]' ORDER BY total_spend DESC LIMIT 1")[0][0]
    res = CliRunner().invoke(app, ["profile", cid, "--json", "-c", str(Path(server["folder"]) / "shoplens.toml")])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == get(server, f"/profiles/{cid}", "analyst").json()
    readable = CliRunner().invoke(app, ["profile", cid, "-c", str(Path(server["folder"]) / "shoplens.toml")])
    assert readable.exit_code == 0 and "客户画像" in readable.output and '"behaviour"' not in readable.output
