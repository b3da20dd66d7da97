"""Background ingestion jobs and the debounced saving of index files.

A large batch is recorded as a job in the store (``Engine.create_job``), then ingested by one worker
thread in slices of ``batch_size`` documents, each slice one store transaction: the job's progress
(``done``) and per-document failures are written after every slice, so ``GET /v1/jobs/{id}`` shows
them while it runs. Jobs left ``queued``/``running`` by a process that died are marked ``failed`` at
the next start (their committed slices are in the store and searchable after the reconcile). A job
submitted with ``RayOptions`` is chunked and embedded on Ray (``engine.distributed.ingest``) and
written here, its progress recorded after each store transaction.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from common.errors import NotFound
from engine.distributed.cluster import import_ray
from engine.distributed.ingest import RayOptions, ingest_on_ray
from engine.engine import Engine
from engine.ingest import IngestReport
from index.records import JobInfo

logger = logging.getLogger(__name__)

INTERRUPTED = "interrupted: the server stopped before the job finished"


class _Interrupted(Exception):
    """Raised from a Ray job's progress callback to stop it after a store transaction."""


class IndexSaver:
    """Saves a collection's index files ``delay_s`` after its last ingestion (debounced), so a
    restart has little to reconcile; the store stays the source of truth either way."""

    def __init__(self, engine: Engine, delay_s: float) -> None:
        self.engine = engine
        self.delay_s = delay_s
        self._timers: dict[str, threading.Timer] = {}
        self._lock = threading.Lock()
        self._closed = False

    def touch(self, collection: str) -> None:
        """Note that ``collection`` changed; save it once it has been quiet for ``delay_s``."""
        with self._lock:
            if self._closed:
                return
            old = self._timers.pop(collection, None)
            if old is not None:
                old.cancel()
            timer = threading.Timer(self.delay_s, self._save, args=(collection,))
            timer.daemon = True
            self._timers[collection] = timer
            timer.start()

    def _save(self, collection: str) -> None:
        with self._lock:
            self._timers.pop(collection, None)
        try:
            if collection in {c.name for c in self.engine.list_collections()}:
                self.engine.save(collection)
                logger.info("saved the indexes of %s", collection)
        except KeyError:
            pass  # deleted meanwhile
        except Exception:
            logger.exception("could not save the indexes of %s", collection)

    def close(self) -> None:
        """Cancel pending saves (``Engine.close`` saves everything at shutdown)."""
        with self._lock:
            self._closed = True
            for t in self._timers.values():
                t.cancel()
            self._timers.clear()


class JobRunner:
    """Runs ingestion jobs one at a time on a worker thread."""

    def __init__(self, engine: Engine, *, batch_size: int = 64, saver: IndexSaver | None = None) -> None:
        self.engine = engine
        self.batch_size = batch_size
        self.saver = saver
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="attend-ingest")
        self._futures: dict[str, Future[None]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def recover(self) -> int:
        """Mark jobs a previous process left unfinished as failed; returns how many."""
        n = 0
        for job in self.engine.list_jobs(limit=10_000):
            if not job.finished:
                self.engine.update_job(job.id, status="failed", add_errors=[{"doc_id": None, "reason": INTERRUPTED}])
                n += 1
        if n:
            logger.warning("marked %d unfinished jobs from a previous run as failed", n)
        return n

    def submit(self, collection: str, docs: Sequence[Mapping[str, Any]], *, ray: RayOptions | None = None) -> JobInfo:
        """Record a queued job for ``docs`` and start it in the background; with ``ray``, on a Ray
        cluster (InvalidInput now, before any job is recorded, when Ray is not installed)."""
        if ray is not None:
            import_ray()
        job = self.engine.create_job(collection, total=len(docs))
        fut = self._pool.submit(self._run, job.id, collection, list(docs), ray)
        with self._lock:
            self._futures[job.id] = fut
        fut.add_done_callback(lambda _f, jid=job.id: self._forget(jid))
        return job

    def _forget(self, job_id: str) -> None:
        with self._lock:
            self._futures.pop(job_id, None)

    def _run(self, job_id: str, collection: str, docs: list[Mapping[str, Any]], ray: RayOptions | None = None) -> None:
        done = 0

        def progress(n: int) -> None:  # a Ray job's, after each store transaction
            nonlocal done
            done += n
            self.engine.update_job(job_id, done=done)
            if self._stop.is_set():
                raise _Interrupted

        try:
            self.engine.update_job(job_id, status="running")
            if ray is not None:
                on_ray = ingest_on_ray(self.engine, collection, docs, ray, progress=progress)
                errors = [{"doc_id": o.doc_id, "reason": o.error or "failed"} for o in on_ray.failed]
                self.engine.update_job(job_id, status="done", done=len(docs), add_errors=errors)
                return
            for start in range(0, len(docs), self.batch_size):
                if self._stop.is_set():
                    self.engine.update_job(job_id, status="failed", add_errors=[{"doc_id": None, "reason": INTERRUPTED}])
                    return
                part = docs[start : start + self.batch_size]
                report: IngestReport = self.engine.upsert_documents(collection, part, batch_size=self.batch_size)
                done += len(part)
                errors = [{"doc_id": o.doc_id, "reason": o.error or "failed"} for o in report.failed]
                self.engine.update_job(job_id, done=done, add_errors=errors)
            self.engine.update_job(job_id, status="done")
        except _Interrupted:
            self.engine.update_job(job_id, status="failed", add_errors=[{"doc_id": None, "reason": INTERRUPTED}])
        except Exception as exc:  # the job fails, the server goes on
            if isinstance(exc, NotFound):  # e.g. the collection was deleted while the job ran: expected, no traceback
                logger.warning("ingestion job %s failed: %s", job_id, exc)
            else:
                logger.exception("ingestion job %s failed", job_id)
            reason = str(exc) if isinstance(exc, (NotFound, ValueError)) else f"{type(exc).__name__}: {exc}"
            try:
                self.engine.update_job(job_id, status="failed", done=done, add_errors=[{"doc_id": None, "reason": reason}])
            except Exception:
                logger.exception("could not record the failure of job %s", job_id)
        finally:
            if self.saver is not None:
                self.saver.touch(collection)

    def wait(self, timeout: float | None = None) -> None:
        """Block until every submitted job has finished (tests, shutdown)."""
        with self._lock:
            futures = list(self._futures.values())
        for f in futures:
            f.result(timeout=timeout)

    def close(self) -> None:
        """Stop: the running job ends after its current slice (what was committed stays), queued
        ones are dropped; both are marked failed (now or at the next start)."""
        self._stop.set()
        with self._lock:
            pending = dict(self._futures)
        self._pool.shutdown(wait=True, cancel_futures=True)
        for job_id, fut in pending.items():
            if fut.cancelled():
                try:
                    self.engine.update_job(job_id, status="failed", add_errors=[{"doc_id": None, "reason": INTERRUPTED}])
                except Exception:
                    logger.exception("could not record the interruption of job %s", job_id)
