"""Collections in the store: create, look up, list, delete (with everything in them), count."""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from common.errors import AlreadyExists, InvalidInput
from index.records import CollectionInfo, CollectionStats, check_collection_name, check_json
from index.rows import ChunkRow, CollectionRow, DocumentRow, as_utc, utcnow
from index.store.database import Database

logger = logging.getLogger(__name__)


def collection_info(row: CollectionRow) -> CollectionInfo:
    """The frozen value of a collection row."""
    return CollectionInfo(row.id, row.name, dict(row.settings or {}), as_utc(row.created_at))


class Collections(Database):
    """The collection operations of :class:`~index.store.Store`."""

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
                info = collection_info(row)
        except IntegrityError:  # a concurrent create won the race (PostgreSQL)
            raise AlreadyExists(f"collection {name!r} already exists") from None
        logger.info("created collection %s", name)
        return info

    def get_collection(self, name: str) -> CollectionInfo:
        """Collection ``name``; ``CollectionNotFound`` if there is none."""
        with self._read() as s:
            return collection_info(self._collection_row(s, name))

    def list_collections(self) -> list[CollectionInfo]:
        """Every collection, by name."""
        with self._read() as s:
            rows = s.scalars(select(CollectionRow).order_by(CollectionRow.name)).all()
            return [collection_info(r) for r in rows]

    def set_collection_setting(self, name: str, key: str, value: Any) -> CollectionInfo:
        """Set one setting of a collection (``value`` None removes it); the caller checks it."""
        with self._write() as s:
            row = self._collection_row(s, name)
            settings = dict(row.settings or {})
            if value is None:
                settings.pop(key, None)
            else:
                settings[key] = value
            row.settings = json.loads(check_json(settings, "collection settings"))
            s.flush()
            return collection_info(row)

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
        """How many documents, chunks, embedded chunks and tokens collection ``name`` holds."""
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
