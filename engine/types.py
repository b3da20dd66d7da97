"""The vocabulary of the engine's door: the domain values its methods take and return, and the
limits a front end states in its own schema. Defined in the core packages; gathered here so a
front end depends on the engine alone."""

from __future__ import annotations

from generator.answer import ABSTAIN_MESSAGE, AnswerResult
from index.collection import BM25_K1_MAX, BM25_VARIANTS, DENSE_KINDS
from index.extract import SUPPORTED as SUPPORTED_FILES
from index.extract import ExtractedText, extract_text
from index.records import (
    MAX_DOCUMENT_CHARS,
    MAX_EXTERNAL_ID,
    CollectionInfo,
    DocumentRecord,
    JobInfo,
)
from retriever.hybrid import MAX_DEPTH, MAX_K, Hit, SearchResult, SearchSettings
from retriever.rerank import (
    DEFAULT_RERANK_DEPTH,
    DEFAULT_RERANK_WEIGHT,
    MAX_RERANK_DEPTH,
    RerankSettings,
)

__all__ = [
    "ABSTAIN_MESSAGE", "BM25_K1_MAX", "BM25_VARIANTS", "DEFAULT_RERANK_DEPTH", "DEFAULT_RERANK_WEIGHT", "DENSE_KINDS", "MAX_DEPTH",
    "MAX_DOCUMENT_CHARS", "MAX_EXTERNAL_ID", "MAX_K", "MAX_RERANK_DEPTH", "SUPPORTED_FILES", "AnswerResult",
    "CollectionInfo", "DocumentRecord", "ExtractedText", "Hit", "JobInfo", "RerankSettings", "SearchResult",
    "SearchSettings", "extract_text",
]
