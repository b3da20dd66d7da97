"""A collection split into N shards by a stable hash of document id, searched by scatter-gather,
with results identical to one index holding everything.

Each shard is a :class:`ShardServer`: a :class:`~index.collection.CollectionIndex` over its
documents' chunks (BM25 + FAISS) and the shard side of the two searches. Where the shards live is
a :class:`ShardSet`: :class:`LocalShards` holds them in this process; ``engine.distributed.shards``
holds each in a Ray actor. :class:`ShardedCollectionIndex` has the interface of
``CollectionIndex`` (``add``/``remove``/``reconcile``/``save``/``try_load`` and ``bm25.search`` /
``dense.search``), so ``retriever.hybrid.search`` and the engine use it unchanged.

Identical results:

- BM25 scores with **global statistics** (:mod:`index.bm25.global_stats`): document count, document
  frequencies and total length summed over the shards, so every score equals the single index's;
  each shard returns its top k in float64 and the gathered top k is cut with the same tie rule
  (ascending id), then rounded to float32 as the single index rounds.
- Dense: every shard answers its exact top k; the gathered top k is the global top k (ties to the
  smaller id). Exact only on exact kinds (``flat``); on HNSW each shard's answer is approximate.
  Two chunks with exactly the same score (duplicate texts) may come in either order: FAISS orders
  such ties by insertion, which differs between one index and its shards.
- Hybrid: ``retriever.hybrid.search`` fuses the gathered lists with the same candidate depths.

Updates go to the owning shard (adds by the chunk's document id; removes, which carry only chunk
ids, to every shard, which ignore ids they lack), and the statistics of the shards that changed
are re-read before the update returns, so they stay exact. A search that runs during an update
may see the statistics from before it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from common.atomic import atomic_write_text
from common.errors import InvalidInput
from index.bm25.global_stats import GlobalStats, ShardStats
from index.collection import CollectionIndex, IndexSettings, index_text, new_bm25
from index.exact import allowed_array, pad_value
from index.topk import top_k

if TYPE_CHECKING:
    from index.store import Store

logger = logging.getLogger(__name__)

MAX_SHARDS = 64


def shard_of(doc_id: str, n_shards: int) -> int:
    """The shard of a document: a stable hash of its id (the same on every machine and run)."""
    digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n_shards


class ShardServer:
    """One shard: the indexes of its chunks and its side of the scatter-gather searches. Lives in
    this process or in a Ray actor; its methods take and return plain values and arrays."""

    def __init__(self, name: str, dim: int, settings: dict[str, Any], root: str | None, device: str = "auto") -> None:
        self.index = CollectionIndex(name, dim, IndexSettings.from_settings(settings), Path(root) if root else None, device)

    def add(self, ids: np.ndarray, texts: list[str], vectors: np.ndarray) -> ShardStats:
        self.index.add(ids, texts, vectors)
        return self.index.bm25.shard_stats()

    def remove(self, ids: np.ndarray) -> ShardStats | None:
        """Drop the ids this shard holds; its new statistics, or None when it held none of them
        (the statistics, a pass over the vocabulary, are not rebuilt for nothing)."""
        before = len(self.index.bm25)
        self.index.remove(ids)
        return self.index.bm25.shard_stats() if len(self.index.bm25) != before else None

    def stats(self) -> ShardStats:
        return self.index.bm25.shard_stats()

    def ids(self) -> np.ndarray:
        """Chunk ids both indexes hold, ascending."""
        return np.intersect1d(self.index.bm25.ids(), self.index.dense.ids())

    def all_ids(self) -> np.ndarray:
        """Chunk ids either index holds, ascending."""
        return np.union1d(self.index.bm25.ids(), self.index.dense.ids())

    def counts(self) -> tuple[int, int, str]:
        return len(self.index.bm25), len(self.index.dense), self.index.dense.active_kind

    def bm25_search(
        self, terms: list[str], weights: np.ndarray, const: float, avgdl: float, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.index.bm25.search_weighted(terms, weights, const, avgdl, k, allowed)

    def dense_search(self, q: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        return self.index.dense.search(q, k, allowed_ids=allowed)

    def save(self) -> None:
        self.index.save()

    def try_load(self) -> bool:
        return self.index.try_load()

    def drop_files(self) -> None:
        self.index.drop_files()

    def memory_bytes(self) -> int:
        """Bytes the shard's index arrays hold: BM25 postings, lengths and ids, and the vectors."""
        st = self.index.bm25._state
        n = 0
        for seg in st.segments:
            for m in (seg.csr, seg.csc):
                n += m.data.nbytes + m.indices.nbytes + m.indptr.nbytes
            n += seg.lengths.nbytes + seg.ids.nbytes + seg.alive.nbytes
        return n + len(self.index.dense) * (self.index.dim * 4 + 8)


class ShardSet(Protocol):
    """Where the shards live. ``call`` runs ``method`` on the shards named in ``args`` (shard
    index -> its positional arguments), concurrently where it can, and returns each result under
    its shard index."""

    def __len__(self) -> int: ...

    def call(self, method: str, args: Mapping[int, tuple[Any, ...]]) -> dict[int, Any]: ...

    def close(self) -> None: ...


class LocalShards:
    """Shards held in this process (no Ray): the reference the Ray shards are tested against, and
    the fallback where Ray is not installed."""

    def __init__(self, servers: Sequence[ShardServer]) -> None:
        self.servers = list(servers)

    def __len__(self) -> int:
        return len(self.servers)

    def call(self, method: str, args: Mapping[int, tuple[Any, ...]]) -> dict[int, Any]:
        return {i: getattr(self.servers[i], method)(*a) for i, a in args.items()}

    def close(self) -> None:
        self.servers.clear()


ShardFactory = Callable[[list[dict[str, Any]]], ShardSet]
"""Makes a shard set from each shard's ``ShardServer`` keyword arguments."""


def local_shards(specs: list[dict[str, Any]]) -> ShardSet:
    return LocalShards([ShardServer(**spec) for spec in specs])


def _merge(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` of the shards' ``(ids, scores)`` lists: best score first, ties to the smaller
    id (the single index's rule)."""
    ids = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
    scores = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0)
    if not len(ids):
        return ids.astype(np.int64), scores
    pos = top_k(scores, k, ids)
    return ids[pos], scores[pos]


class ShardedBM25:
    """The BM25 side of a sharded collection: ``search`` as ``BM25Index.search``."""

    def __init__(self, owner: ShardedCollectionIndex) -> None:
        self._owner = owner
        self._template = owner.template  # an empty index: the analyzer, variant and parameters

    def __len__(self) -> int:
        return self._owner.global_stats().n_docs

    def ids(self) -> np.ndarray:
        return np.sort(np.concatenate(self._owner.call_all("ids")))

    def search(self, query: str, k: int = 10, allowed_ids: Any = None) -> tuple[np.ndarray, np.ndarray]:
        if k <= 0:
            raise InvalidInput(f"k must be positive, got {k}")
        stats = self._owner.global_stats()
        terms, weights, const = stats.query_weights(self._template.analyzer(query))
        if not terms:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        allowed = allowed_array(allowed_ids)
        ids, scores = _merge(self._owner.call_all("bm25_search", terms, weights, const, stats.avgdl, k, allowed), k)
        return ids, scores.astype(np.float32)


class ShardedDense:
    """The dense side of a sharded collection: ``search`` as ``DenseIndex.search`` (one query)."""

    def __init__(self, owner: ShardedCollectionIndex) -> None:
        self._owner = owner
        self.metric = "ip"

    def __len__(self) -> int:
        return sum(c[1] for c in self._owner.counts())

    @property
    def active_kind(self) -> str:
        kinds = {c[2] for c in self._owner.counts()}
        return kinds.pop() if len(kinds) == 1 else "mixed"

    def ids(self) -> np.ndarray:
        return self._owner.bm25.ids()

    def search(self, queries: np.ndarray, k: int, allowed_ids: Any = None) -> tuple[np.ndarray, np.ndarray]:
        if k <= 0:
            raise InvalidInput(f"k must be positive, got {k}")
        q = np.asarray(queries, dtype=np.float32).reshape(-1, self._owner.dim)
        allowed = allowed_array(allowed_ids)
        got = self._owner.call_all("dense_search", q, k, allowed)
        out_s = np.full((len(q), k), pad_value(self.metric), dtype=np.float32)
        out_i = np.full((len(q), k), -1, dtype=np.int64)
        for row in range(len(q)):
            parts = [(i[row][i[row] >= 0], s[row][i[row] >= 0].astype(np.float64)) for s, i in got]
            ids, scores = _merge(parts, k)
            out_i[row, : len(ids)] = ids
            out_s[row, : len(ids)] = scores
        return out_s, out_i


class ShardedCollectionIndex:
    """A collection's indexes split over ``n_shards`` shards (see the module docstring). Has the
    interface of :class:`~index.collection.CollectionIndex`."""

    def __init__(
        self,
        name: str,
        dim: int,
        settings: IndexSettings,
        root: Path | None,
        n_shards: int,
        *,
        device: str = "auto",
        factory: ShardFactory = local_shards,
    ) -> None:
        if not isinstance(n_shards, int) or isinstance(n_shards, bool) or not 1 <= n_shards <= MAX_SHARDS:
            raise InvalidInput(f"shards must be an integer between 1 and {MAX_SHARDS}, got {n_shards!r}")
        self.name = name
        self.dim = dim
        self.settings = settings
        self.root = root
        self.n_shards = n_shards
        self.lock = threading.RLock()
        self.template = new_bm25(settings)  # the analyzer, variant and parameters every shard uses
        raw = {k: getattr(settings, k) for k in ("bm25_variant", "bm25_k1", "bm25_b", "dense_kind") if getattr(settings, k) is not None}
        specs = [
            {"name": f"{name}/shard-{i}", "dim": dim, "settings": raw,
             "root": str(root / f"shard-{i}") if root is not None else None, "device": device}
            for i in range(n_shards)
        ]
        self.shards: ShardSet = factory(specs)
        self._stats: list[ShardStats] = self.call_all("stats")
        self._global: GlobalStats | None = None
        self.bm25 = ShardedBM25(self)
        self.dense = ShardedDense(self)

    def __len__(self) -> int:
        return len(self.bm25)

    def call_all(self, method: str, *args: Any) -> list[Any]:
        """``method(*args)`` on every shard (one concurrent round); results in shard order."""
        got = self.shards.call(method, dict.fromkeys(range(self.n_shards), args))
        return [got[i] for i in range(self.n_shards)]

    def global_stats(self) -> GlobalStats:
        g = self._global
        if g is None:
            tpl = self.template
            g = self._global = GlobalStats(self._stats, tpl._variant, tpl._params)
        return g

    def _set_stats(self, updates: dict[int, ShardStats | None]) -> None:
        """Take the shards' new statistics (None: that shard did not change)."""
        changed = {i: s for i, s in updates.items() if s is not None}
        if not changed:
            return
        stats = list(self._stats)
        for i, s in changed.items():
            stats[i] = s
        self._stats, self._global = stats, None

    def counts(self) -> list[tuple[int, int, str]]:
        """``(bm25 chunks, dense chunks, dense kind)`` of each shard."""
        return self.call_all("counts")

    def memory_bytes(self) -> list[int]:
        """Bytes of index arrays held by each shard."""
        return self.call_all("memory_bytes")

    # --- updates -------------------------------------------------------------------------------

    def add(
        self, ids: np.ndarray, texts: list[str], vectors: np.ndarray, doc_ids: Sequence[str] | None = None
    ) -> None:
        """Index chunks on the shards owning their documents (``doc_ids``: each chunk's
        document id, required here)."""
        if len(ids) == 0:
            return
        if doc_ids is None or len(doc_ids) != len(ids):
            raise InvalidInput("a sharded index needs the document id of every chunk it adds")
        if vectors.shape != (len(ids), self.dim):
            raise InvalidInput(f"expected vectors of shape ({len(ids)}, {self.dim}), got {vectors.shape}")
        ids = np.asarray(ids, dtype=np.int64)
        owner = np.fromiter((shard_of(d, self.n_shards) for d in doc_ids), dtype=np.int64, count=len(ids))
        with self.lock:
            self._remove_locked(ids)  # an id re-added under another document may move shards
            self._apply_adds(owner, ids, list(texts), vectors)

    def _apply_adds(self, owner: np.ndarray, ids: np.ndarray, texts: list[str], vectors: np.ndarray) -> None:
        args = {}
        for i in np.unique(owner).tolist():
            m = np.flatnonzero(owner == i)
            args[int(i)] = (ids[m], [texts[j] for j in m.tolist()], vectors[m])
        self._set_stats(self.shards.call("add", args))

    def remove(self, ids: np.ndarray | list[int]) -> None:
        """Remove chunks (unknown ids are ignored)."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return
        with self.lock:
            self._remove_locked(ids)

    def _remove_locked(self, ids: np.ndarray) -> None:
        self._set_stats(dict(enumerate(self.call_all("remove", ids))))

    # --- persistence ---------------------------------------------------------------------------

    def save(self) -> None:
        if self.root is None:
            return
        with self.lock:
            self.root.mkdir(parents=True, exist_ok=True)
            self.call_all("save")
            atomic_write_text(self.root / "manifest.json", json.dumps({"dim": self.dim, "shards": self.n_shards}))

    def try_load(self) -> bool:
        """Load every shard's saved indexes; False if the saved layout differs or a shard could not
        load (the reconcile then fills in what is missing)."""
        if self.root is None or not (self.root / "manifest.json").is_file():
            return False
        try:
            manifest = json.loads((self.root / "manifest.json").read_text())
        except (OSError, ValueError):
            return False
        if manifest.get("shards") != self.n_shards or manifest.get("dim") != self.dim:
            return False
        loaded = self.call_all("try_load")
        with self.lock:
            self._set_stats(dict(enumerate(self.call_all("stats"))))
        return all(loaded)

    def drop_files(self) -> None:
        if self.root is not None and self.root.exists():
            shutil.rmtree(self.root, ignore_errors=True)

    def close(self) -> None:
        self.shards.close()

    # --- reconciliation ------------------------------------------------------------------------

    def reconcile(self, store: Store, encode: Callable[[list[str]], np.ndarray] | None = None) -> dict[str, int]:
        """Make the shards hold exactly the store's chunk ids of this collection, each on the shard
        of its document. ``encode`` is used only for stored chunks without an embedding."""
        with self.lock:
            held = self.call_all("ids")
            partial = self.call_all("all_ids")
            where = {int(c): i for i, arr in enumerate(held) for c in arr.tolist()}
            stored: set[int] = set()
            missing: list[tuple[int, str, np.ndarray | None, int]] = []
            for ch in store.iter_chunks(self.name, with_embeddings=True):
                stored.add(ch.id)
                owner = shard_of(ch.doc_id, self.n_shards)
                if where.get(ch.id) != owner:
                    missing.append((ch.id, index_text(ch.title, ch.text), ch.embedding, owner))
            stale = [int(c) for arr in partial for c in arr.tolist() if int(c) not in stored]
            drop = np.asarray(sorted(set(stale) | {m[0] for m in missing}), dtype=np.int64)
            if len(drop):
                self._remove_locked(drop)
            if missing:
                vecs = [m[2] for m in missing]
                need = [i for i, v in enumerate(vecs) if v is None]
                if need:
                    if encode is None:
                        raise InvalidInput(f"{len(need)} stored chunks have no embedding and no encoder was given")
                    enc = encode([missing[i][1] for i in need])
                    for j, i in enumerate(need):
                        vecs[i] = enc[j]
                    store.set_embeddings([missing[i][0] for i in need], np.stack([vecs[i] for i in need]))
                self._apply_adds(
                    np.asarray([m[3] for m in missing], dtype=np.int64),
                    np.asarray([m[0] for m in missing], dtype=np.int64),
                    [m[1] for m in missing],
                    np.stack(vecs).astype(np.float32),
                )
        stats = {"stored": len(stored), "added": len(missing), "removed": len(set(stale))}
        if missing or stale:
            logger.info("collection %s (%d shards) reconciled with the store: %s", self.name, self.n_shards, stats)
        return stats
