"""The one place where domain errors (``common.errors``) become HTTP status codes, and where every
error response gets the same shape: ``{"detail": "<message>"}`` (plus ``errors`` for request
validation). Also the request-size guard (413) that runs before a body is parsed."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.errors import (
    AlreadyExists,
    AttendError,
    CheckpointError,
    CollectionUnusable,
    InvalidInput,
    MissingDependency,
    NotFound,
)

logger = logging.getLogger(__name__)

# Most specific first: the first matching class decides.
STATUS_OF: tuple[tuple[type[Exception], int], ...] = (
    (NotFound, 404),
    (AlreadyExists, 409),
    (CollectionUnusable, 409),
    (InvalidInput, 422),  # BudgetExceeded, ContextTooLong
    (MissingDependency, 501),
    (CheckpointError, 503),  # the configured model cannot be loaded
    (AttendError, 400),
)


ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Malformed request (a body that cannot be parsed, a bad Content-Length).",
    401: "No API key, or an unknown one.",
    403: "The key's scope or collections do not allow this.",
    404: "The collection, document or job does not exist.",
    409: "The name is taken, or the collection's stored settings cannot be opened.",
    413: "The request body exceeds the server's max_request_bytes.",
    422: "Invalid input; `errors` lists each problem of a malformed request.",
    501: "An optional dependency this feature needs is not installed.",
    503: "The service is starting or stopping, or the configured model cannot be loaded.",
}
# What every /v1 route can answer: body and header problems, auth, and the engine not ready.
COMMON_ERRORS = (400, 401, 403, 413, 422, 503)


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for ``codes`` (plus ``COMMON_ERRORS``), each with the ``ErrorOut``
    body that ``install_error_handlers`` really sends."""
    from engine.schemas import ErrorOut

    return {
        code: {"model": ErrorOut, "description": ERROR_DESCRIPTIONS[code]}
        for code in sorted(set(COMMON_ERRORS) | set(codes))
    }


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> list[str]:
    """The methods of the resource at this request's path, for the ``Allow`` header of 405.

    Asked of the router's own matching (path converters and included routers honoured). Where
    templates overlap (``.../documents/upload`` is also ``.../documents/{doc_id}`` for the
    document whose id is ``upload``) the most literal template names the resource, as in the spec."""
    from starlette.routing import Match

    routes = []
    for r in request.app.router.routes:  # included routers (no prefix of their own) flattened
        inner = getattr(r, "original_router", None)
        routes.extend(inner.routes if inner is not None else [r])
    best: tuple[int, list[str]] | None = None
    for m in HTTP_METHODS:
        scope = {**request.scope, "method": m}
        for r in routes:
            match, child = r.matches(scope)
            if match != Match.FULL:
                continue
            n_params = len(child.get("path_params", {}))
            if best is None or n_params < best[0]:
                best = (n_params, [m])
            elif n_params == best[0] and m not in best[1]:
                best[1].append(m)
            break
    return best[1] if best else []


def status_for(exc: Exception) -> int:
    for cls, code in STATUS_OF:
        if isinstance(exc, cls):
            return code
    return 500


def error_body(detail: str, **extra: Any) -> dict[str, Any]:
    return {"detail": detail, **extra}


async def _attend_error(request: Request, exc: Exception) -> JSONResponse:
    code = status_for(exc)
    if code >= 500:
        logger.warning("%s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(error_body(str(exc)), status_code=code)


def _describe(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
    return f"{loc}: {err.get('msg', 'invalid')}"


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    detail = "; ".join(_describe(e) for e in errors[:5]) or "invalid request"
    # ``input`` may hold bytes or other non-JSON values; keep only what is safe to echo.
    safe = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))} for e in errors]
    return JSONResponse(error_body(detail, errors=safe), status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:  # Starlette names only the first route that matched the path
        headers["Allow"] = ", ".join(allowed_methods(request))
    return JSONResponse(error_body(detail), status_code=exc.status_code, headers=headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(error_body("internal error"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Map domain errors to status codes and give every error the ``{"detail": ...}`` shape."""
    app.add_exception_handler(AttendError, _attend_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


class BodySizeLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes``, checked on ``Content-Length``
    before anything is read and, for chunked bodies, while reading (the body is buffered up to the
    limit so the application never sees a partial one)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                await self._reject(send, 400, "invalid Content-Length header")
                return
            if n > self.max_bytes:
                await self._reject(send, 413, f"request body of {n} bytes exceeds the limit of {self.max_bytes}")
                return
            await self.app(scope, receive, send)
            return
        if headers.get(b"transfer-encoding", b"").lower() != b"chunked":
            await self.app(scope, receive, send)
            return
        body: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # disconnect
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._reject(send, 413, f"request body exceeds the limit of {self.max_bytes} bytes")
                return
            body.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _reject(send: Send, status: int, detail: str) -> None:
        payload = json.dumps(error_body(detail)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": payload})
