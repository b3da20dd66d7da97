"""Dependencies that hand the objects built in ``lifespan`` to the routes (tests override them with
``app.dependency_overrides``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from common.settings import Settings
from engine import Engine, JobRunner


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
