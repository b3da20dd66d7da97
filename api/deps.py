"""Dependencies that hand the objects built in ``lifespan`` to the routes (tests override them with
``app.dependency_overrides``), and ``build_engine``: the one way the server and the CLI make an
``Engine`` from ``Settings``, so both share a data directory."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from api.jobs import JobRunner
from common.settings import Settings
from engine.engine import Engine


def build_engine(settings: Settings) -> Engine:
    """An (unopened) engine over the store and data directory of ``settings``."""
    from index.store import Store

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return Engine(
        Store(settings.resolved_database_url),
        data_dir=settings.data_dir,
        encoder=settings.encoder,
        device=settings.device,
        encoder_precision=settings.encoder_precision,
        generator=settings.generator or None,
        generative=settings.generative,
        generator_quant=settings.generator_quant,
    )


@contextmanager
def engine_session(settings: Settings) -> Iterator[Engine]:
    """An engine for one CLI command: indexes load lazily per collection, are saved on exit."""
    engine = build_engine(settings)
    try:
        yield engine
    finally:
        engine.close()
        engine.store.close()


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_engine(request: Request) -> Engine:
    engine = getattr(request.app.state, "engine", None)
    if engine is None:
        raise HTTPException(503, "the service is starting or stopping")
    return engine


def get_jobs(request: Request) -> JobRunner:
    jobs = getattr(request.app.state, "jobs", None)
    if jobs is None:
        raise HTTPException(503, "the service is starting or stopping")
    return jobs


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
JobsDep = Annotated[JobRunner, Depends(get_jobs)]
