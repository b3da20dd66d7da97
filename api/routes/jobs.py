"""Background ingestion jobs: status with progress and per-document failures."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.auth import ReadKey, authorize
from api.deps import EngineDep
from api.errors import error_responses
from engine.schemas import JobOut, job_out

router = APIRouter(tags=["jobs"], responses=error_responses(404))


@router.get("/v1/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: str, engine: EngineDep, principal: ReadKey) -> JobOut:
    """Status (queued, running, done, failed), progress and failure reasons of one job."""
    job = engine.get_job(job_id)
    authorize(principal, "read", job.collection)
    return job_out(job)


@router.get("/v1/collections/{name}/jobs", response_model=list[JobOut])
def list_jobs(
    name: str, engine: EngineDep, principal: ReadKey, limit: Annotated[int, Query(ge=1, le=1000)] = 20
) -> list[JobOut]:
    """The collection's most recent jobs first."""
    return [job_out(j) for j in engine.list_jobs(name, limit=limit)]
