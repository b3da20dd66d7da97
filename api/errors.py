"""The one place where domain errors (``attend.errors``) become HTTP status codes, and where every
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

from attend.errors import (
    AlreadyExists,
    AttendError,
    CheckpointError,
    InvalidInput,
    MissingDependency,
    NotFound,
)

logger = logging.getLogger(__name__)

# Most specific first: the first matching class decides.
STATUS_OF: tuple[tuple[type[Exception], int], ...] = (
    (NotFound, 404),
    (AlreadyExists, 409),
    (InvalidInput, 422),  # BudgetExceeded, ContextTooLong
    (MissingDependency, 501),
    (CheckpointError, 503),  # the configured model cannot be loaded
    (AttendError, 400),
)


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
    return JSONResponse(error_body(detail), status_code=exc.status_code, headers=exc.headers)


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
