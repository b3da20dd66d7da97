"""The document store's data model: SQLAlchemy ORM rows (private to ``index.store``) and the plain,
frozen values the store takes in and hands out.

Tables: ``collections`` (name, settings JSON), ``documents`` (one per external id per collection),
``chunks`` (integer ids shared with the BM25 and FAISS indexes, char offsets into the document text,
optional float32 embedding) and ``jobs`` (background ingestion progress). Chunk ids are never reused
(SQLite ``AUTOINCREMENT``, PostgreSQL sequences), so a stale index entry can never point at a newer
chunk.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np
from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from common.errors import InvalidInput

COLLECTION_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_EXTERNAL_ID = 512
MAX_DOCUMENT_CHARS = 5_000_000
JOB_STATUSES = ("queued", "running", "done", "failed")
JobStatus = Literal["queued", "running", "done", "failed"]
UpsertStatus = Literal["inserted", "updated", "unchanged"]

# BIGINT ids for PostgreSQL (FAISS ids are int64); SQLite needs exactly INTEGER for AUTOINCREMENT.
_Id = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes (stored as UTC); PostgreSQL aware ones in the session zone."""
    return (
        value.replace(tzinfo=timezone.utc)
        if value.tzinfo is None
        else value.astimezone(timezone.utc)
    )


# --------------------------------------------------------------------------------------- ORM rows


class Base(DeclarativeBase):
    pass


class CollectionRow(Base):
    __tablename__ = "collections"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(_Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DocumentRow(Base):
    __tablename__ = "documents"
    __table_args__ = (
        UniqueConstraint("collection_id", "external_id", name="uq_documents_collection_external"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(_Id, primary_key=True)
    collection_id: Mapped[int] = mapped_column(
        _Id, ForeignKey("collections.id", ondelete="CASCADE")
    )
    external_id: Mapped[str] = mapped_column(String(MAX_EXTERNAL_ID))
    title: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text)
    # "metadata" is reserved on declarative classes, hence the attribute name.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    content_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ChunkRow(Base):
    __tablename__ = "chunks"
    __table_args__ = (
        Index("ix_chunks_collection_id", "collection_id"),
        Index("ix_chunks_document_id", "document_id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(_Id, primary_key=True)
    document_id: Mapped[int] = mapped_column(_Id, ForeignKey("documents.id", ondelete="CASCADE"))
    collection_id: Mapped[int] = mapped_column(
        _Id, ForeignKey("collections.id", ondelete="CASCADE")
    )
    ordinal: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    char_start: Mapped[int] = mapped_column(Integer)
    char_end: Mapped[int] = mapped_column(Integer)
    token_count: Mapped[int] = mapped_column(Integer)
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # The collection's name, not a foreign key: a job's record outlives its collection.
    collection: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16))
    total: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# ----------------------------------------------------------------------------------- validation


def check_json(value: Any, what: str) -> str:
    """Canonical JSON of ``value``, or InvalidInput when it is not portable JSON (both backends)."""
    try:
        dumped = json.dumps(value, sort_keys=True, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} must be JSON-serialisable (no NaN/inf): {exc}") from None
    if "\\u0000" in dumped:
        raise InvalidInput(f"{what} must not contain NUL characters")
    try:
        dumped.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"{what} is not valid Unicode: lone surrogate at position {exc.start} of its JSON") from None
    return dumped


def printable_id(value: Any) -> str:
    """A rejected document's id as it can be reported back in JSON (lone surrogates escaped)."""
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


def check_text(value: Any, what: str) -> None:
    """``value`` must be a string that both backends can store: no NUL, valid Unicode (a lone
    surrogate such as ``"\\udc00"`` is valid JSON but cannot be encoded as UTF-8)."""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, got {type(value).__name__}")
    if "\x00" in value:
        raise InvalidInput(f"{what} must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(
            f"{what} is not valid Unicode: lone surrogate {value[exc.start]!r} at position {exc.start}"
        ) from None


def embedding_matrix(matrix: Any, rows: int, what: str) -> np.ndarray:
    """``matrix`` as a finite float32 ``(rows, dim)`` array, or InvalidInput."""
    try:
        arr = np.asarray(matrix, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} must be a numeric matrix: {exc}") from None
    if arr.ndim != 2 or arr.shape[0] != rows or arr.shape[1] == 0:
        raise InvalidInput(f"{what} must have shape ({rows}, dim), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise InvalidInput(f"{what} must be finite")
    return arr


def encode_embedding(row: np.ndarray) -> bytes:
    """Stored form of an embedding: float32 little-endian bytes."""
    return np.ascontiguousarray(row, dtype="<f4").tobytes()


def decode_embedding(blob: bytes | None) -> np.ndarray | None:
    return None if blob is None else np.frombuffer(blob, dtype="<f4").astype(np.float32)


def check_collection_name(name: Any) -> str:
    if not isinstance(name, str) or not COLLECTION_NAME.fullmatch(name):
        raise InvalidInput(
            f"collection name must be 1-64 characters of [A-Za-z0-9_.-], got {name!r}"
        )
    return name


# ------------------------------------------------------------------------------- values in/out


class ChunkLike(Protocol):
    """What the store needs of a chunk (``index.chunking.Chunk`` is one)."""

    @property
    def text(self) -> str: ...
    @property
    def char_start(self) -> int: ...
    @property
    def char_end(self) -> int: ...
    @property
    def token_count(self) -> int: ...


@dataclass(frozen=True)
class DocumentInput:
    """A document to upsert. ``metadata`` must be a JSON object; filters match its top-level keys."""

    external_id: str
    text: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_text(self.external_id, "document id")
        if not 1 <= len(self.external_id) <= MAX_EXTERNAL_ID:
            raise InvalidInput(
                f"document id must be 1-{MAX_EXTERNAL_ID} characters, got {len(self.external_id)}"
            )
        check_text(self.text, f"text of document {self.external_id!r}")
        check_text(self.title, f"title of document {self.external_id!r}")
        if not isinstance(self.metadata, dict) or not all(
            isinstance(k, str) for k in self.metadata
        ):
            raise InvalidInput(
                f"metadata of document {self.external_id!r} must be an object with string keys"
            )
        check_json(self.metadata, f"metadata of document {self.external_id!r}")

    @classmethod
    def parse(cls, d: Mapping[str, Any] | DocumentInput) -> DocumentInput:
        """The one validation of a submitted document (an object with ``id``, ``text``, optional
        ``title`` and ``metadata``, or a ``DocumentInput``): everything ``__post_init__`` checks,
        plus a non-empty text of at most ``MAX_DOCUMENT_CHARS``. Raises InvalidInput naming the
        field and the document."""
        if isinstance(d, DocumentInput):
            doc = d
        else:
            if not isinstance(d, Mapping):
                raise InvalidInput("each document must be an object")
            if "id" not in d or "text" not in d:
                raise InvalidInput("a document needs 'id' and 'text'")
            doc_id = d["id"]
            if not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool):
                raise InvalidInput("'id' must be a string")
            title, metadata = d.get("title"), d.get("metadata")  # null is the same as absent
            doc = cls(external_id=str(doc_id), text=d["text"], title="" if title is None else title,
                      metadata={} if metadata is None else metadata)
        if not doc.text.strip():
            raise InvalidInput(f"text of document {doc.external_id!r} is empty")
        if len(doc.text) > MAX_DOCUMENT_CHARS:
            raise InvalidInput(
                f"text of document {doc.external_id!r} has {len(doc.text)} characters; the limit is {MAX_DOCUMENT_CHARS}"
            )
        return doc

    @cached_property
    def content_hash(self) -> str:
        """sha256 of what chunks are made from (title and text); metadata alone never re-chunks."""
        h = hashlib.sha256()
        h.update(self.title.encode("utf-8"))
        h.update(b"\x00")
        h.update(self.text.encode("utf-8"))
        return h.hexdigest()

    @cached_property
    def metadata_json(self) -> str:
        """Canonical JSON of the metadata (sorted keys), to compare with what is stored."""
        return check_json(self.metadata, "metadata")


@dataclass(frozen=True)
class PreparedChunks:
    """Chunks of one document and, optionally, their embeddings (``(len(chunks), dim)``)."""

    chunks: Sequence[ChunkLike]
    embeddings: np.ndarray | None = None

    def rows(self, doc: DocumentInput) -> list[dict[str, Any]]:
        """Validated ``chunks`` table values (no ids) of ``doc``'s chunks; ``InvalidInput`` for a
        span outside the text, a text that is not the exact span, or mis-shaped embeddings."""
        chunks = list(self.chunks)
        what = f"document {doc.external_id!r}"
        emb = (
            None
            if self.embeddings is None
            else embedding_matrix(self.embeddings, len(chunks), f"embeddings of {what}")
        )
        rows = []
        for i, c in enumerate(chunks):
            try:
                cs, ce, tc, text = c.char_start, c.char_end, c.token_count, c.text
            except AttributeError as exc:
                raise InvalidInput(f"chunk {i} of {what} is not a chunk: {exc}") from None
            ints = all(
                isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (cs, ce, tc)
            )
            if not ints or not 0 <= cs < ce <= len(doc.text) or tc < 0:
                raise InvalidInput(
                    f"chunk {i} of {what} has a bad span [{cs!r}, {ce!r}) or token count {tc!r}"
                )
            if text != doc.text[cs:ce]:
                raise InvalidInput(
                    f"chunk {i} of {what}: its text is not the document's text[{cs}:{ce}]"
                )
            rows.append(
                {
                    "ordinal": i,
                    "text": text,
                    "char_start": int(cs),
                    "char_end": int(ce),
                    "token_count": int(tc),
                    "embedding": None if emb is None else encode_embedding(emb[i]),
                }
            )
        return rows


@dataclass(frozen=True)
class CollectionInfo:
    id: int
    name: str
    settings: dict[str, Any]
    created_at: datetime

    @property
    def encoder(self) -> str | None:
        """The encoder name recorded in the settings, if any."""
        value = self.settings.get("encoder")
        return str(value) if value is not None else None


@dataclass(frozen=True)
class CollectionStats:
    name: str
    documents: int
    chunks: int
    embedded_chunks: int
    tokens: int


@dataclass(frozen=True)
class DocumentRecord:
    id: int
    collection: str
    external_id: str
    title: str
    text: str
    metadata: dict[str, Any]
    content_hash: str
    created_at: datetime
    updated_at: datetime
    chunk_ids: list[int]


@dataclass(frozen=True)
class DocumentResult:
    """What an upsert did to one document.

    ``inserted``: new document, ``chunk_ids`` are new. ``updated``: either the content changed (old
    chunks in ``removed_chunk_ids`` were deleted, ``chunk_ids`` are new, ``rechunked`` is True) or
    only the metadata did (chunks kept, ``rechunked`` False). ``unchanged``: same content hash and
    metadata, nothing written.
    """

    external_id: str
    document_id: int
    status: UpsertStatus
    chunk_ids: list[int]
    removed_chunk_ids: list[int]
    rechunked: bool

    @property
    def added_chunk_ids(self) -> list[int]:
        """Chunk ids to add to the search indexes."""
        return self.chunk_ids if self.rechunked else []


@dataclass(frozen=True)
class ChunkRecord:
    """A chunk hydrated with its document's id, title and metadata (for search results)."""

    id: int
    collection: str
    document_id: int
    external_id: str
    title: str
    metadata: dict[str, Any]
    ordinal: int
    text: str
    char_start: int
    char_end: int
    token_count: int


class StoredChunk(NamedTuple):
    """One row of ``Store.iter_chunks``: enough to rebuild the BM25 and dense indexes."""

    id: int
    text: str
    embedding: np.ndarray | None
    title: str = ""  # the document's title, which the indexes see in front of every chunk


@dataclass(frozen=True)
class JobInfo:
    id: str
    collection: str
    status: JobStatus
    total: int
    done: int
    errors: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")


# ------------------------------------------------------------------------------ metadata filters


@dataclass(frozen=True)
class FilterCondition:
    """``metadata[key]`` must equal one of ``values``."""

    key: str
    values: tuple[Any, ...]


def compile_filters(filters: Mapping[str, Any] | None) -> list[FilterCondition]:
    """Validate search filters on top-level metadata fields; every condition must hold.

    ``{"lang": "en"}`` or ``{"lang": {"$eq": "en"}}``: equality. ``{"year": [2023, 2024]}`` or
    ``{"year": {"$in": [2023, 2024]}}``: membership. A list-valued metadata field (tags) matches
    when any of its elements does. Booleans never equal numbers (JSON semantics).
    """
    if filters is None:
        return []
    if not isinstance(filters, Mapping):
        raise InvalidInput(f"filters must be an object, got {type(filters).__name__}")
    out = []
    for key, spec in filters.items():
        if not isinstance(key, str) or not key:
            raise InvalidInput(f"filter keys must be non-empty strings, got {key!r}")
        if isinstance(spec, Mapping):
            if len(spec) != 1:
                raise InvalidInput(f"filter on {key!r} must have exactly one operator ($eq or $in)")
            op, operand = next(iter(spec.items()))
            if op == "$eq":
                values: tuple[Any, ...] = (operand,)
            elif op == "$in":
                if not isinstance(operand, (list, tuple)):
                    raise InvalidInput(f"$in on {key!r} needs a list, got {type(operand).__name__}")
                values = tuple(operand)
            else:
                raise InvalidInput(f"unknown filter operator {op!r} on {key!r}: use $eq or $in")
        elif isinstance(spec, (list, tuple)):
            values = tuple(spec)
        else:
            values = (spec,)
        check_json(list(values), f"filter on {key!r}")
        out.append(FilterCondition(key, values))
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _value_matches(value: Any, operand: Any) -> bool:
    if _same(value, operand):
        return True
    return (
        isinstance(value, list)
        and not isinstance(operand, (list, tuple))
        and any(_same(v, operand) for v in value)
    )


def matches(metadata: Mapping[str, Any], conditions: Sequence[FilterCondition]) -> bool:
    """Whether a document's metadata satisfies every condition."""
    for cond in conditions:
        if cond.key not in metadata:
            return False
        value = metadata[cond.key]
        if not any(_value_matches(value, v) for v in cond.values):
            return False
    return True
