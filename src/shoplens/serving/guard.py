"""What stands between the network and the REST API's routes: the body limit, the audit
row and access-log line of every request, and the one error shape.

Both middlewares are pure ASGI (no ``BaseHTTPMiddleware``: it costs a task and a copy
per request). ``BodyLimit`` counts the bytes as they arrive, so a chunked body or a
``Content-Length`` that lies is cut off at ``MAX_BODY`` with a 413, before the route
parses anything. ``Audit`` writes one row per request, failed or not (500s included),
before the last byte of the answer leaves, and logs ``METHOD /route/{template} STATUS ms`` to the ``shoplens.access`` logger:
route templates, never the ids in the URL.

Every error answers ``{"error": message, "code": code}``. Messages never carry the
input back (422s list locations and messages only), nor file paths, process ids, or
anything the LLM endpoint said; an unexpected exception answers 500 ``internal error``
with no detail.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shoplens.errors import ShopLensError, public
from shoplens.serving.access import Access, Principal

MAX_BODY = 64 * 1024
AUDIT_KEY = "shoplens.audit"
NO_ROUTE = "(no route)"
log = logging.getLogger("shoplens.access")

_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}
_HTTP_MESSAGES = {404: "no such endpoint: GET /docs lists them", 405: "method not allowed on this endpoint",
                  413: f"request body larger than {MAX_BODY} bytes"}


@dataclass
class AuditRecord:
    """What a route tells the audit about its request; the middleware puts one in the
    ASGI scope under ``AUDIT_KEY``. ``path`` replaces the route template (it holds the
    pseudonym, never the id as typed)."""

    who: Principal | None = None
    path: str | None = None
    customer_id: str | None = None
    details: list[str] = field(default_factory=list)


def audit_record(request: Request) -> AuditRecord:
    """The request's audit record (a throw-away one where no ``Audit`` middleware runs)."""
    record = request.scope.get(AUDIT_KEY)
    return record if isinstance(record, AuditRecord) else AuditRecord()


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when the body crosses the limit (FastAPI passes
    HTTPExceptions from body reading through to the handlers)."""

    def __init__(self) -> None:
        super().__init__(413, _HTTP_MESSAGES[413])


class BodyLimit:
    """413 for a body over ``max_body`` bytes, declared or streamed."""

    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = chunked = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                chunked = value
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            await _send_error(scope, send, 413, _HTTP_MESSAGES[413], "too_large")
            return
        if chunked is None and declared in (None, b"0"):
            await self.app(scope, receive, send)  # no body: nothing to count
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise BodyTooLarge()
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:
            if started:
                raise
            await _send_error(scope, send, 413, _HTTP_MESSAGES[413], "too_large")


class AccessLines:
    """Access-log lines gathered and handed to the ``shoplens.access`` logger as one record
    every ``every`` seconds (or ``most`` lines): a log record per request costs as much as
    the profile read it describes. Lines carry their own time; they appear at most
    ``every`` seconds late, and are flushed at exit."""

    def __init__(self, every: float = 0.25, most: int = 500) -> None:
        self.every, self.most = every, most
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        atexit.register(self.flush)

    def add(self, line: str) -> None:
        with self._lock:
            self._lines.append(line)
            full = len(self._lines) >= self.most
            if not full and self._timer is None:
                self._timer = threading.Timer(self.every, self.flush)
                self._timer.daemon = True
                self._timer.start()
        if full:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            lines, self._lines = self._lines, []
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        if lines:
            log.info("%s", "\n".join(lines))


class Audit:
    """One audit row and one access-log line per request (``skip``: paths left out)."""

    def __init__(self, app: ASGIApp, access: Access, skip: tuple[str, ...] = ("/health",),
                 fixed_paths: dict[str, str] | None = None) -> None:
        self.app = app
        self.access = access
        self.skip = skip
        self.fixed_paths = fixed_paths or {}  # route template -> path stored whatever the route says
        self.lines = AccessLines()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.skip:
            await self.app(scope, receive, send)
            return
        record = AuditRecord()
        scope[AUDIT_KEY] = record
        status = 500  # unless a response starts: an exception escaping the app
        done = False
        t0 = time.perf_counter()

        def write() -> None:
            nonlocal done
            done = True
            template = getattr(scope.get("route"), "path", None) or NO_ROUTE
            path = self.fixed_paths.get(template) or record.path or template
            self.access.audit(record.who, scope["method"], path, record.customer_id, status, ", ".join(record.details))
            if log.isEnabledFor(logging.INFO):
                self.lines.add(f"{time.strftime('%H:%M:%S')} {scope['method']} {template} {status} "
                               f"{1000 * (time.perf_counter() - t0):.1f} ms")

        async def seen(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body") and not done:
                write()  # before the client has the whole answer: what it saw is on record
            await send(message)

        try:
            await self.app(scope, receive, seen)
        finally:
            if not done:
                write()


def install_error_handlers(app: FastAPI) -> None:
    """The one error shape for library errors, HTTP errors, validation errors and the rest."""

    @app.exception_handler(ShopLensError)
    async def library_error(_request: Request, err: ShopLensError) -> JSONResponse:
        return _error(err.http_status, public(str(err)), err.code)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, err: HTTPException) -> JSONResponse:
        message = _HTTP_MESSAGES.get(err.status_code) or public(str(err.detail))
        return _error(err.status_code, message, _HTTP_CODES.get(err.status_code, "http_error"), err.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, err: RequestValidationError) -> JSONResponse:
        problems = [f"{_location(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in err.errors()[:10]]
        return _error(422, public("invalid request: " + "; ".join(problems)), "validation")

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, _err: Exception) -> JSONResponse:
        return _error(500, "internal error", "internal")


def _location(loc: Any) -> str:
    return ".".join(str(part)[:40] for part in loc) or "request"


def _error(status: int, message: str, code: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "code": code}, status_code=status, headers=headers)


async def _send_error(scope: Scope, send: Send, status: int, message: str, code: str) -> None:
    await _error(status, message, code)(scope, _no_receive, send)


async def _no_receive() -> Message:  # pragma: no cover - a JSONResponse never reads
    return {"type": "http.disconnect"}


class ProfileFastPath:
    """``GET /profiles/c_...`` answered without the framework when it can simply succeed.

    The hottest route is a key check and one SQLite point read; FastAPI's routing,
    parameter parsing and response objects cost several times that (bench/api.py). This
    layer sits inside ``Audit`` and ``BodyLimit``, so the request is audited and logged
    the same way; it answers only the plain success (a pseudonym, no query string, a
    valid key of a role that sees whole documents, a stored profile) with exactly the
    bytes the route would send, and hands every other request, and any failure, to the
    framework, whose route then answers as documented.
    """

    def __init__(self, app: ASGIApp, authenticate: Any, get_raw: Any, route: Any, prefix: str = "/profiles/c_") -> None:
        self.app = app
        self.authenticate = authenticate
        self.get_raw = get_raw
        self.route = route
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = self._answer(scope) if scope["type"] == "http" else None
        if body is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    def _answer(self, scope: Scope) -> bytes | None:
        path = scope["path"]
        if scope["method"] != "GET" or scope["query_string"] or not path.startswith(self.prefix) or path.count("/") != 2:
            return None
        key = next((v for k, v in scope["headers"] if k == b"x-api-key"), None)
        try:
            who = self.authenticate(key.decode("latin-1") if key is not None else None)
            if who.role == "service":  # sees a subset of fields: the route builds it
                return None
            cid = path[len("/profiles/"):]
            raw = self.get_raw(cid)
        except Exception:  # the route repeats the work and answers the error in the one shape
            return None
        if raw is None:
            return None
        record = scope.get(AUDIT_KEY)
        if isinstance(record, AuditRecord):
            record.who, record.path, record.customer_id = who, f"/profiles/{cid}", cid
        return raw.encode("utf-8")
