"""The FastAPI application: heavy objects are built once in ``lifespan`` and handed out by the
dependencies in ``api.deps`` so tests can override them."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.routes import health
from api.settings import Settings, get_settings
from attend import __version__

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.settings = settings
        app.state.ready = True
        logger.info("Attend %s ready", __version__)
        yield
        app.state.ready = False

    app = FastAPI(title="Attend", version=__version__, lifespan=lifespan)
    app.include_router(health.router)
    return app
