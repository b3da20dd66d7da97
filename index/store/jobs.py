"""Background ingestion jobs in the store: create, update progress and errors, read, list.

A job names its collection rather than referencing it, so its record outlives the collection.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select

from common.errors import InvalidInput, NotFound
from index.records import JOB_STATUSES, JobInfo, check_collection_name, check_json
from index.rows import JobRow, as_utc, utcnow
from index.store.database import Database


def job_info(row: JobRow) -> JobInfo:
    """The frozen value of a job row."""
    return JobInfo(
        row.id,
        row.collection,
        row.status,  # type: ignore[arg-type]
        row.total,
        row.done,
        list(row.errors or []),
        as_utc(row.created_at),
        as_utc(row.updated_at),
    )


class Jobs(Database):
    """The job operations of :class:`~index.store.Store`."""

    def create_job(self, collection: str, total: int = 0) -> JobInfo:
        """A queued ingestion job for ``collection`` with ``total`` documents to process."""
        check_collection_name(collection)
        if not isinstance(total, int) or total < 0:
            raise InvalidInput(f"total must be a non-negative integer, got {total!r}")
        now = utcnow()
        row = JobRow(
            id=str(uuid.uuid4()),
            collection=collection,
            status="queued",
            total=total,
            done=0,
            errors=[],
            created_at=now,
            updated_at=now,
        )
        with self._write() as s:
            s.add(row)
            s.flush()
            return job_info(row)

    def update_job(
        self,
        job_id: str,
        *,
        status: str | None = None,
        done: int | None = None,
        total: int | None = None,
        add_errors: Sequence[Mapping[str, Any]] | None = None,
    ) -> JobInfo:
        """Set status/progress and append errors (``{"doc_id": ..., "reason": ...}``)."""
        if status is not None and status not in JOB_STATUSES:
            raise InvalidInput(f"job status must be one of {JOB_STATUSES}, got {status!r}")
        for name, value in (("done", done), ("total", total)):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise InvalidInput(f"{name} must be a non-negative integer, got {value!r}")
        errors = []
        for e in add_errors or []:
            if not isinstance(e, Mapping) or "reason" not in e:
                raise InvalidInput(
                    "each job error must be an object with a 'reason' (and usually a 'doc_id')"
                )
            errors.append(json.loads(check_json(dict(e), "job error")))
        with self._write() as s:
            row = s.get(JobRow, job_id, with_for_update=True)
            if row is None:
                raise NotFound(f"job {job_id!r} does not exist")
            if status is not None:
                row.status = status
            if done is not None:
                row.done = done
            if total is not None:
                row.total = total
            if errors:
                row.errors = list(row.errors or []) + errors
            row.updated_at = utcnow()
            s.flush()
            return job_info(row)

    def get_job(self, job_id: str) -> JobInfo:
        """Job ``job_id``; ``NotFound`` if there is none."""
        with self._read() as s:
            row = s.get(JobRow, job_id)
            if row is None:
                raise NotFound(f"job {job_id!r} does not exist")
            return job_info(row)

    def list_jobs(self, collection: str | None = None, *, limit: int = 50) -> list[JobInfo]:
        """Most recent jobs first, optionally of one collection."""
        q = select(JobRow).order_by(JobRow.created_at.desc(), JobRow.id).limit(limit)
        if collection is not None:
            q = q.where(JobRow.collection == collection)
        with self._read() as s:
            return [job_info(r) for r in s.scalars(q)]
