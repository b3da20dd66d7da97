"""The engine: the one door from the front ends (CLI, API, benchmarks) into the core packages.

Front ends import from here only: the ``Engine``, how to build it from settings, its background
jobs, and the domain values its methods take and return (so a front end never reaches into
``index``, ``retriever`` or ``generator`` itself).
"""

from __future__ import annotations

from engine.build import build_engine, engine_session
from engine.collections import validate_collection_settings
from engine.engine import Engine
from engine.ingest import DocumentOutcome, IngestReport
from engine.jobs import IndexSaver, JobRunner
from engine.types import (
    ABSTAIN_MESSAGE,
    BM25_K1_MAX,
    BM25_VARIANTS,
    DENSE_KINDS,
    MAX_DEPTH,
    MAX_DOCUMENT_CHARS,
    MAX_EXTERNAL_ID,
    MAX_K,
    AnswerResult,
    CollectionInfo,
    DocumentRecord,
    ExtractedText,
    Hit,
    JobInfo,
    SearchResult,
    SearchSettings,
    extract_text,
)

__all__ = [
    "ABSTAIN_MESSAGE", "BM25_K1_MAX", "BM25_VARIANTS", "DENSE_KINDS", "MAX_DEPTH", "MAX_DOCUMENT_CHARS",
    "MAX_EXTERNAL_ID", "MAX_K", "AnswerResult", "CollectionInfo", "DocumentOutcome", "DocumentRecord", "Engine",
    "ExtractedText", "Hit", "IndexSaver", "IngestReport", "JobInfo", "JobRunner", "SearchResult", "SearchSettings",
    "build_engine", "engine_session", "extract_text", "validate_collection_settings",
]
