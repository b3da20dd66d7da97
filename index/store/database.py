"""The store's connection to its database: the engine, read and write sessions, the write locks,
and looking a collection up by name. Every part of the store (collections, documents, chunks,
filters, jobs) builds on :class:`Database`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from common.errors import CollectionNotFound
from index.rows import Base, CollectionRow
from index.store.dialect import advisory_xact_lock, open_engine, sqlite_write_lock

logger = logging.getLogger(__name__)

_IN_BATCH = 500  # ids per IN (...) clause, well under SQLite's bound-parameter limit


def batches(items: Sequence[Any], size: int = _IN_BATCH) -> Iterator[Sequence[Any]]:
    """``items`` in slices of at most ``size``, one per ``IN (...)`` clause."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


class Database:
    """An open SQLite or PostgreSQL database holding the store's tables (created on open).

    ``url`` is a SQLAlchemy URL (``sqlite:///path.db``, ``sqlite://`` for memory,
    ``postgresql+psycopg://user@host/db``) or a plain file path for SQLite.
    """

    def __init__(self, url: str | Path) -> None:
        self._engine, self.dialect, memory = open_engine(str(url))
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
                self._write_lock = sqlite_write_lock(str(path))
        Base.metadata.create_all(self._engine)
        logger.info("document store open at %s", self.url)

    def close(self) -> None:
        """Release pooled connections."""
        self._engine.dispose()

    @contextmanager
    def _read(self) -> Iterator[Session]:
        """A session for reading."""
        with self._read_lock, Session(self._engine, expire_on_commit=False) as s:
            yield s

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """One write transaction: committed on success, rolled back on any exception."""
        with self._write_lock, Session(self._write_engine, expire_on_commit=False) as s, s.begin():
            yield s

    def _collection_row(self, s: Session, name: str) -> CollectionRow:
        """The row of collection ``name``; ``CollectionNotFound`` if there is none."""
        row = s.scalars(select(CollectionRow).where(CollectionRow.name == name)).one_or_none()
        if row is None:
            raise CollectionNotFound(name)
        return row

    def _collection_id(self, s: Session, name: str) -> int:
        """The id of collection ``name``; ``CollectionNotFound`` if there is none."""
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
            advisory_xact_lock(s, cid)
            # The collection may have been deleted (or re-created) while we waited.
            again = self._collection_id(s, name)
            if again == cid:
                return cid
            cid = again
