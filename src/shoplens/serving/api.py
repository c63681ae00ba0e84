"""The REST API (FastAPI): a thin door over the serving files, access control and the
library. ``create_app(cfg)`` builds it; ``shoplens serve`` runs it with uvicorn.

Every endpoint but ``/health`` needs an ``X-API-Key``; every request is audited, with the
customer's pseudonym in the stored path, never the id as typed (``guard``). Looking a
customer up by the shop's own id is for admins only. Errors are ``{"error": "...",
"code": "..."}`` with the status the library's exception carries.
"""

from __future__ import annotations

import atexit
import functools
import io
import json
import threading
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from shoplens.config import Config
from shoplens.consent import (
    Ledger,
    Selection,
    consent_view,
    record_change,
    select,
    withdrew_profiling,
)
from shoplens.errors import ConfigError, ConsentError, NotFoundError
from shoplens.fsutil import private_umask
from shoplens.privacy import PSEUDONYM_PREFIX, Keys
from shoplens.serving.access import Access, Principal, require_role
from shoplens.serving.audience import (
    FilterError,
    compile_filter,
    parse_text,
    to_text,
    valid_unicode,
)
from shoplens.serving.guard import (
    MAX_BODY,
    Audit,
    AuditRecord,
    BodyLimit,
    ProfileFastPath,
    audit_record,
    install_error_handlers,
)
from shoplens.serving.profile_store import AUDIENCE_FIELDS, EXPORT_COLUMNS, ProfileReader

__all__ = ["MAX_BODY", "MAX_PAGE", "MAX_PAGE_NUMBER", "create_app"]
MAX_PAGE = 1000
MAX_PAGE_NUMBER = 1_000_000  # page * page_size stays far inside SQLite's 64-bit integers
SERVICE_FIELDS = ("profile_version", "customer_id", "segment", "tags", "predictions", "provenance")
ERASE_ROUTE = "/admin/customers/{customer_id}"


def _unicode(text: str) -> str:
    if not valid_unicode(text):
        raise ValueError("not valid Unicode (holds a lone surrogate)")
    return text


Text = Annotated[str, AfterValidator(_unicode)]


class AudienceRequest(BaseModel):
    """An audience: a filter tree (JSON form) or its text form."""

    model_config = ConfigDict(extra="forbid")
    filter: dict[str, Any] | None = None
    text: Text | None = Field(default=None, max_length=2000)
    question: Text | None = Field(default=None, max_length=500)  # plain language, needs [llm]
    page: int = Field(default=1, ge=1, le=MAX_PAGE_NUMBER)
    page_size: int = Field(default=100, ge=1, le=MAX_PAGE)
    format: str = Field(default="json", pattern="^(json|csv|parquet)$")
    # the channel the audience is for: only customers whose consent allows it are kept
    # (required for an export: exported customers leave ShopLens)
    channel: str | None = Field(default=None, pattern="^(sms|email|push|phone|ads|export)$")
    # an ads export with the hashed e-mail and phone (admins; sharing_ads consent only)
    match_keys: bool = False


class ConsentRequest(BaseModel):
    """A grant or withdrawal, recorded now (serving honours it at once)."""

    model_config = ConfigDict(extra="forbid")
    purpose: str = Field(max_length=40)
    channel: str = Field(default="any", max_length=40)
    status: str = Field(max_length=40)
    source: Text = Field(default="api", max_length=200)


class RecommendRequest(BaseModel):
    """A visitor the build never saw: the products they looked at or bought."""

    model_config = ConfigDict(extra="forbid")
    products: list[Annotated[Text, Field(max_length=200)]] = Field(min_length=1, max_length=100)
    n: int = Field(default=10, ge=1, le=100)
    category: Text | None = Field(default=None, max_length=200)
    segment: Text | None = Field(default=None, max_length=200)


class AnalyzeRequest(BaseModel):
    """Texts for the text analysers (masked before any of them sees the text)."""

    model_config = ConfigDict(extra="forbid")
    texts: list[Text] = Field(min_length=1, max_length=100)


def create_app(cfg: Config, keys: Keys | None = None) -> FastAPI:
    from shoplens.llm import provider_from_config

    store_path = cfg.store_path
    llm = provider_from_config(cfg)  # the template writer without [llm]
    if keys is None:
        from shoplens.privacy import optional_keys

        keys = optional_keys(cfg)
    private_umask()  # the server creates the audit log and rewrites serving files: private to its user
    reader = ProfileReader(store_path)
    access = Access(store_path)
    ledger = Ledger(store_path)  # consent withdrawn since the build: honoured at once

    def served_raw(cid: str) -> str | None:
        """The profile document, unless the customer withdrew profiling since the build."""
        raw = reader.get_raw(cid)
        return None if raw is None or withdrew_profiling(ledger, reader, cid) else raw
    # one DuckDB user at a time in this process: an erasure replaces the file (compaction),
    # which must not happen under another open handle
    store_lock = threading.Lock()
    atexit.register(access.commit)  # the last group of audit rows, when the server stops
    app = ShopLensAPI(title="ShopLens", version="0.1", description="Customer profiles, segments and audiences.")
    install_error_handlers(app)

    def principal(request: Request, key: str | None) -> Principal:
        record = audit_record(request)
        record.who = access.authenticate(key)
        return record.who

    def resolve(who: Principal, ref: str, record: AuditRecord) -> str:
        """The pseudonym for ``ref``: as given, or (admins only) from the shop's own id."""
        if ref.startswith(PSEUDONYM_PREFIX):
            return ref
        record.details.append("raw-id lookup")
        require_role(who, "admin", what="look customers up by the shop's own id (use the pseudonym c_...)")
        if keys is None:
            raise ConfigError("looking customers up by the shop's own id needs the server's secret key; "
                              "use the pseudonym (c_...)")
        return keys.pseudonym(ref)

    @app.get("/health")
    def health() -> dict[str, Any]:
        """ok, degraded (serving an older snapshot: the current file failed its integrity
        check) or unavailable; never a path."""
        return reader.health()

    @app.get("/profiles/{customer_id}", response_model=None)
    async def profile(request: Request, customer_id: str, include_pii: bool = False,
                      x_api_key: str | None = Header(default=None)) -> dict[str, Any] | Response:
        # async: a point read in SQLite takes microseconds, less than a hop to the threadpool
        record = audit_record(request)
        who = principal(request, x_api_key)
        cid = resolve(who, customer_id, record)
        if include_pii:
            record.details.append("pii")
            require_role(who, "admin", what="read PII")
        raw = served_raw(cid)
        if raw is None:  # the audit names only customers that exist (an erased one stays erased)
            raise NotFoundError("customer not found in the current snapshot")
        record.path, record.customer_id = f"/profiles/{cid}", cid
        if who.role != "service" and not include_pii:
            return Response(raw, media_type="application/json")  # stored JSON, served as is
        doc = json.loads(raw)
        if who.role == "service":
            doc = {k: doc[k] for k in SERVICE_FIELDS if k in doc}
        if include_pii:
            doc["pii"] = await run_in_threadpool(_locked, store_lock, _decrypt_pii, cfg, cid, keys)
        return doc

    @app.get("/segments")
    def segments(request: Request, x_api_key: str | None = Header(default=None)) -> dict[str, Any]:
        principal(request, x_api_key)
        db = reader.db()
        clusters = db.execute(
            "SELECT segment_id, segment_name, count(*), avg(total_spend), avg(churn_risk) FROM flat "
            "WHERE segment_id IS NOT NULL GROUP BY 1, 2 ORDER BY 1").fetchall()
        rfm = db.execute(
            "SELECT rfm_segment, rfm_segment_zh, count(*), avg(total_spend), avg(churn_risk) FROM flat "
            "GROUP BY 1, 2 ORDER BY 3 DESC").fetchall()
        return {
            "segments": [{"id": int(i), "name": n, "customers": c, "mean_spend": s, "mean_churn_risk": r}
                         for i, n, c, s, r in clusters],
            "rfm_segments": [{"segment": s, "segment_zh": z, "customers": n, "mean_spend": spend, "mean_churn_risk": churn}
                             for s, z, n, spend, churn in rfm],
        }

    @app.get("/segments/{name}/members")
    def members(request: Request, name: str, page: int = Query(default=1, ge=1, le=MAX_PAGE_NUMBER),
                page_size: int = Query(default=100, ge=1, le=MAX_PAGE),
                x_api_key: str | None = Header(default=None)) -> dict[str, Any]:
        """Members of a segment, by id or name, or of an RFM segment by its name."""
        principal(request, x_api_key)
        db = reader.db()
        where = "CAST(segment_id AS INTEGER) = ? OR segment_name = ? OR rfm_segment = ? OR rfm_segment_zh = ?"
        seg_id = int(name) if name.isascii() and name.isdecimal() and len(name) <= 9 else -1  # not "²", not > 64 bits
        params = [seg_id, name, name, name]
        total = db.execute(f"SELECT count(*) FROM flat WHERE {where}", params).fetchone()[0]
        if total == 0:
            raise NotFoundError("segment not found; GET /segments lists them")
        ids = [r[0] for r in db.execute(
            f"SELECT customer_id FROM flat WHERE {where} ORDER BY customer_id LIMIT ? OFFSET ?",
            [*params, page_size, (page - 1) * page_size])]
        return {"segment": name, "total": total, "page": page, "page_size": page_size, "customer_ids": ids}

    @app.post("/audiences")
    def audiences(request: Request, body: AudienceRequest, x_api_key: str | None = Header(default=None)) -> Any:
        who = principal(request, x_api_key)
        require_role(who, "admin", "analyst")
        given = [k for k in ("filter", "text", "question") if getattr(body, k) is not None]
        if len(given) != 1:
            raise FilterError("give exactly one of 'filter' (JSON form), 'text' (text form) or 'question' (plain language)")
        explanation = None
        if body.question is not None:
            from shoplens.serving.nl import (
                question_to_filter,  # no LLM: the offline parser (refusals: 400)
            )

            tree, explanation = question_to_filter(llm, body.question)
        else:
            tree = body.filter if body.filter is not None else parse_text(body.text or "")
        where, params = compile_filter(tree, AUDIENCE_FIELDS)
        if body.format != "json" and body.channel is None:
            raise FilterError("an export names its 'channel' (sms, email, push, phone, ads or export): only "
                              "customers who consented to it are exported")
        if body.match_keys:
            require_role(who, "admin", what="export match keys (they are derived from decrypted PII)")
            if body.format == "json" or body.channel != "ads":
                raise ConsentError("match keys go only into an export for ad platforms: format csv or parquet "
                                   "with channel 'ads' (sharing consent)")
        db = reader.db()
        chosen = select(db, where, params, body.channel, ledger, reader.snapshot_id())
        if body.format != "json":
            hashed = None
            if body.match_keys:
                from shoplens.serving.match_keys import match_keys

                hashed = _locked(store_lock, match_keys, store_path, keys, chosen.ids(db))
            return _export(db, chosen, body.format, hashed)
        out = {"filter": tree, "filter_text": to_text(tree), "total": chosen.kept, "page": body.page,
               "page_size": body.page_size, "consent": chosen.report(),
               "customer_ids": chosen.ids(db, body.page_size, (body.page - 1) * body.page_size)}
        if explanation is not None:
            out["explanation"] = explanation
        return out

    @app.get("/profiles/{customer_id}/consent")
    def consent(request: Request, customer_id: str, x_api_key: str | None = Header(default=None)) -> dict[str, Any]:
        """The customer's consent now: the state at the build, the changes since, and the
        records behind it (a customer without a profile has a consent too)."""
        record = audit_record(request)
        who = principal(request, x_api_key)
        cid = resolve(who, customer_id, record)
        view = consent_view(reader, ledger, cid)  # 404 first: the audit names only customers that exist
        record.path, record.customer_id = f"/profiles/{cid}/consent", cid
        return view

    @app.post("/profiles/{customer_id}/consent")
    def set_consent(request: Request, customer_id: str, body: ConsentRequest,
                    x_api_key: str | None = Header(default=None)) -> dict[str, Any]:
        """Record a grant or a withdrawal (the shop's own systems: admin or service keys)."""
        record = audit_record(request)
        who = principal(request, x_api_key)
        require_role(who, "admin", "service", what="record consent")
        cid = resolve(who, customer_id, record)
        consent_view(reader, ledger, cid)  # 404 for a customer the store does not know (and no audit name)
        record.path, record.customer_id = f"/profiles/{cid}/consent", cid
        record_change(store_path, cid, body.purpose, body.channel, body.status, f"{body.source} ({who.name})",
                      cfg.defaults.timezone)
        ledger.refresh()
        return consent_view(reader, ledger, cid)

    from shoplens.recommend.reasons import Reasons
    from shoplens.serving import recommendations as recs

    phrases = Reasons.load(None if cfg.recommend.rules == "default" else cfg.recommend.rules)

    def _category(category: str | None) -> str | None:
        if category is not None and (len(category) > 200 or not valid_unicode(category)):
            raise FilterError("category: at most 200 characters of valid Unicode")
        return category or None

    @app.get("/profiles/{customer_id}/recommendations", response_model=None)
    async def recommendations(request: Request, customer_id: str, n: int = Query(default=10, ge=1, le=recs.MAX_N),
                              category: str | None = None, exclude_purchased: bool = False,
                              x_api_key: str | None = Header(default=None)) -> Response:
        """The customer's ranked products with reasons, filtered now (any role: the
        storefront shows them). A customer who withdrew personalisation or profiling
        since the build gets the shop's popular list; one not in the build, too."""
        record = audit_record(request)
        who = principal(request, x_api_key)
        if len(customer_id) > 200:  # no id is this long: not echoed back as a customer without a build
            raise NotFoundError("customer not found in the current snapshot")
        cid = resolve(who, customer_id, record)
        db = reader.db()
        state = ledger.state(reader.snapshot_id(fresh=False)).get(cid, {})
        personal = state.get("personalisation") is not False and state.get("profiling") is not False
        out = recs.for_customer(db, cid, n, _category(category), exclude_purchased, personal, phrases)
        if out["in_build"]:  # the audit names only customers that exist
            record.path, record.customer_id = f"/profiles/{cid}/recommendations", cid
        # async and serialised here: point reads take microseconds, less than a threadpool hop
        return Response(json.dumps(out, ensure_ascii=False), media_type="application/json")

    @app.get("/products/{product_id}/similar")
    def similar(request: Request, product_id: str, n: int = Query(default=10, ge=1, le=recs.MAX_N),
                kind: str | None = Query(default=None, pattern="^(bought_together|viewed_together)$"),
                x_api_key: str | None = Header(default=None)) -> dict[str, Any]:
        """Products bought together / viewed together with this one."""
        principal(request, x_api_key)
        if len(product_id) > 200 or not valid_unicode(product_id):
            raise NotFoundError("product not found in the current snapshot")
        return recs.similar(reader.db(), product_id, n, kind)

    @app.post("/recommendations")
    def visitor_recommendations(request: Request, body: RecommendRequest,
                                x_api_key: str | None = Header(default=None)) -> dict[str, Any]:
        """For a visitor the build never saw, from the products they viewed or bought
        (published neighbours: no retrain), topped up from popularity."""
        principal(request, x_api_key)
        return recs.for_products(reader.db(), body.products, body.n, body.category, body.segment, phrases)

    from shoplens.serving import risk

    risk.add_routes(app, reader, principal, resolve, store_path, lambda cid: withdrew_profiling(ledger, reader, cid))
    from shoplens.serving import insight

    insight.add_routes(app, reader, principal)

    analysers: list[Any] = []
    lock = threading.Lock()  # one analysis at a time: the embedder is a single native model

    @app.post("/analyze")
    def analyze(request: Request, body: AnalyzeRequest, x_api_key: str | None = Header(default=None)) -> dict[str, Any]:
        principal(request, x_api_key)  # any role: the answer holds masked text only
        with lock:
            if not analysers:
                from shoplens.text.analysers import Analysers

                analysers.append(Analysers.for_shop(cfg))
            results, _ = analysers[0].analyse(body.texts)
        return {"results": [r.as_dict() for r in results]}

    @app.delete("/admin/customers/{customer_id}")
    def erase(request: Request, customer_id: str, x_api_key: str | None = Header(default=None)) -> dict[str, Any]:
        who = principal(request, x_api_key)
        require_role(who, "admin")
        from shoplens.erasure import forget
        from shoplens.store import Store

        with store_lock, Store.for_config(cfg) as store:
            report = forget(store, customer_id, keys, cfg)
        return {"customer_id": report.customer_id, "removed": report.removed}

    # in front of the framework: the audit (the erasure row never names the customer,
    # whatever the outcome), the body limit, then the fast path for the plain profile read
    route = next(r for r in app.routes if getattr(r, "path", None) == "/profiles/{customer_id}")
    framework = functools.partial(FastAPI.__call__, app)
    fast = ProfileFastPath(framework, authenticate=access.authenticate, get_raw=served_raw, route=route)
    app.front = Audit(BodyLimit(fast, max_body=MAX_BODY), access=access,
                      fixed_paths={ERASE_ROUTE: "/admin/customers/(erased)"})
    return app


class ShopLensAPI(FastAPI):
    """FastAPI with ShopLens' own ASGI layers in front of the whole framework stack
    (``create_app`` sets ``front``): every request passes the audit and the body limit
    first, and the plain profile read never enters the framework's middleware layers."""

    front: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.front is None:
            await super().__call__(scope, receive, send)
        else:
            await self.front(scope, receive, send)


def _export(db: Any, chosen: Selection, fmt: str, hashed: dict[str, dict[str, str | None]] | None = None) -> Response:
    import pyarrow as pa

    cur = db.execute(f"SELECT {EXPORT_COLUMNS} FROM flat WHERE {chosen.where} ORDER BY customer_id", chosen.params)
    names = [d[0] for d in cur.description]
    rows = cur.fetchall()
    table = pa.table({n: [r[i] for r in rows] for i, n in enumerate(names)})
    if hashed is not None:
        for col in ("email_sha256", "phone_sha256"):
            table = table.append_column(col, pa.array([hashed[r[0]][col] for r in rows], pa.string()))
    buf = io.BytesIO()
    # who consent left out, and why: for the caller, beside the file
    headers = {"X-ShopLens-Consent": json.dumps(chosen.report(), separators=(",", ":"))}
    if fmt == "csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, buf)
        return Response(buf.getvalue(), media_type="text/csv",
                        headers={"Content-Disposition": "attachment; filename=audience.csv", **headers})
    import pyarrow.parquet as pq

    pq.write_table(table, buf)
    return Response(buf.getvalue(), media_type="application/vnd.apache.parquet",
                    headers={"Content-Disposition": "attachment; filename=audience.parquet", **headers})


def _locked(lock: threading.Lock, fn: Any, *args: Any) -> Any:
    with lock:
        return fn(*args)


def _decrypt_pii(cfg: Config, cid: str, keys: Keys | None) -> dict[str, str]:
    if keys is None:
        raise ConfigError("PII cannot be decrypted: the server has no secret key")
    from shoplens.store import Store

    with Store.open(cfg.store_path, read_only=True) as store:
        rows = store.con.execute("SELECT field, ciphertext FROM vault_customer_pii WHERE customer_id = ?", [cid]).fetchall()
    return {field: keys.decrypt(token) for field, token in rows}


def app_from_env() -> FastAPI:  # pragma: no cover - used by `uvicorn shoplens.serving.api:app_from_env --factory`
    import os

    from shoplens.config import load_config

    return create_app(load_config(Path(os.environ.get("SHOPLENS_CONFIG", "shoplens.toml"))))
