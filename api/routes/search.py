"""Search one collection: BM25, dense or hybrid, with metadata filters and an optional rerank."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import ReadKey
from api.deps import EngineDep
from api.errors import error_responses
from engine.schemas import SearchOut, SearchRequest, rerank_option, search_out

router = APIRouter(prefix="/v1/collections/{name}", tags=["search"], responses=error_responses(404, 409))


@router.post("/search", response_model=SearchOut)
def search(name: str, body: SearchRequest, engine: EngineDep, principal: ReadKey) -> SearchOut:
    """The ``k`` best chunks with their text, document id, offsets and every score."""
    result = engine.search(
        name, body.query, k=body.k, mode=body.mode, filters=body.filters, rerank=rerank_option(body.rerank)
    )
    return search_out(result)
