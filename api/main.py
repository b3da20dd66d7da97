"""The FastAPI application: heavy objects are built once in ``lifespan`` and handed out by the
dependencies in ``api.deps`` so tests can override them.

At start the engine opens (every collection's BM25 and FAISS indexes are loaded and reconciled
with the store, so whatever was acknowledged before a crash is searchable), jobs a dead process
left unfinished are marked failed, and the job runner starts. At shutdown the runner stops after
its current slice and the engine saves its indexes.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from api.errors import BodySizeLimit, install_error_handlers
from api.metrics import Metrics, MetricsMiddleware
from api.routes import answer, collections, diagnose, documents, health, jobs, metrics, search
from common import __version__
from common.settings import Settings, get_settings
from engine import Engine, IndexSaver, JobRunner, build_engine

logger = logging.getLogger(__name__)

API_DESCRIPTION = """Grounded answers over your documents, on our own transformer models.

Authenticate with `Authorization: Bearer <key>` or `X-API-Key: <key>` when the server requires
keys (any configured, or listening beyond loopback). Errors are JSON: `{"detail": "..."}`.
"""


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """The app for ``settings``. ``engine``: use this engine instead of building one from the
    settings (it is still opened at start and closed at shutdown)."""
    settings = settings or get_settings()
    app_metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.settings = settings
        app.state.ready = False
        if settings.torch_threads:
            import torch

            torch.set_num_threads(settings.torch_threads)
        eng = engine if engine is not None else build_engine(settings)
        await run_in_threadpool(eng.open)
        saver = IndexSaver(eng, settings.index_save_delay_s)
        runner = JobRunner(eng, batch_size=settings.ingest_batch_size, saver=saver)
        await run_in_threadpool(runner.recover)
        app.state.engine, app.state.jobs = eng, runner
        if settings.auth_required and not settings.api_keys:
            logger.warning("listening on %s without API keys: every request but health checks gets 401", settings.host)
        app.state.ready = True
        logger.info("Attend %s ready (%d collections)", __version__, len(eng.list_collections()))
        try:
            yield
        finally:
            app.state.ready = False
            await run_in_threadpool(runner.close)
            saver.close()
            # An engine built here is closed (indexes saved, store closed); one handed in belongs
            # to the caller, who closes it: here its indexes are only saved.
            await run_in_threadpool(eng.close if engine is None else eng.save)
            app.state.engine = app.state.jobs = None

    app = FastAPI(title="Attend", version=__version__, description=API_DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = app_metrics
    app_metrics.watch_engine(lambda: getattr(app.state, "engine", None))
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app_metrics)  # outermost: sees 413s too
    for module in (health, collections, documents, search, answer, diagnose, jobs, metrics):
        app.include_router(module.router)
    return app
