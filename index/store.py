"""The document store: the source of truth for collections, documents, chunks and ingestion jobs.

SQLite by default (a file: WAL journal, foreign keys on, a busy timeout, and one writer at a time
per process behind a lock, each write transaction opened with ``BEGIN IMMEDIATE``), or PostgreSQL
through a ``postgresql+psycopg://`` URL (writes to one collection serialised by a transaction-scoped
advisory lock). The BM25 and FAISS indexes hold only chunk ids and are rebuilt from here; chunk
embeddings are kept so a dense rebuild need not re-encode.

Everything the store returns is a plain frozen value from ``index.models``; no ORM row or session
escapes. Bad input raises ``InvalidInput`` before anything is written, and every write runs in one
transaction, so a failure leaves what was stored before untouched.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, create_engine, delete, event, func, insert, select, text, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError, NoSuchModuleError
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from common.errors import (
    AlreadyExists,
    CollectionNotFound,
    DocumentNotFound,
    InvalidInput,
    MissingDependency,
    NotFound,
)
from index.models import (
    JOB_STATUSES,
    Base,
    ChunkRecord,
    ChunkRow,
    CollectionInfo,
    CollectionRow,
    CollectionStats,
    DocumentInput,
    DocumentRecord,
    DocumentResult,
    DocumentRow,
    JobInfo,
    JobRow,
    PreparedChunks,
    StoredChunk,
    as_utc,
    check_collection_name,
    check_json,
    compile_filters,
    decode_embedding,
    embedding_matrix,
    encode_embedding,
    matches,
    utcnow,
)

logger = logging.getLogger(__name__)

ChunksFor = Callable[[DocumentInput], Any] | Mapping[str, Any]
"""Per document: a ``PreparedChunks`` or a sequence of chunk-like objects (``index.models.ChunkLike``)."""

_IN_BATCH = 500  # ids per IN (...) clause, well under SQLite's bound-parameter limit
_SQLITE_BUSY_MS = 30_000
_ADVISORY_NS = 0x61747464  # "attd": namespace of our PostgreSQL advisory locks

_sqlite_locks: dict[str, threading.Lock] = {}
_sqlite_locks_guard = threading.Lock()


def _sqlite_write_lock(key: str) -> threading.Lock:
    """One lock per database file per process, shared by every Store opened on that file."""
    with _sqlite_locks_guard:
        return _sqlite_locks.setdefault(key, threading.Lock())


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN (pysqlite's implicit one is deferred and late).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_MS}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _sqlite_on_begin(conn: Any) -> None:
    mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")


def _batches(items: Sequence[Any], size: int = _IN_BATCH) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _open_engine(url: str) -> tuple[Engine, str, bool]:
    """An engine for ``url``, its dialect name, and whether it is an in-memory SQLite database."""
    if "://" not in url:
        url = f"sqlite:///{Path(url).expanduser()}"
    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        kwargs: dict[str, Any] = {
            "connect_args": {"check_same_thread": False, "timeout": _SQLITE_BUSY_MS / 1000}
        }
        memory = not u.database or u.database == ":memory:" or "mode=memory" in str(u)
        if memory:
            kwargs["poolclass"] = StaticPool
        else:
            Path(u.database or "").expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(u, **kwargs)
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine, "sqlite", memory
    if backend == "postgresql":
        if u.drivername == "postgresql":
            u = u.set(drivername="postgresql+psycopg")
        try:
            return create_engine(u, pool_pre_ping=True), "postgresql", False
        except (ImportError, NoSuchModuleError) as exc:
            raise MissingDependency(
                "psycopg[binary]", extra="postgres", feature="a PostgreSQL store"
            ) from exc
    raise InvalidInput(
        f"unsupported database URL {u.render_as_string(hide_password=True)!r}: use sqlite or postgresql"
    )


class Store:
    """Collections, documents, chunks and jobs in SQLite or PostgreSQL.

    ``url`` is a SQLAlchemy URL (``sqlite:///path.db``, ``sqlite://`` for memory,
    ``postgresql+psycopg://user@host/db``) or a plain file path for SQLite. Tables are created on open.
    """

    def __init__(self, url: str | Path) -> None:
        self._engine, self.dialect, memory = _open_engine(str(url))
        self.url = self._engine.url.render_as_string(hide_password=True)
        self._write_engine = self._engine
        self._write_lock: AbstractContextManager[Any] = nullcontext()
        self._read_lock: AbstractContextManager[Any] = nullcontext()
        if self.dialect == "sqlite":
            self._write_engine = self._engine.execution_options(sqlite_begin="IMMEDIATE")
            if memory:
                lock = threading.Lock()  # one shared connection: reads must not interleave writes
                self._write_lock = self._read_lock = lock
            else:
                path = Path(self._engine.url.database or "").resolve()
                self._write_lock = _sqlite_write_lock(str(path))
        Base.metadata.create_all(self._engine)
        logger.info("document store open at %s", self.url)

    def close(self) -> None:
        """Release pooled connections."""
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------ sessions

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with self._read_lock, Session(self._engine, expire_on_commit=False) as s:
            yield s

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """One write transaction: committed on success, rolled back on any exception."""
        with self._write_lock, Session(self._write_engine, expire_on_commit=False) as s, s.begin():
            yield s

    def _collection_row(self, s: Session, name: str) -> CollectionRow:
        row = s.scalars(select(CollectionRow).where(CollectionRow.name == name)).one_or_none()
        if row is None:
            raise CollectionNotFound(name)
        return row

    def _collection_id(self, s: Session, name: str) -> int:
        cid = s.scalar(select(CollectionRow.id).where(CollectionRow.name == name))
        if cid is None:
            raise CollectionNotFound(name)
        return cid

    def _lock_collection(self, s: Session, name: str) -> int:
        """Id of collection ``name``, holding its write lock until the transaction ends."""
        cid = self._collection_id(s, name)
        if self.dialect != "postgresql":
            return cid  # SQLite: the process lock and BEGIN IMMEDIATE already serialise writers
        while True:
            s.execute(
                text("SELECT pg_advisory_xact_lock(:ns, :key)"),
                {"ns": _ADVISORY_NS, "key": cid % 2**31},
            )
            # The collection may have been deleted (or re-created) while we waited.
            again = self._collection_id(s, name)
            if again == cid:
                return cid
            cid = again

    # --------------------------------------------------------------------------- collections

    @staticmethod
    def _collection_info(row: CollectionRow) -> CollectionInfo:
        return CollectionInfo(row.id, row.name, dict(row.settings or {}), as_utc(row.created_at))

    def create_collection(
        self, name: str, settings: dict[str, Any] | None = None
    ) -> CollectionInfo:
        """Create a collection; ``AlreadyExists`` if the name is taken."""
        check_collection_name(name)
        settings = {} if settings is None else settings
        if not isinstance(settings, dict):
            raise InvalidInput("collection settings must be an object")
        settings = json.loads(check_json(settings, "collection settings"))
        try:
            with self._write() as s:
                if s.scalar(select(CollectionRow.id).where(CollectionRow.name == name)) is not None:
                    raise AlreadyExists(f"collection {name!r} already exists")
                row = CollectionRow(name=name, settings=settings, created_at=utcnow())
                s.add(row)
                s.flush()
                info = self._collection_info(row)
        except IntegrityError:  # a concurrent create won the race (PostgreSQL)
            raise AlreadyExists(f"collection {name!r} already exists") from None
        logger.info("created collection %s", name)
        return info

    def get_collection(self, name: str) -> CollectionInfo:
        with self._read() as s:
            return self._collection_info(self._collection_row(s, name))

    def list_collections(self) -> list[CollectionInfo]:
        with self._read() as s:
            rows = s.scalars(select(CollectionRow).order_by(CollectionRow.name)).all()
            return [self._collection_info(r) for r in rows]

    def delete_collection(self, name: str) -> list[int]:
        """Delete a collection with its documents and chunks; returns the removed chunk ids."""
        with self._write() as s:
            cid = self._lock_collection(s, name)
            removed = list(
                s.scalars(
                    select(ChunkRow.id).where(ChunkRow.collection_id == cid).order_by(ChunkRow.id)
                )
            )
            # Documents and chunks go by ON DELETE CASCADE in the database.
            s.execute(delete(CollectionRow).where(CollectionRow.id == cid))
        logger.info("deleted collection %s (%d chunks)", name, len(removed))
        return removed

    def collection_stats(self, name: str) -> CollectionStats:
        with self._read() as s:
            cid = self._collection_id(s, name)
            docs = s.scalar(
                select(func.count())
                .select_from(DocumentRow)
                .where(DocumentRow.collection_id == cid)
            )
            chunks, embedded, tokens = s.execute(
                select(
                    func.count(),
                    func.count(ChunkRow.embedding),
                    func.coalesce(func.sum(ChunkRow.token_count), 0),
                ).where(ChunkRow.collection_id == cid)
            ).one()
        return CollectionStats(name, int(docs or 0), int(chunks), int(embedded), int(tokens))

    # ----------------------------------------------------------------------------- documents

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
        out: dict[int, list[int]] = {d: [] for d in doc_ids}
        for batch in _batches(list(doc_ids)):
            q = select(ChunkRow.document_id, ChunkRow.id).where(ChunkRow.document_id.in_(batch))
            for doc_id, chunk_id in s.execute(q.order_by(ChunkRow.document_id, ChunkRow.ordinal)):
                out[doc_id].append(chunk_id)
        return out

    def _existing(
        self, s: Session, cid: int, external_ids: Sequence[str]
    ) -> dict[str, tuple[int, str, str]]:
        """external id -> (document id, content hash, canonical metadata JSON)."""
        out = {}
        for batch in _batches(list(external_ids)):
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
        with self._read() as s:
            planned = self._existing(s, self._collection_id(s, collection), ext_ids)
        # Chunk (and maybe encode) outside the write lock; only changed documents.
        prepared = {
            d.external_id: self._prepare(d, chunks_for)
            for d in docs
            if planned.get(d.external_id, (0, None))[1] != d.content_hash
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
        for batch in _batches([i for _, i in replaced]):
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

    @staticmethod
    def _document_record(collection: str, row: DocumentRow, chunk_ids: list[int]) -> DocumentRecord:
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
            return self._document_record(collection, row, chunk_ids)

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
            return [self._document_record(collection, r, chunks[r.id]) for r in rows]

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

    # -------------------------------------------------------------------------------- chunks

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
            for batch in _batches(sorted(set(ids))):
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
        """Every chunk of a collection in id order as ``StoredChunk(id, text, embedding or None, title)``,
        read in batches of ``batch_size`` (each its own short read, so writers are never held up)."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInput(f"batch_size must be a positive integer, got {batch_size!r}")
        with self._read() as s:
            cid = self._collection_id(s, collection)
        return self._iter_chunks(cid, batch_size, with_embeddings)

    def _iter_chunks(
        self, cid: int, batch_size: int, with_embeddings: bool
    ) -> Iterator[StoredChunk]:
        cols = [ChunkRow.id, ChunkRow.text, DocumentRow.title] + ([ChunkRow.embedding] if with_embeddings else [])
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
                yield StoredChunk(r[0], r[1], decode_embedding(r[3]) if with_embeddings else None, r[2] or "")
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
            for batch in _batches(ids):
                present.update(s.scalars(select(ChunkRow.id).where(ChunkRow.id.in_(batch))))
            missing = [i for i in ids if i not in present]
            if missing:
                raise NotFound(f"{len(missing)} chunk ids do not exist, e.g. {missing[:5]}")
            s.execute(
                stmt, [{"cid": i, "emb": encode_embedding(arr[k])} for k, i in enumerate(ids)]
            )

    def filter_chunk_ids(self, collection: str, filters: Mapping[str, Any] | None) -> set[int]:
        """Ids of the chunks whose document metadata matches every filter (see
        ``index.models.compile_filters``: ``{"lang": "en"}``, ``{"year": {"$in": [2023, 2024]}}``).
        No filters: every chunk of the collection."""
        conditions = compile_filters(filters)
        with self._read() as s:
            cid = self._collection_id(s, collection)
            if not conditions:
                return set(s.scalars(select(ChunkRow.id).where(ChunkRow.collection_id == cid)))
            docs = s.execute(
                select(DocumentRow.id, DocumentRow.meta).where(DocumentRow.collection_id == cid)
            )
            keep = [doc_id for doc_id, meta in docs if matches(meta or {}, conditions)]
            out: set[int] = set()
            for batch in _batches(keep):
                out.update(s.scalars(select(ChunkRow.id).where(ChunkRow.document_id.in_(batch))))
            return out

    # ---------------------------------------------------------------------------------- jobs

    @staticmethod
    def _job_info(row: JobRow) -> JobInfo:
        return JobInfo(
            row.id,
            row.collection,
            row.status,
            row.total,
            row.done,  # type: ignore[arg-type]
            list(row.errors or []),
            as_utc(row.created_at),
            as_utc(row.updated_at),
        )

    def create_job(self, collection: str, total: int = 0) -> JobInfo:
        """A queued ingestion job for ``collection`` with ``total`` documents to process."""
        check_collection_name(collection)
        if not isinstance(total, int) or total < 0:
            raise InvalidInput(f"total must be a non-negative integer, got {total!r}")
        now = utcnow()
        row = JobRow(
            id=str(uuid.uuid4()),
            collection=collection,
            status="queued",
            total=total,
            done=0,
            errors=[],
            created_at=now,
            updated_at=now,
        )
        with self._write() as s:
            s.add(row)
            s.flush()
            return self._job_info(row)

    def update_job(
        self,
        job_id: str,
        *,
        status: str | None = None,
        done: int | None = None,
        total: int | None = None,
        add_errors: Sequence[Mapping[str, Any]] | None = None,
    ) -> JobInfo:
        """Set status/progress and append errors (``{"doc_id": ..., "reason": ...}``)."""
        if status is not None and status not in JOB_STATUSES:
            raise InvalidInput(f"job status must be one of {JOB_STATUSES}, got {status!r}")
        for name, value in (("done", done), ("total", total)):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise InvalidInput(f"{name} must be a non-negative integer, got {value!r}")
        errors = []
        for e in add_errors or []:
            if not isinstance(e, Mapping) or "reason" not in e:
                raise InvalidInput(
                    "each job error must be an object with a 'reason' (and usually a 'doc_id')"
                )
            errors.append(json.loads(check_json(dict(e), "job error")))
        with self._write() as s:
            row = s.get(JobRow, job_id, with_for_update=True)
            if row is None:
                raise NotFound(f"job {job_id!r} does not exist")
            if status is not None:
                row.status = status
            if done is not None:
                row.done = done
            if total is not None:
                row.total = total
            if errors:
                row.errors = list(row.errors or []) + errors
            row.updated_at = utcnow()
            s.flush()
            return self._job_info(row)

    def get_job(self, job_id: str) -> JobInfo:
        with self._read() as s:
            row = s.get(JobRow, job_id)
            if row is None:
                raise NotFound(f"job {job_id!r} does not exist")
            return self._job_info(row)

    def list_jobs(self, collection: str | None = None, *, limit: int = 50) -> list[JobInfo]:
        """Most recent jobs first, optionally of one collection."""
        q = select(JobRow).order_by(JobRow.created_at.desc(), JobRow.id).limit(limit)
        if collection is not None:
            q = q.where(JobRow.collection == collection)
        with self._read() as s:
            return [self._job_info(r) for r in s.scalars(q)]
