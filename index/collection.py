"""The search indexes of one collection (BM25 and FAISS), kept in step with the store.

The store is the source of truth. Index files are a cache: they are saved atomically after
ingestion and at shutdown, loaded at start, and then reconciled with the store by chunk id (ids the
store has and the index lacks are added from stored text and embeddings; ids the index has and the
store lacks are removed). A process killed in the middle of an ingestion therefore comes back with
every acknowledged (stored) chunk searchable, and nothing re-encoded.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from common.atomic import atomic_write_text
from common.errors import InvalidInput
from index.bm25 import VARIANTS, BM25Index, select_variant
from index.dense import KINDS, DenseIndex

if TYPE_CHECKING:  # the store is only passed in; importing it would pull SQLAlchemy into every user
    from index.store import Store

logger = logging.getLogger(__name__)

# The names the index code accepts, from its own tables: the API's schema and the collection
# settings check both read these.
BM25_VARIANTS: tuple[str, ...] = tuple(sorted(VARIANTS))
DENSE_KINDS: tuple[str, ...] = tuple(KINDS)
BM25_K1_MAX = 100.0  # beyond this (k1 + 1) * tf overflows towards inf and scores turn NaN


def index_text(title: str, text: str) -> str:
    """What BM25 and the encoder see for a chunk (or a whole BEIR document): its document's title,
    a space, then the text, stripped (the BEIR convention for titled documents). The store keeps
    the chunk text alone, for citations. The one place a title is joined to a text."""
    return f"{title} {text}".strip()


@dataclass(frozen=True)
class IndexSettings:
    """Per-collection index settings, stored in the collection's settings JSON."""

    bm25_variant: str = "lucene"
    bm25_k1: float | None = None  # None: the BM25 module's default
    bm25_b: float | None = None
    dense_kind: str = "auto"

    def __post_init__(self) -> None:
        try:
            select_variant(self.bm25_variant)
        except InvalidInput as exc:
            raise InvalidInput(f"bm25_variant: {exc}") from None
        if self.dense_kind not in DENSE_KINDS:
            raise InvalidInput(f"dense_kind must be one of {list(DENSE_KINDS)}, got {self.dense_kind!r}")
        for key, low, high, open_low in (("bm25_k1", 0.0, BM25_K1_MAX, True), ("bm25_b", 0.0, 1.0, False)):
            v = getattr(self, key)
            if v is None:
                continue
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) \
                    or v > high or v < low or (open_low and v == low):
                bound = f"({low:g}, {high:g}]" if open_low else f"[{low:g}, {high:g}]"
                raise InvalidInput(f"{key} must be a number in {bound}, got {v!r}")

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> IndexSettings:
        """The index settings among a collection's settings (defaults for those absent)."""
        known = {k: settings[k] for k in ("bm25_variant", "bm25_k1", "bm25_b", "dense_kind") if k in settings}
        return cls(**known)


def new_bm25(settings: IndexSettings) -> BM25Index:
    """An empty BM25 index with a collection's variant and parameters."""
    kw: dict[str, Any] = {"variant": settings.bm25_variant}
    if settings.bm25_k1 is not None:
        kw["k1"] = settings.bm25_k1
    if settings.bm25_b is not None:
        kw["b"] = settings.bm25_b
    return BM25Index(**kw)


class CollectionIndex:
    """BM25 + dense indexes of one collection. Thread-safe through the indexes' own locks; the
    add/remove pair of an ingestion is applied under ``self.lock`` so the two stay consistent."""

    def __init__(self, name: str, dim: int, settings: IndexSettings, root: Path | None, device: str = "auto") -> None:
        self.name = name
        self.dim = dim
        self.settings = settings
        self.root = root
        self.device = device
        self.lock = threading.RLock()
        self.bm25 = new_bm25(settings)
        self.dense = DenseIndex(dim, metric="ip", kind=settings.dense_kind, device=device)

    def __len__(self) -> int:
        return len(self.bm25)

    # --- updates -------------------------------------------------------------------------------

    def add(
        self, ids: np.ndarray, texts: list[str], vectors: np.ndarray, doc_ids: Sequence[str] | None = None
    ) -> None:
        """Index chunks in both indexes: ``texts`` (as ``index_text`` makes them) for BM25,
        ``vectors`` ``(len(ids), dim)`` for the dense index. ``doc_ids`` (each chunk's document
        id) is what a sharded index routes by; one index ignores it."""
        if len(ids) == 0:
            return
        if vectors.shape != (len(ids), self.dim):
            raise InvalidInput(f"expected vectors of shape ({len(ids)}, {self.dim}), got {vectors.shape}")
        with self.lock:
            self.bm25.add(ids, texts)
            self.dense.add(ids, vectors)

    def remove(self, ids: np.ndarray | list[int]) -> None:
        """Remove chunks from both indexes (unknown ids are ignored)."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return
        with self.lock:
            self.bm25.delete(ids)
            self.dense.remove(ids)

    # --- persistence ---------------------------------------------------------------------------

    def save(self) -> None:
        """Write both indexes atomically under ``root`` (no-op without a root)."""
        if self.root is None:
            return
        with self.lock:
            self.root.mkdir(parents=True, exist_ok=True)
            self.bm25.save(self.root / "bm25")
            if self.dense.trained:
                self.dense.save(self.root / "dense.faiss")
            else:  # an empty IVF collection: nothing to write, and no stale file may stay
                (self.root / "dense.faiss").unlink(missing_ok=True)
            atomic_write_text(self.root / "manifest.json", json.dumps({"dim": self.dim, "chunks": len(self.bm25)}))

    def try_load(self) -> bool:
        """Load saved indexes if present and readable; False (and fresh empty indexes) otherwise."""
        if self.root is None or not (self.root / "manifest.json").is_file():
            return False
        try:
            manifest = json.loads((self.root / "manifest.json").read_text())
            if manifest.get("dim") != self.dim:
                raise InvalidInput(f"saved index has dim {manifest.get('dim')}, encoder has {self.dim}")
            bm25 = BM25Index.load(self.root / "bm25")
            dense = DenseIndex.load(self.root / "dense.faiss", device=self.device, kind=self.settings.dense_kind)
        except Exception as exc:  # a torn or stale file: rebuild from the store instead
            logger.warning("collection %s: saved indexes unusable (%s); rebuilding from the store", self.name, exc)
            return False
        with self.lock:
            self.bm25, self.dense = bm25, dense
        return True

    def close(self) -> None:
        """Release what the indexes hold outside this process (nothing; shards hold actors)."""

    def drop_files(self) -> None:
        """Delete the saved index files (the collection is gone)."""
        if self.root is not None and self.root.exists():
            shutil.rmtree(self.root, ignore_errors=True)

    # --- reconciliation ------------------------------------------------------------------------

    def reconcile(
        self, store: Store, encode: Callable[[list[str]], np.ndarray] | None = None
    ) -> dict[str, int]:
        """Make both indexes hold exactly the store's chunk ids of this collection. ``encode``
        (texts -> vectors) is used only for stored chunks without an embedding."""
        stored_ids: list[int] = []
        missing: list[tuple[int, str, np.ndarray | None]] = []
        have_bm25 = set(self.bm25.ids().tolist())
        have_dense = set(self.dense.ids().tolist())
        have = have_bm25 & have_dense
        for ch in store.iter_chunks(self.name, with_embeddings=True):
            stored_ids.append(ch.id)
            if ch.id not in have:
                missing.append((ch.id, index_text(ch.title, ch.text), ch.embedding))
        stale = (have_bm25 | have_dense) - set(stored_ids)
        partial = [i for i, _, _ in missing if i in have_bm25 or i in have_dense]
        self.remove(np.asarray(sorted(stale | set(partial)), dtype=np.int64))
        if missing:
            ids = np.asarray([m[0] for m in missing], dtype=np.int64)
            texts = [m[1] for m in missing]
            vecs = [m[2] for m in missing]
            need = [i for i, v in enumerate(vecs) if v is None]
            if need:
                if encode is None:
                    raise InvalidInput(f"{len(need)} stored chunks have no embedding and no encoder was given")
                enc = encode([texts[i] for i in need])
                for j, i in enumerate(need):
                    vecs[i] = enc[j]
                store.set_embeddings([int(ids[i]) for i in need], np.stack([vecs[i] for i in need]))
            self.add(ids, texts, np.stack(vecs).astype(np.float32))
        stats = {"stored": len(stored_ids), "added": len(missing), "removed": len(stale)}
        if missing or stale:
            logger.info("collection %s reconciled with the store: %s", self.name, stats)
        return stats
