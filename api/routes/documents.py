"""Documents: batch upsert as JSON, upload of files, list, get, delete.

Small batches are ingested in the request and answered 200 with one outcome per document; batches
larger than ``settings.background_threshold`` (or any batch with ``?background=true``) become a job
answered 202 with its id; ``?ray=true`` makes it a job whose chunking and encoding run on the Ray
cluster of ``settings.ray_address`` (422 when the server lacks ``attend[distributed]``). A document
that fails (empty, too large, malformed, bad encoding) is reported and the others still go in; when
every document fails nothing is stored and the answer is 422 with the outcomes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import JSONResponse

from api.auth import ReadKey, WriteKey
from api.deps import EngineDep, JobsDep, SettingsDep
from api.errors import error_body, error_responses
from common.errors import InvalidInput
from common.settings import Settings
from engine import Engine, JobRunner, extract_text
from engine.distributed.ingest import RayOptions
from engine.schemas import (
    DeletedOut,
    DocumentOut,
    DocumentOutcomeOut,
    DocumentSummaryOut,
    DocumentsUpsert,
    IngestOut,
    JobOut,
    document_out,
    document_summary_out,
    ingest_out,
    job_out,
)

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/collections/{name}/documents", tags=["documents"], responses=error_responses(404, 409))

INGEST_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": IngestOut, "description": "Ingested now: one outcome per document."},
    202: {"model": JobOut, "description": "A background job; poll GET /v1/jobs/{id}."},
    **error_responses(404, 409),
}
INGEST_RESPONSES[422] = {
    **INGEST_RESPONSES[422],
    "description": "Malformed request, every document failed (`outcomes` included), or `ray=true` on a server "
    "without Ray.",
}


RayQuery = Annotated[bool, Query(
    description="Run as a background job whose chunking and encoding run on the server's Ray cluster "
    "(ATTEND_RAY_ADDRESS); needs attend[distributed] on the server."
)]


def _ingest(
    name: str,
    docs: Sequence[Mapping[str, Any]],
    pre_failed: Sequence[DocumentOutcomeOut],
    background: bool | None,
    ray: bool,
    engine: Engine,
    jobs: JobRunner,
    settings: Settings,
) -> JSONResponse:
    total = len(docs) + len(pre_failed)
    if total > settings.max_batch_documents:
        raise InvalidInput(f"{total} documents in one request; the limit is {settings.max_batch_documents}")
    if ray and background is False:
        raise InvalidInput("ray=true runs as a background job; it cannot be combined with background=false")
    engine.get_collection(name)  # 404 before any work
    if ray or background or (background is None and total > settings.background_threshold):
        options = RayOptions(address=settings.ray_address, actors=settings.ray_actors,
                             write_batch_size=settings.ingest_batch_size) if ray else None
        job = jobs.submit(name, docs, ray=options)
        if pre_failed:
            job = engine.update_job(job.id, add_errors=[{"doc_id": o.id, "reason": o.error} for o in pre_failed])
        return JSONResponse(
            job_out(job).model_dump(mode="json"), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"}
        )
    out = ingest_out(engine.upsert_documents(name, docs, batch_size=settings.ingest_batch_size))
    if pre_failed:
        out.outcomes = list(pre_failed) + out.outcomes
        out.counts["failed"] = out.counts.get("failed", 0) + len(pre_failed)
    if any(o.status != "failed" for o in out.outcomes):
        if jobs.saver is not None:
            jobs.saver.touch(name)
        return JSONResponse(out.model_dump(mode="json"), status_code=200)
    reasons = "; ".join(f"{o.id}: {o.error}" for o in out.outcomes[:5])
    body = error_body(f"no document was stored: {reasons}", outcomes=[o.model_dump() for o in out.outcomes])
    return JSONResponse(body, status_code=422)


@router.post("", responses=INGEST_RESPONSES, response_model=None)
def upsert_documents(
    name: str,
    body: DocumentsUpsert,
    engine: EngineDep,
    jobs: JobsDep,
    settings: SettingsDep,
    principal: WriteKey,
    background: Annotated[bool | None, Query(description="Force (true) or forbid (false) a background job.")] = None,
    ray: RayQuery = False,
) -> JSONResponse:
    """Insert or replace documents (``id``, ``text``, optional ``title`` and ``metadata``)."""
    return _ingest(name, body.documents, [], background, ray, engine, jobs, settings)


@router.post("/upload", responses=INGEST_RESPONSES, response_model=None)
def upload_documents(
    name: str,
    engine: EngineDep,
    jobs: JobsDep,
    settings: SettingsDep,
    principal: WriteKey,
    files: Annotated[list[UploadFile], File(min_length=1, description=".txt, .md or .html files; the file's base name is the document id.")],
    metadata: Annotated[str | None, Form(description="A JSON object added to every document's metadata.")] = None,
    background: Annotated[bool | None, Query(description="Force (true) or forbid (false) a background job.")] = None,
    ray: RayQuery = False,
) -> JSONResponse:
    """Upload files; HTML is reduced to its visible text, Markdown and plain text are kept as they are."""
    extra: dict[str, Any] = {}
    if metadata:
        try:
            extra = json.loads(metadata)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"metadata is not valid JSON: {exc}") from None
        if not isinstance(extra, dict):
            raise InvalidInput("metadata must be a JSON object")
    docs: list[dict[str, Any]] = []
    failed: list[DocumentOutcomeOut] = []
    for f in files:
        doc_id = _upload_id(f.filename)
        try:
            ext = extract_text(doc_id, f.file.read())
        except InvalidInput as exc:
            failed.append(DocumentOutcomeOut(id=doc_id, status="failed", error=str(exc)))
            continue
        docs.append({
            "id": doc_id, "title": ext.title, "text": ext.text,
            "metadata": {**extra, "source": doc_id, "format": ext.kind},
        })
    return _ingest(name, docs, failed, background, ray, engine, jobs, settings)


def _upload_id(filename: str | None) -> str:
    """The document id of an uploaded file: its base name, directories dropped (``../../x.txt``
    and ``C:\\docs\\x.txt`` are both ``x.txt``); ``upload`` when nothing is left."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name.strip()
    return name if name not in ("", ".", "..") else "upload"


@router.get("", response_model=list[DocumentSummaryOut])
def list_documents(
    name: str,
    engine: EngineDep,
    principal: ReadKey,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DocumentSummaryOut]:
    """Documents in insertion order, paged."""
    return [document_summary_out(r) for r in engine.list_documents(name, offset=offset, limit=limit)]


@router.get("/{doc_id:path}", response_model=DocumentOut)
def get_document(name: str, doc_id: str, engine: EngineDep, principal: ReadKey) -> DocumentOut:
    """A stored document with its text, metadata and chunk ids."""
    return document_out(engine.get_document(name, doc_id))


@router.delete("/{doc_id:path}", response_model=DeletedOut)
def delete_document(name: str, doc_id: str, engine: EngineDep, jobs: JobsDep, principal: WriteKey) -> DeletedOut:
    """Delete a document and its chunks from the store and both indexes."""
    removed = engine.delete_document(name, doc_id)
    if jobs.saver is not None:
        jobs.saver.touch(name)
    return DeletedOut(id=doc_id, chunks_removed=removed)
