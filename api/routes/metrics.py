"""Prometheus exposition of the app's registry (request metrics and index sizes)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.auth import ReadKey
from api.errors import error_responses

router = APIRouter(tags=["metrics"], responses=error_responses())


@router.get("/metrics", response_class=Response)
def metrics(request: Request, principal: ReadKey) -> Response:
    """Request counts and latencies per route template; documents, chunks and index entries per collection."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
