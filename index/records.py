"""The plain, frozen values the document store takes in and hands out, and their validation.

Nothing here touches the database: ``DocumentInput`` and ``PreparedChunks`` are checked before a
write opens, and ``CollectionInfo``, ``DocumentRecord``, ``ChunkRecord``, ``StoredChunk`` and
``JobInfo`` are what reads return (no ORM row escapes the store; see ``index.rows``). Embeddings
are stored as float32 little-endian bytes (``encode_embedding`` / ``decode_embedding``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np

from common.errors import InvalidInput

COLLECTION_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_EXTERNAL_ID = 512
MAX_DOCUMENT_CHARS = 5_000_000
JOB_STATUSES = ("queued", "running", "done", "failed")
JobStatus = Literal["queued", "running", "done", "failed"]
UpsertStatus = Literal["inserted", "updated", "unchanged"]


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
    """An embedding from its stored form (``None`` stays ``None``)."""
    return None if blob is None else np.frombuffer(blob, dtype="<f4").astype(np.float32)


def check_collection_name(name: Any) -> str:
    """``name`` if it is a valid collection name (1-64 of ``[A-Za-z0-9_.-]``), else InvalidInput."""
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
    """A stored collection: its id, name, settings (JSON object) and creation time (UTC)."""

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
    """Counts of one collection: documents, chunks, chunks with an embedding, and tokens."""

    name: str
    documents: int
    chunks: int
    embedded_chunks: int
    tokens: int


@dataclass(frozen=True)
class DocumentRecord:
    """A stored document with its chunk ids in order."""

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
    doc_id: str = ""  # the document's id (external), which a sharded index routes by


@dataclass(frozen=True)
class JobInfo:
    """Progress of one background ingestion job."""

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
        """Whether the job has stopped (``done`` or ``failed``)."""
        return self.status in ("done", "failed")
