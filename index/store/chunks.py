"""Chunks in the store: read by id (hydrated with their document), iterate a collection's chunks
to rebuild the search indexes, and store embeddings."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import bindparam, select, update

from common.errors import InvalidInput, NotFound
from index.records import (
    ChunkRecord,
    StoredChunk,
    decode_embedding,
    embedding_matrix,
    encode_embedding,
)
from index.rows import ChunkRow, CollectionRow, DocumentRow
from index.store.database import Database, batches


class Chunks(Database):
    """The chunk operations of :class:`~index.store.Store`."""

    def get_chunks(self, ids: Iterable[int]) -> list[ChunkRecord]:
        """Chunks by id, in the order given, with their document's id, title and metadata.
        Ids that no longer exist (a stale index entry) are left out."""
        ids = [int(i) for i in ids]
        found: dict[int, ChunkRecord] = {}
        q = (
            select(
                ChunkRow,
                DocumentRow.external_id,
                DocumentRow.title,
                DocumentRow.meta,
                CollectionRow.name,
            )
            .join(DocumentRow, DocumentRow.id == ChunkRow.document_id)
            .join(CollectionRow, CollectionRow.id == ChunkRow.collection_id)
        )
        with self._read() as s:
            for batch in batches(sorted(set(ids))):
                for c, ext, title, meta, coll in s.execute(q.where(ChunkRow.id.in_(batch))):
                    found[c.id] = ChunkRecord(
                        c.id,
                        coll,
                        c.document_id,
                        ext,
                        title,
                        dict(meta or {}),
                        c.ordinal,
                        c.text,
                        c.char_start,
                        c.char_end,
                        c.token_count,
                    )
        return [found[i] for i in ids if i in found]

    def iter_chunks(
        self, collection: str, batch_size: int = 1000, *, with_embeddings: bool = True
    ) -> Iterator[StoredChunk]:
        """Every chunk of a collection in id order as ``StoredChunk(id, text, embedding or None, title,
        doc_id)``,
        read in batches of ``batch_size`` (each its own short read, so writers are never held up)."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInput(f"batch_size must be a positive integer, got {batch_size!r}")
        with self._read() as s:
            cid = self._collection_id(s, collection)
        return self._iter_chunks(cid, batch_size, with_embeddings)

    def _iter_chunks(
        self, cid: int, batch_size: int, with_embeddings: bool
    ) -> Iterator[StoredChunk]:
        """The generator behind :meth:`iter_chunks`, from collection id ``cid``."""
        cols = [ChunkRow.id, ChunkRow.text, DocumentRow.title, DocumentRow.external_id]
        cols += [ChunkRow.embedding] if with_embeddings else []
        last = -1
        while True:
            with self._read() as s:
                rows = s.execute(
                    select(*cols)
                    .join(DocumentRow, DocumentRow.id == ChunkRow.document_id)
                    .where(ChunkRow.collection_id == cid, ChunkRow.id > last)
                    .order_by(ChunkRow.id)
                    .limit(batch_size)
                ).all()
            for r in rows:
                yield StoredChunk(r[0], r[1], decode_embedding(r[4]) if with_embeddings else None, r[2] or "", r[3])
            if len(rows) < batch_size:
                return
            last = rows[-1][0]

    def set_embeddings(self, chunk_ids: Sequence[int], matrix: Any) -> None:
        """Store one float32 embedding per chunk (row ``i`` of ``matrix`` for ``chunk_ids[i]``).
        ``NotFound`` (and nothing written) if any id does not exist."""
        ids = [int(i) for i in chunk_ids]
        arr = embedding_matrix(matrix, len(ids), "embeddings")
        if len(set(ids)) != len(ids):
            raise InvalidInput("chunk ids must be distinct")
        if not ids:
            return
        stmt = (
            update(ChunkRow.__table__)
            .where(ChunkRow.__table__.c.id == bindparam("cid"))
            .values(embedding=bindparam("emb"))
        )
        with self._write() as s:
            present: set[int] = set()
            for batch in batches(ids):
                present.update(s.scalars(select(ChunkRow.id).where(ChunkRow.id.in_(batch))))
            missing = [i for i in ids if i not in present]
            if missing:
                raise NotFound(f"{len(missing)} chunk ids do not exist, e.g. {missing[:5]}")
            s.execute(
                stmt, [{"cid": i, "emb": encode_embedding(arr[k])} for k, i in enumerate(ids)]
            )
