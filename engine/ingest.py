"""Ingestion of a batch of documents: validate each, chunk by encoder tokens, embed what changed,
write documents + chunks + embeddings to the store in one transaction (acknowledged only then),
then update BM25 and FAISS."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.errors import InvalidInput
from engine.protocols import Encoder, Store
from index.chunking import Chunker
from index.collection import CollectionIndex, index_text
from index.records import DocumentInput, PreparedChunks, printable_id


@dataclass
class DocumentOutcome:
    """What happened to one submitted document: ``inserted``, ``updated``, ``unchanged`` or
    ``failed`` (with ``error``)."""

    doc_id: str
    status: str
    chunks: int = 0
    error: str | None = None


@dataclass
class IngestReport:
    outcomes: list[DocumentOutcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[DocumentOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.outcomes:
            out[o.status] = out.get(o.status, 0) + 1
        return out


def parse_documents(
    docs: Sequence[Mapping[str, Any] | DocumentInput], report: IngestReport
) -> list[tuple[int, DocumentInput]]:
    """Validate ``docs`` one by one (``DocumentInput.parse``, the one check a document gets),
    appending an outcome per document to ``report``: ``pending`` for valid ones, ``failed`` with
    the reason otherwise. Returns the valid ones with their outcome slot. A later copy of an id in
    the same batch wins, as in a sequence of upserts."""
    valid: list[tuple[int, DocumentInput]] = []
    seen: dict[str, int] = {}
    for d in docs:
        try:
            doc = DocumentInput.parse(d)
        except (InvalidInput, TypeError, ValueError) as exc:
            doc_id = printable_id(d.get("id", "?")) if isinstance(d, Mapping) else "?"
            report.outcomes.append(DocumentOutcome(doc_id, "failed", error=str(exc)))
            continue
        if doc.external_id in seen:
            report.outcomes[seen[doc.external_id]] = DocumentOutcome(
                doc.external_id, "failed", error="superseded by a later copy in the same batch"
            )
            valid = [(i, v) for i, v in valid if v.external_id != doc.external_id]
        seen[doc.external_id] = len(report.outcomes)
        valid.append((len(report.outcomes), doc))
        report.outcomes.append(DocumentOutcome(doc.external_id, "pending"))
    return valid


def ingest_batch(
    store: Store,
    collection: str,
    idx: CollectionIndex,
    enc: Encoder,
    chunker: Chunker,
    batch: Sequence[tuple[int, DocumentInput]],
    report: IngestReport,
) -> None:
    """Chunk and embed the documents of ``batch`` whose content changed, write the batch in one
    store transaction, then bring BM25 and FAISS up to date. Fills the batch's outcome slots."""
    docs = [d for _, d in batch]
    changed = store.changed_documents(collection, docs)
    prepared: dict[str, PreparedChunks] = {}
    texts: dict[str, list[str]] = {}  # what BM25 and the encoder see of each chunk (title + text)
    if changed:
        chunk_lists = chunker.chunk_batch([d.text for d in changed])
        for d, cl in zip(changed, chunk_lists, strict=True):
            texts[d.external_id] = [index_text(d.title, c.text) for c in cl]
        flat = [t for d in changed for t in texts[d.external_id]]
        vecs = enc.encode(flat) if flat else np.zeros((0, enc.dim), np.float32)
        pos = 0
        for d, cl in zip(changed, chunk_lists, strict=True):
            prepared[d.external_id] = PreparedChunks(cl, vecs[pos : pos + len(cl)])
            pos += len(cl)
    results = store.upsert_documents(collection, docs, prepared)
    add_ids: list[int] = []
    add_texts: list[str] = []
    add_vecs: list[np.ndarray] = []
    removed: list[int] = []
    for (slot, d), r in zip(batch, results, strict=True):
        report.outcomes[slot] = DocumentOutcome(d.external_id, r.status, chunks=len(r.chunk_ids))
        removed.extend(r.removed_chunk_ids)
        if r.added_chunk_ids and d.external_id in prepared:
            add_ids.extend(r.added_chunk_ids)
            add_texts.extend(texts[d.external_id])
            add_vecs.append(prepared[d.external_id].embeddings)
    with idx.lock:
        idx.remove(np.asarray(removed, dtype=np.int64))
        if add_ids:
            idx.add(np.asarray(add_ids, dtype=np.int64), add_texts, np.concatenate(add_vecs).astype(np.float32))
