"""Liveness and readiness. Never require an API key."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from common import __version__

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict:
    """The process is up."""
    return {"status": "ok", "version": __version__}


@router.get("/readyz", responses={503: {"description": "Still starting, or stopping.", "content": {"application/json": {"example": {"ready": False}}}}})
def readyz(request: Request) -> JSONResponse:
    """Models and indexes are loaded and the service can take requests."""
    ready = bool(getattr(request.app.state, "ready", False))
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)
