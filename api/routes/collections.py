"""Collections: create (admin), list and get (read), delete (admin)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.auth import AdminKey, ReadKey, authorize
from api.deps import EngineDep
from api.errors import error_responses
from common.errors import CheckpointError, InvalidInput
from engine.schemas import CollectionCreate, CollectionOut, collection_out

router = APIRouter(prefix="/v1/collections", tags=["collections"], responses=error_responses())


@router.post("", status_code=201, response_model=CollectionOut, responses=error_responses(409))
def create_collection(body: CollectionCreate, engine: EngineDep, principal: AdminKey) -> CollectionOut:
    """Create a collection with its chunking and retrieval settings (409 if the name is taken)."""
    authorize(principal, "admin", body.name)
    try:
        info = engine.create_collection(body.name, body.settings.model_dump(exclude_none=True))
    except CheckpointError as exc:  # the caller named an encoder we cannot load: their input
        raise InvalidInput(str(exc)) from None
    return collection_out(info, engine.collection_stats(info.name))


@router.get("", response_model=list[CollectionOut])
def list_collections(engine: EngineDep, principal: ReadKey) -> list[CollectionOut]:
    """The collections this key may read, by name."""
    return [collection_out(c) for c in engine.list_collections() if principal.can_access(c.name)]


@router.get("/{name}", response_model=CollectionOut, responses=error_responses(404, 409))
def get_collection(name: str, engine: EngineDep, principal: ReadKey) -> CollectionOut:
    """Settings and counts (documents, chunks, tokens, index entries)."""
    return collection_out(engine.get_collection(name), engine.collection_stats(name))


@router.delete("/{name}", status_code=204, responses=error_responses(404))
def delete_collection(name: str, engine: EngineDep, principal: AdminKey) -> Response:
    """Delete a collection, its documents, chunks and index files."""
    engine.delete_collection(name)
    return Response(status_code=204)
