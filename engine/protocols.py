"""What the engine needs of the parts it drives, as Protocols: an encoder, an answerer, a store.

The engine is typed against these rather than the concrete classes, so a test (or another
implementation, such as a remote encoder) can stand in for any of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from index.records import (
    CollectionInfo,
    CollectionStats,
    DocumentInput,
    DocumentRecord,
    DocumentResult,
    JobInfo,
    PreparedChunks,
)


class Encoder(Protocol):
    """A sentence encoder: unit vectors of ``dim`` floats, and the tokenizer that chunks."""

    dim: int
    tokenizer: Any

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class AnswerStream(Protocol):
    """An answer being generated: iterate for text pieces, or ``collect()`` the result."""

    result: Any

    def __iter__(self) -> Iterator[str]: ...

    def collect(self) -> Any: ...

    def close(self) -> None: ...

    def on_finish(self, callback: Callable[[Any], None]) -> AnswerStream: ...


class Answerer(Protocol):
    """A generator that answers from retrieved chunks: extractive or generative."""

    kind: str
    max_context: int
    answer_reserve: int

    def start(self, question: str, candidates: Sequence[Any], **kwargs: Any) -> AnswerStream: ...


class Store(Protocol):
    """The durable store of collections, documents, chunks, embeddings and jobs."""

    def close(self) -> None: ...

    def create_collection(self, name: str, settings: Mapping[str, Any]) -> CollectionInfo: ...

    def get_collection(self, name: str) -> CollectionInfo: ...

    def list_collections(self) -> list[CollectionInfo]: ...

    def delete_collection(self, name: str) -> None: ...

    def collection_stats(self, name: str) -> CollectionStats: ...

    def changed_documents(self, collection: str, docs: Sequence[DocumentInput]) -> list[DocumentInput]: ...

    def upsert_documents(
        self, collection: str, docs: Sequence[DocumentInput], prepared: Mapping[str, PreparedChunks]
    ) -> list[DocumentResult]: ...

    def delete_document(self, collection: str, doc_id: str) -> list[int]: ...

    def get_document(self, collection: str, doc_id: str) -> DocumentRecord: ...

    def list_documents(self, collection: str, *, offset: int = 0, limit: int = 100) -> list[DocumentRecord]: ...

    def create_job(self, collection: str, total: int) -> JobInfo: ...

    def get_job(self, job_id: str) -> JobInfo: ...

    def list_jobs(self, collection: str | None = None, *, limit: int = 20) -> list[JobInfo]: ...

    def update_job(self, job_id: str, **changes: Any) -> JobInfo: ...
