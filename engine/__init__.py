"""The engine: the one door from the front ends (CLI, API, benchmarks) into the core packages.

Front ends import from here only: the ``Engine``, how to build it from settings, its background
jobs, the JSON contract (``engine.schemas``) and the domain values its methods take and return
(``engine.types``), so a front end never reaches into ``index``, ``retriever`` or ``generator``.
"""

from __future__ import annotations

from engine.build import build_engine, engine_session
from engine.collections import validate_collection_settings
from engine.engine import Engine
from engine.ingest import DocumentOutcome, IngestReport
from engine.jobs import IndexSaver, JobRunner
from engine.types import extract_text

__all__ = [
    "DocumentOutcome", "Engine", "IndexSaver", "IngestReport", "JobRunner", "build_engine", "engine_session",
    "extract_text", "validate_collection_settings",
]
