"""Dense vector index over FAISS, keyed by external int64 ids (chunk primary keys).

The index holds only ids and vectors; text and metadata live in the store under the same id.

Kinds:

- ``flat``: ``IndexIDMap2(IndexFlatIP | IndexFlatL2)``: exact; ``remove`` is native.
- ``hnsw``: ``IndexIDMap(IndexHNSWFlat)``: approximate. HNSW graphs cannot remove nodes, so
  ``remove`` (and re-adding an id) *tombstones* the old entry: its slot in the id map is rewritten
  to a negative sentinel, and searches carry an ``IDSelector`` that only admits ids >= 0. When
  tombstones exceed ``rebuild_ratio`` of the entries, the graph is rebuilt from the live vectors,
  which the HNSW storage still holds (no external copy is needed). Ids must therefore be >= 0.
- ``ivf``: ``IndexIVFFlat`` with a hashtable direct map: trained on the first ``add`` (``nlist``
  defaults to about ``4 * sqrt(n)``, at most ``n / 39``); ``remove`` is native.
- ``auto``: flat on GPU; on CPU flat while the index holds fewer than ``auto_hnsw_threshold``
  vectors (200k), converted once to HNSW when an add crosses it.

Filters (``allowed_ids``) use ``faiss.IDSelectorBatch`` through ``SearchParameters``; on the
approximate kinds a filter naming at most ``exact_filter_max`` ids is answered exactly instead,
from the stored vectors of those ids (graph search degrades when most nodes are filtered out).

Scores are FAISS's: inner products for ``metric="ip"`` (higher is better), squared L2 distances
for ``metric="l2"`` (lower is better). Missing results are padded with id -1 and score ``-inf``
(ip) or ``+inf`` (l2).

GPU: with ``device="cuda"`` (or ``"auto"`` when faiss has ``StandardGpuResources`` and sees a
GPU), flat and IVF searches run on a GPU replica made with ``index_cpu_to_all_gpus``. The CPU
index stays the master copy for adds, removes and ``save``; the replica is rebuilt lazily on the
first search after a change. HNSW has no FAISS GPU implementation and searches on the CPU; a GPU
search that FAISS refuses (a filter, or k above its limit) falls back to the CPU index.

``index.exact`` holds the numpy twin with the same API (``BruteForceIndex``), which tests hold
FAISS to, and the exact search used for small filters.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from common.atomic import atomic_replace
from common.errors import InvalidInput, NotFound
from index.exact import (
    METRICS,
    allowed_array,
    check_additions,
    check_ids,
    check_vectors,
    exact_search,
    pad_value,
)
from index.faiss_runtime import load_faiss, resolve_device

logger = logging.getLogger(__name__)

KINDS = ("auto", "flat", "hnsw", "ivf")
_ALL_IDS = (0, 2**63 - 1)  # IDSelectorRange admitting every id >= 0 (tombstones are negative)


class DenseIndex:
    """A FAISS vector index keyed by int64 ids (>= 0). See the module docstring for kinds,
    removal, filters and GPU use. Thread-safe: one lock serializes mutations and searches (FAISS
    itself runs each search on all cores)."""

    def __init__(
        self,
        dim: int,
        metric: str = "ip",
        kind: str = "auto",
        device: str = "auto",
        *,
        hnsw_m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 128,
        nlist: int | None = None,
        nprobe: int = 16,
        auto_hnsw_threshold: int = 200_000,
        rebuild_ratio: float = 0.2,
        exact_filter_max: int = 20_000,
    ) -> None:
        if dim <= 0:
            raise InvalidInput(f"dim must be positive, got {dim}")
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose from {METRICS}")
        if kind not in KINDS:
            raise ValueError(f"unknown index kind {kind!r}; choose from {KINDS}")
        self.dim = dim
        self.metric = metric
        self.kind = kind
        self.device = resolve_device(device)
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.nlist = nlist
        self.nprobe = nprobe
        self.auto_hnsw_threshold = auto_hnsw_threshold
        self.rebuild_ratio = rebuild_ratio
        self.exact_filter_max = exact_filter_max
        self._lock = threading.RLock()
        self._gpu: Any = None
        self._gpu_resources: Any = None
        self._gpu_stale = True
        self._dead = 0  # hnsw tombstones
        if kind == "hnsw":
            self._active = "hnsw"
        elif kind == "ivf":
            self._active = "ivf"
        else:
            self._active = "flat"
        self._index = self._empty(self._active)

    # --- construction --------------------------------------------------------------------------

    @property
    def trained(self) -> bool:
        """False only for an IVF index before its first add (there is nothing to save yet)."""
        return self._index is not None

    @property
    def active_kind(self) -> str:
        """The kind in use now (``auto`` resolves to ``flat`` or ``hnsw``)."""
        return self._active

    @property
    def tombstones(self) -> int:
        """Removed HNSW entries still in the graph (0 for the other kinds)."""
        return self._dead

    @property
    def _faiss_metric(self) -> int:
        """FAISS's constant for this index's metric."""
        faiss = load_faiss()
        return faiss.METRIC_INNER_PRODUCT if self.metric == "ip" else faiss.METRIC_L2

    def _empty(self, kind: str) -> Any:
        """A new, empty FAISS index of ``kind`` (None for IVF, which needs data to train on)."""
        faiss = load_faiss()
        if kind == "flat":
            flat = (
                faiss.IndexFlatIP(self.dim) if self.metric == "ip" else faiss.IndexFlatL2(self.dim)
            )
            return faiss.IndexIDMap2(flat)
        if kind == "hnsw":
            inner = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, self._faiss_metric)
            inner.hnsw.efConstruction = self.ef_construction
            inner.hnsw.efSearch = self.ef_search
            return faiss.IndexIDMap(inner)
        return None  # ivf: built at the first add, when there is data to train on

    def _train_ivf(self, x: np.ndarray) -> Any:
        """An empty IVF index trained on (a sample of) ``x``."""
        faiss = load_faiss()
        n = len(x)
        nlist = self.nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
        if n < nlist:
            raise InvalidInput(
                f"an IVF index with {nlist} lists needs at least {nlist} vectors to train"
            )
        quantizer = (
            faiss.IndexFlatIP(self.dim) if self.metric == "ip" else faiss.IndexFlatL2(self.dim)
        )
        ivf = faiss.IndexIVFFlat(quantizer, self.dim, nlist, self._faiss_metric)
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
        sample = (
            x
            if n <= 256 * nlist
            else x[np.random.default_rng(0).choice(n, 256 * nlist, replace=False)]
        )
        ivf.train(sample)
        ivf.nprobe = min(self.nprobe, nlist)
        logger.info("trained IVF index: %d lists on %d vectors", nlist, len(sample))
        return ivf

    # --- reading -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal) - self._dead

    def _id_map(self) -> np.ndarray:
        """The id of each stored entry (flat and HNSW); tombstones are negative."""
        return load_faiss().vector_to_array(self._index.id_map).astype(np.int64, copy=False)

    def ids(self) -> np.ndarray:
        """The live ids, ascending."""
        with self._lock:
            if self._index is None:
                return np.zeros(0, dtype=np.int64)
            if self._active in ("flat", "hnsw"):
                m = self._id_map()
                return np.sort(m[m >= 0])
            faiss = load_faiss()
            inv = self._index.invlists
            parts = [
                faiss.rev_swig_ptr(inv.get_ids(i), inv.list_size(i)).copy()
                for i in range(self._index.nlist)
                if inv.list_size(i)
            ]
            return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)

    def _stored_vectors(self, positions: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of the live entries (flat/hnsw), optionally only at ``positions``."""
        id_map = self._id_map()
        pos = np.flatnonzero(id_map >= 0) if positions is None else positions
        if not len(pos):
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.dim), dtype=np.float32)
        inner = load_faiss().downcast_index(self._index.index)
        vecs = inner.reconstruct_batch(pos.astype(np.int64))
        return id_map[pos], vecs

    def search(
        self,
        queries: np.ndarray,
        k: int,
        allowed_ids: Iterable[int] | np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest stored vectors to each query: ``(scores (n, k) float32, ids (n, k)
        int64)``, best first, padded with id -1 (score -inf for ip, +inf for l2). ``queries`` is
        ``(n, dim)`` or ``(dim,)``; ``allowed_ids`` restricts the candidates (a metadata filter)."""
        if k <= 0:
            raise InvalidInput(f"k must be positive, got {k}")
        q = check_vectors(queries, self.dim, "queries")
        allowed = allowed_array(allowed_ids)
        with self._lock:
            if self._index is None or len(self) == 0 or (allowed is not None and not len(allowed)):
                return exact_search(
                    q, np.zeros((0, self.dim), np.float32), np.zeros(0, np.int64), k, self.metric
                )
            if (
                allowed is not None
                and self._active != "flat"
                and len(allowed) <= self.exact_filter_max
            ):
                return self._exact_subset(q, allowed, k)
            scores, ids = self._faiss_search(q, k, allowed)
        scores[ids < 0] = pad_value(self.metric)
        return scores, ids

    def _exact_subset(
        self, q: np.ndarray, allowed: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact search over the stored vectors of the ``allowed`` ids (HNSW and IVF)."""
        if self._active == "hnsw":
            pos = np.flatnonzero(np.isin(self._id_map(), allowed))
            ids, vecs = self._stored_vectors(pos)
        else:  # ivf with a hashtable direct map: reconstruct by id; absent ids raise
            present, rows = [], []
            for i in allowed.tolist():
                try:
                    rows.append(self._index.reconstruct(i))
                except RuntimeError:
                    continue
                present.append(i)
            ids = np.asarray(present, dtype=np.int64)
            vecs = np.stack(rows) if rows else np.zeros((0, self.dim), np.float32)
        return exact_search(q, vecs, ids, k, self.metric)

    def _search_params(self, allowed: np.ndarray | None) -> Any:
        """FAISS search parameters: the filter (or the tombstone guard) and the kind's knobs."""
        faiss = load_faiss()
        if allowed is not None:
            sel = faiss.IDSelectorBatch(allowed)
        elif self._active == "hnsw" and self._dead:
            sel = faiss.IDSelectorRange(*_ALL_IDS)
        else:
            sel = None
        # passed as a constructor keyword, the selector is kept alive with the parameters object
        kwargs: dict[str, Any] = {} if sel is None else {"sel": sel}
        if self._active == "hnsw":
            return faiss.SearchParametersHNSW(efSearch=self.ef_search, **kwargs)
        if self._active == "ivf":
            return faiss.SearchParametersIVF(nprobe=self._index.nprobe, **kwargs)
        return faiss.SearchParameters(**kwargs)

    def _faiss_search(
        self, q: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """A FAISS search, on the GPU replica when there is one and FAISS accepts it there."""
        params = self._search_params(allowed)
        if self.device == "cuda" and self._active != "hnsw":
            gpu = self._gpu_replica()
            if gpu is not None:
                try:
                    s, i = (
                        gpu.search(q, k, params=params) if allowed is not None else gpu.search(q, k)
                    )
                    return s, i.astype(np.int64, copy=False)
                except RuntimeError as exc:  # a filter or k FAISS's GPU code does not take
                    logger.debug("GPU search refused (%s); searching on the CPU", exc)
        s, i = self._index.search(q, k, params=params)
        return s, i.astype(np.int64, copy=False)

    def _gpu_replica(self) -> Any:
        """The GPU copy of the index, rebuilt after a change; None if it cannot be made."""
        if not self._gpu_stale:
            return self._gpu
        faiss = load_faiss()
        try:
            self._gpu = faiss.index_cpu_to_all_gpus(self._index)
        except RuntimeError as exc:
            logger.warning(
                "cannot move the %s index to the GPU (%s); searching on the CPU", self._active, exc
            )
            self._gpu = None
        self._gpu_stale = False
        return self._gpu

    # --- writing -------------------------------------------------------------------------------

    def add(self, ids: Sequence[int] | np.ndarray, vectors: np.ndarray) -> None:
        """Store ``vectors`` (n, dim) under ``ids`` (n,); an id already present is replaced."""
        id_arr, x = check_additions(ids, vectors, self.dim)
        if not len(id_arr):
            return
        with self._lock:
            self._remove_locked(id_arr)
            if self._index is None:
                self._index = self._train_ivf(x)
            if self.kind == "auto" and self._active == "flat" and self.device == "cpu":
                if len(self) + len(x) >= self.auto_hnsw_threshold:
                    self._rebuild_locked("hnsw")
            self._add_batches(id_arr, x)
            self._gpu_stale = True

    def _add_batches(self, ids: np.ndarray, x: np.ndarray, batch: int = 65_536) -> None:
        """Add to the FAISS index in batches (with a progress bar for big adds)."""
        for start in tqdm(
            range(0, len(ids), batch),
            desc=f"dense add ({self._active})",
            disable=len(ids) <= 2 * batch,
            leave=False,
        ):
            self._index.add_with_ids(x[start : start + batch], ids[start : start + batch])

    def remove(self, ids: Iterable[int] | np.ndarray) -> int:
        """Remove ``ids`` (unknown ids are ignored); returns how many were removed."""
        id_arr = check_ids(ids)
        with self._lock:
            n = self._remove_locked(id_arr)
            if n:
                self._gpu_stale = True
            return n

    def _remove_locked(self, id_arr: np.ndarray) -> int:
        """Remove ``id_arr`` (HNSW: tombstone, rebuilding past ``rebuild_ratio``); how many."""
        if self._index is None or not len(id_arr) or not self._index.ntotal:
            return 0
        faiss = load_faiss()
        if self._active == "flat":
            return int(self._index.remove_ids(faiss.IDSelectorBatch(id_arr)))
        if self._active == "ivf":  # a hashtable direct map only removes through an array
            return int(self._index.remove_ids(faiss.IDSelectorArray(id_arr)))
        id_map = self._id_map().copy()
        hit = np.flatnonzero(np.isin(id_map, id_arr))
        if not len(hit):
            return 0
        id_map[hit] = -1 - hit  # negative, unique sentinels
        faiss.copy_array_to_vector(id_map, self._index.id_map)
        self._dead += len(hit)
        if self._dead > self.rebuild_ratio * self._index.ntotal:
            self._rebuild_locked("hnsw")
        return len(hit)

    def _rebuild_locked(self, kind: str) -> None:
        """Rebuild as ``kind`` from the live stored vectors (drops HNSW tombstones)."""
        ids, vecs = self._stored_vectors()
        logger.info("rebuilding the dense index as %s over %d vectors", kind, len(ids))
        self._active = kind
        self._index = self._empty(kind)
        self._dead = 0
        if len(ids):
            self._add_batches(ids, vecs)
        self._gpu_stale = True

    # --- persistence ---------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the CPU index to the file ``path`` (``faiss.write_index`` into a temporary
        sibling, fsync, rename over), so a crash leaves the previous file intact."""
        faiss = load_faiss()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            if self._index is None:
                raise InvalidInput(
                    "an IVF index is not trained until its first add; nothing to save"
                )
            atomic_replace(path, lambda tmp: faiss.write_index(self._index, str(tmp)))
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        device: str = "auto",
        kind: str | None = None,
        **options: Any,
    ) -> DenseIndex:
        """Read an index written by :meth:`save`. The metric and the active kind come from the
        file; ``kind="auto"`` lets a flat index still switch to HNSW as it grows (``None`` keeps
        the stored kind fixed). ``options`` are other constructor keywords (``ef_search``...)."""
        faiss = load_faiss()
        path = Path(path)
        if not path.is_file():
            raise NotFound(f"no dense index at {path}")
        index = faiss.read_index(str(path))
        metric = "ip" if index.metric_type == faiss.METRIC_INNER_PRODUCT else "l2"
        if isinstance(index, faiss.IndexIDMap2):
            stored, dead = "flat", 0
        elif isinstance(index, faiss.IndexIDMap):
            stored = "hnsw"
            dead = int((faiss.vector_to_array(index.id_map) < 0).sum())
            inner = faiss.downcast_index(index.index)
            options.setdefault("ef_search", int(inner.hnsw.efSearch))
            options.setdefault("hnsw_m", int(inner.hnsw.nb_neighbors(1)))
        elif isinstance(index, faiss.IndexIVFFlat):
            stored, dead = "ivf", 0
            options.setdefault("nprobe", int(index.nprobe))
            options.setdefault("nlist", int(index.nlist))
        else:
            raise InvalidInput(f"{path} holds a {type(index).__name__}, not a DenseIndex")
        if kind not in (None, "auto", stored):
            raise InvalidInput(f"{path} holds a {stored} index, not {kind}")
        out = cls(index.d, metric=metric, kind=stored, device=device, **options)
        out._index, out._dead = index, dead
        if kind == "auto":
            out.kind = "auto"
        return out
