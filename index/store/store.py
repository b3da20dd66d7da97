"""The document store: the source of truth for collections, documents, chunks and ingestion jobs.

SQLite by default or PostgreSQL (see ``index.store.dialect`` for how each serialises writers). The
BM25 and FAISS indexes hold only chunk ids and are rebuilt from here; chunk embeddings are kept so
a dense rebuild need not re-encode.

Everything the store returns is a plain frozen value from ``index.records``; no ORM row or session
escapes. Bad input raises ``InvalidInput`` before anything is written, and every write runs in one
transaction, so a failure leaves what was stored before untouched.
"""

from __future__ import annotations

from index.store.chunks import Chunks
from index.store.collections import Collections
from index.store.documents import Documents
from index.store.filters import Filters
from index.store.jobs import Jobs


class Store(Collections, Documents, Chunks, Filters, Jobs):
    """Collections, documents, chunks and jobs in SQLite or PostgreSQL.

    ``url`` is a SQLAlchemy URL (``sqlite:///path.db``, ``sqlite://`` for memory,
    ``postgresql+psycopg://user@host/db``) or a plain file path for SQLite. Tables are created on open.
    """

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
