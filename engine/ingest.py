"""Ingestion of a batch of documents: validate each, chunk by encoder tokens, embed what changed,
write documents + chunks + embeddings to the store in one transaction (acknowledged only then),
then update BM25 and FAISS.

Two steps, so the first can run elsewhere: :func:`prepare_documents` (chunk and embed; needs no
store) and :func:`write_batch` (the store transaction, then the indexes). :func:`ingest_batch` is
the two in one process; ``engine.distributed.ingest`` runs the first on Ray actors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.errors import InvalidInput
from engine.protocols import Encoder, Store
from index.chunking import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_TOKENS, Chunker, ChunkTokenizer
from index.collection import CollectionIndex, index_text
from index.records import ChunkLike, DocumentInput, PreparedChunks, printable_id


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


def chunker_for(tokenizer: ChunkTokenizer, settings: Mapping[str, Any]) -> Chunker:
    """The chunker a collection's settings ask for (``chunk_tokens``, ``chunk_overlap``)."""
    return Chunker(tokenizer, max_tokens=settings.get("chunk_tokens", DEFAULT_CHUNK_TOKENS),
                   overlap=settings.get("chunk_overlap", DEFAULT_CHUNK_OVERLAP))


def chunk_texts(title: str, chunks: Sequence[ChunkLike]) -> list[str]:
    """What BM25 and the encoder see of each chunk of a document: ``index_text(title, chunk)``."""
    return [index_text(title, c.text) for c in chunks]


def prepare_documents(docs: Sequence[DocumentInput], enc: Encoder, chunker: Chunker) -> dict[str, PreparedChunks]:
    """Chunk ``docs`` and embed their chunks in one encoder call: per document id, its chunks and
    ``(chunks, dim)`` float32 embeddings. Pure: needs no store, so it runs wherever the encoder
    is (this process, or a Ray actor in ``engine.distributed.ingest``)."""
    if not docs:
        return {}
    chunk_lists = chunker.chunk_batch([d.text for d in docs])
    flat = [t for d, cl in zip(docs, chunk_lists, strict=True) for t in chunk_texts(d.title, cl)]
    vecs = enc.encode(flat) if flat else np.zeros((0, enc.dim), np.float32)
    prepared: dict[str, PreparedChunks] = {}
    pos = 0
    for d, cl in zip(docs, chunk_lists, strict=True):
        prepared[d.external_id] = PreparedChunks(cl, vecs[pos : pos + len(cl)])
        pos += len(cl)
    return prepared


def write_batch(
    store: Store,
    collection: str,
    idx: CollectionIndex,
    batch: Sequence[tuple[int, DocumentInput]],
    prepared: Mapping[str, PreparedChunks],
    report: IngestReport,
) -> None:
    """Write the documents of ``batch`` in one store transaction (``prepared`` must hold every
    document whose content changed; entries of unchanged ones are ignored), then bring BM25 and
    FAISS up to date. Fills the batch's outcome slots. InvalidInput before anything is written when
    a prepared document lacks embeddings of the index's dimension."""
    for ext, p in prepared.items():
        if p.embeddings is None or np.shape(p.embeddings) != (len(p.chunks), idx.dim):
            raise InvalidInput(
                f"embeddings of document {printable_id(ext)!r} must have shape ({len(p.chunks)}, {idx.dim}), "
                f"got {None if p.embeddings is None else np.shape(p.embeddings)}"
            )
    docs = [d for _, d in batch]
    results = store.upsert_documents(collection, docs, prepared)
    add_ids: list[int] = []
    add_texts: list[str] = []
    add_vecs: list[np.ndarray] = []
    add_docs: list[str] = []
    removed: list[int] = []
    for (slot, d), r in zip(batch, results, strict=True):
        report.outcomes[slot] = DocumentOutcome(d.external_id, r.status, chunks=len(r.chunk_ids))
        removed.extend(r.removed_chunk_ids)
        if r.added_chunk_ids and d.external_id in prepared:
            p = prepared[d.external_id]
            add_ids.extend(r.added_chunk_ids)
            add_texts.extend(chunk_texts(d.title, p.chunks))
            add_vecs.append(np.asarray(p.embeddings))
            add_docs.extend([d.external_id] * len(r.added_chunk_ids))
    with idx.lock:
        idx.remove(np.asarray(removed, dtype=np.int64))
        if add_ids:
            idx.add(np.asarray(add_ids, dtype=np.int64), add_texts, np.concatenate(add_vecs).astype(np.float32),
                    doc_ids=add_docs)


def ingest_batch(
    store: Store,
    collection: str,
    idx: CollectionIndex,
    enc: Encoder,
    chunker: Chunker,
    batch: Sequence[tuple[int, DocumentInput]],
    report: IngestReport,
    prepared: Mapping[str, PreparedChunks] | None = None,
) -> None:
    """Chunk and embed the documents of ``batch`` whose content changed (``store.changed_documents``)
    and that ``prepared`` does not already cover, then :func:`write_batch`. Fills the batch's
    outcome slots."""
    docs = [d for _, d in batch]
    given = dict(prepared or {})
    changed = store.changed_documents(collection, docs)
    given.update(prepare_documents([d for d in changed if d.external_id not in given], enc, chunker))
    write_batch(store, collection, idx, batch, given, report)
