"""Documents in the store: upsert by external id (with their chunks and optional embeddings, in
one transaction per batch), read back, and delete.

A document's chunks are replaced only when its title or text changes (by sha256); a change of
metadata alone keeps them. Bad input raises ``InvalidInput`` before anything is written.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from common.errors import DocumentNotFound, InvalidInput
from index.records import (
    DocumentInput,
    DocumentRecord,
    DocumentResult,
    PreparedChunks,
    UpsertStatus,
    check_json,
)
from index.rows import ChunkRow, DocumentRow, as_utc, utcnow
from index.store.database import Database, batches

logger = logging.getLogger(__name__)

ChunksFor = Callable[[DocumentInput], Any] | Mapping[str, Any]
"""Per document: a ``PreparedChunks`` or a sequence of chunk-like objects (``index.records.ChunkLike``)."""


def document_record(collection: str, row: DocumentRow, chunk_ids: list[int]) -> DocumentRecord:
    """The frozen value of a document row with its chunk ids."""
    return DocumentRecord(
        row.id,
        collection,
        row.external_id,
        row.title,
        row.text,
        dict(row.meta or {}),
        row.content_hash,
        as_utc(row.created_at),
        as_utc(row.updated_at),
        chunk_ids,
    )


class Documents(Database):
    """The document operations of :class:`~index.store.Store`."""

    def _prepare(self, doc: DocumentInput, chunks_for: ChunksFor) -> list[dict[str, Any]]:
        """Validated chunk rows (without ids) for one document."""
        if isinstance(chunks_for, Mapping):
            if doc.external_id not in chunks_for:
                raise InvalidInput(f"no chunks given for document {doc.external_id!r}")
            out = chunks_for[doc.external_id]
        elif callable(chunks_for):
            out = chunks_for(doc)
        else:
            raise InvalidInput(
                "chunks_for must be a callable or a mapping of document id to chunks"
            )
        return (out if isinstance(out, PreparedChunks) else PreparedChunks(list(out))).rows(doc)

    def _chunk_ids_by_doc(self, s: Session, doc_ids: Sequence[int]) -> dict[int, list[int]]:
        """Document id -> its chunk ids in order, for each of ``doc_ids``."""
        out: dict[int, list[int]] = {d: [] for d in doc_ids}
        for batch in batches(list(doc_ids)):
            q = select(ChunkRow.document_id, ChunkRow.id).where(ChunkRow.document_id.in_(batch))
            for doc_id, chunk_id in s.execute(q.order_by(ChunkRow.document_id, ChunkRow.ordinal)):
                out[doc_id].append(chunk_id)
        return out

    def _existing(
        self, s: Session, cid: int, external_ids: Sequence[str]
    ) -> dict[str, tuple[int, str, str]]:
        """external id -> (document id, content hash, canonical metadata JSON)."""
        out = {}
        for batch in batches(list(external_ids)):
            q = select(
                DocumentRow.external_id, DocumentRow.id, DocumentRow.content_hash, DocumentRow.meta
            )
            for ext, doc_id, h, meta in s.execute(
                q.where(DocumentRow.collection_id == cid, DocumentRow.external_id.in_(batch))
            ):
                out[ext] = (doc_id, h, check_json(meta or {}, "metadata"))
        return out

    def changed_documents(
        self, collection: str, docs: Sequence[DocumentInput]
    ) -> list[DocumentInput]:
        """The documents whose title or text differ from what is stored (or that are new): those an
        upsert would re-chunk. Lets a caller batch-encode only what changed."""
        with self._read() as s:
            existing = self._existing(
                s, self._collection_id(s, collection), [d.external_id for d in docs]
            )
        return [d for d in docs if existing.get(d.external_id, (0, None))[1] != d.content_hash]

    def upsert_documents(
        self, collection: str, docs: Sequence[DocumentInput], chunks_for: ChunksFor
    ) -> list[DocumentResult]:
        """Insert or replace documents by external id, in one transaction for the whole batch.

        ``chunks_for`` gives the chunks (and optionally embeddings) of a document: a callable
        ``doc -> PreparedChunks | Sequence[ChunkLike]``, or a mapping from external id to the same.
        It is consulted only for documents whose title or text changed (by sha256), before the
        write transaction opens. A re-added document replaces the old one: its old chunks are
        deleted and new chunk ids returned; the same content with new metadata updates the metadata
        and keeps the chunks; identical content and metadata is a no-op. If anything raises, none
        of the batch is stored. Results are in input order.
        """
        docs = list(docs)
        for d in docs:
            if not isinstance(d, DocumentInput):
                raise InvalidInput(f"expected DocumentInput, got {type(d).__name__}")
        ext_ids = [d.external_id for d in docs]
        if len(set(ext_ids)) != len(ext_ids):
            dup = next(e for e in ext_ids if ext_ids.count(e) > 1)
            raise InvalidInput(f"document id {dup!r} appears more than once in the batch")
        # Chunk (and maybe encode) outside the write lock; only changed documents.
        prepared = {
            d.external_id: self._prepare(d, chunks_for)
            for d in self.changed_documents(collection, docs)
        }
        with self._write() as s:
            results = self._upsert(s, collection, docs, prepared, chunks_for)
        counts = {
            st: sum(r.status == st for r in results) for st in ("inserted", "updated", "unchanged")
        }
        logger.info("upserted %d documents into %s: %s", len(docs), collection, counts)
        return results

    def _upsert(
        self,
        s: Session,
        collection: str,
        docs: list[DocumentInput],
        prepared: dict[str, list[dict[str, Any]]],
        chunks_for: ChunksFor,
    ) -> list[DocumentResult]:
        """The upsert itself, inside the write transaction ``s``: ``prepared`` holds the chunk
        rows made before it opened; a document changed since then is chunked here."""
        cid = self._lock_collection(s, collection)
        existing = self._existing(s, cid, [d.external_id for d in docs])
        old_chunks = self._chunk_ids_by_doc(s, [e[0] for e in existing.values()])
        now = utcnow()
        plan: list[tuple[DocumentInput, str, int | None]] = []  # (doc, action, stored doc id)
        for d in docs:
            old = existing.get(d.external_id)
            if old is None:
                action = "insert"
            elif old[1] != d.content_hash:
                action = "replace"
            else:
                action = "keep" if old[2] == d.metadata_json else "metadata"
            if action in ("insert", "replace") and d.external_id not in prepared:
                prepared[d.external_id] = self._prepare(d, chunks_for)  # changed since planning
            plan.append((d, action, None if old is None else old[0]))

        def values(d: DocumentInput) -> dict[str, Any]:
            """The ``documents`` columns that an insert or a replace writes."""
            return {
                "title": d.title,
                "text": d.text,
                "meta": json.loads(d.metadata_json),
                "content_hash": d.content_hash,
                "updated_at": now,
            }

        inserts = [d for d, action, _ in plan if action == "insert"]
        doc_ids = {d.external_id: i for d, _, i in plan if i is not None}
        if inserts:
            rows = [
                {**values(d), "collection_id": cid, "external_id": d.external_id, "created_at": now}
                for d in inserts
            ]
            stmt = insert(DocumentRow).returning(DocumentRow.id, sort_by_parameter_order=True)
            ids = s.scalars(stmt, rows).all()
            doc_ids.update(zip([d.external_id for d in inserts], ids, strict=True))
        replaced = [(d, i) for d, action, i in plan if action == "replace"]
        for batch in batches([i for _, i in replaced]):
            s.execute(delete(ChunkRow).where(ChunkRow.document_id.in_(batch)))
        if replaced:
            s.execute(update(DocumentRow), [{"id": i, **values(d)} for d, i in replaced])
        meta_only = [
            {"id": i, "meta": json.loads(d.metadata_json), "updated_at": now}
            for d, a, i in plan
            if a == "metadata"
        ]
        if meta_only:
            s.execute(update(DocumentRow), meta_only)

        rechunk = [d.external_id for d, action, _ in plan if action in ("insert", "replace")]
        chunk_rows = [
            {**row, "document_id": doc_ids[ext], "collection_id": cid}
            for ext in rechunk
            for row in prepared[ext]
        ]
        owners = [ext for ext in rechunk for _ in prepared[ext]]
        new_chunks: dict[str, list[int]] = {ext: [] for ext in rechunk}
        for ext, chunk_id in zip(owners, self._insert_chunks(s, chunk_rows), strict=True):
            new_chunks[ext].append(chunk_id)

        results = []
        for d, action, _ in plan:
            did = doc_ids[d.external_id]
            status: UpsertStatus
            if action in ("insert", "replace"):
                status = "inserted" if action == "insert" else "updated"
                results.append(
                    DocumentResult(
                        d.external_id,
                        did,
                        status,
                        new_chunks[d.external_id],
                        old_chunks.get(did, []),
                        True,
                    )
                )
            else:
                status = "updated" if action == "metadata" else "unchanged"
                results.append(
                    DocumentResult(d.external_id, did, status, old_chunks.get(did, []), [], False)
                )
        return results

    def _insert_chunks(self, s: Session, rows: list[dict[str, Any]]) -> list[int]:
        """Insert chunk rows; their new ids in the same order."""
        if not rows:
            return []
        return list(
            s.scalars(
                insert(ChunkRow).returning(ChunkRow.id, sort_by_parameter_order=True), rows
            ).all()
        )

    def get_document(self, collection: str, external_id: str) -> DocumentRecord:
        """A stored document with its chunk ids in order; ``DocumentNotFound`` if absent."""
        with self._read() as s:
            cid = self._collection_id(s, collection)
            row = s.scalars(
                select(DocumentRow).where(
                    DocumentRow.collection_id == cid, DocumentRow.external_id == external_id
                )
            ).one_or_none()
            if row is None:
                raise DocumentNotFound(collection, external_id)
            chunk_ids = self._chunk_ids_by_doc(s, [row.id])[row.id]
            return document_record(collection, row, chunk_ids)

    def list_documents(
        self, collection: str, *, offset: int = 0, limit: int = 100
    ) -> list[DocumentRecord]:
        """Documents in insertion order, paged."""
        if offset < 0 or not 1 <= limit <= 10_000:
            raise InvalidInput("offset must be >= 0 and limit between 1 and 10000")
        with self._read() as s:
            cid = self._collection_id(s, collection)
            rows = s.scalars(
                select(DocumentRow)
                .where(DocumentRow.collection_id == cid)
                .order_by(DocumentRow.id)
                .offset(offset)
                .limit(limit)
            ).all()
            chunks = self._chunk_ids_by_doc(s, [r.id for r in rows])
            return [document_record(collection, r, chunks[r.id]) for r in rows]

    def delete_document(self, collection: str, external_id: str) -> list[int]:
        """Delete a document and its chunks; returns the removed chunk ids."""
        with self._write() as s:
            cid = self._lock_collection(s, collection)
            doc_id = s.scalar(
                select(DocumentRow.id).where(
                    DocumentRow.collection_id == cid, DocumentRow.external_id == external_id
                )
            )
            if doc_id is None:
                raise DocumentNotFound(collection, external_id)
            removed = self._chunk_ids_by_doc(s, [doc_id])[doc_id]
            s.execute(delete(ChunkRow).where(ChunkRow.document_id == doc_id))
            s.execute(delete(DocumentRow).where(DocumentRow.id == doc_id))
        return removed
