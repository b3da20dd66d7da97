"""Exact vector search in numpy, and the argument checks every vector index shares.

:func:`exact_search` answers the approximate FAISS kinds' small filtered searches exactly, and
:class:`BruteForceIndex` is the numpy twin of :class:`~index.dense.DenseIndex` with the same API,
which tests hold FAISS to. Scores follow FAISS: inner products for ``metric="ip"`` (higher is
better), squared L2 distances for ``metric="l2"`` (lower is better); missing results are padded
with id -1 and score ``-inf`` (ip) or ``+inf`` (l2).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from common.errors import InvalidInput
from index.topk import top_k

METRICS = ("ip", "l2")


def check_ids(ids: Iterable[int] | np.ndarray) -> np.ndarray:
    """``ids`` as a flat int64 array; ``InvalidInput`` for non-integers or negative ids."""
    arr = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids))
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise InvalidInput(f"ids must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False).reshape(-1)
    if arr.size and arr.min() < 0:
        raise InvalidInput("ids must be >= 0")
    return arr


def check_vectors(vectors: np.ndarray, dim: int, what: str = "vectors") -> np.ndarray:
    """``vectors`` as a C-contiguous float32 ``(n, dim)`` array (one ``(dim,)`` vector becomes a
    row); ``InvalidInput`` for another shape or a NaN or infinity."""
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim == 1:
        x = x.reshape(1, -1)
    if x.ndim != 2 or x.shape[1] != dim:
        raise InvalidInput(f"{what} must have shape (n, {dim}), got {np.shape(vectors)}")
    if not np.isfinite(x).all():
        raise InvalidInput(f"{what} contain NaN or infinity")
    return np.ascontiguousarray(x)


def check_additions(ids: Sequence[int] | np.ndarray, vectors: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The ids and vectors of one ``add()`` call, checked: as many ids as vectors, no id twice."""
    id_arr, x = check_ids(ids), check_vectors(vectors, dim)
    if len(id_arr) != len(x):
        raise InvalidInput(f"{len(id_arr)} ids for {len(x)} vectors")
    if len(np.unique(id_arr)) != len(id_arr):
        raise InvalidInput("duplicate ids in one add() call")
    return id_arr, x


def allowed_array(allowed_ids: Iterable[int] | np.ndarray | None) -> np.ndarray | None:
    """A search filter as sorted, distinct int64 ids (None: no filter)."""
    if allowed_ids is None:
        return None
    if isinstance(allowed_ids, (set, frozenset)):
        allowed_ids = np.fromiter(allowed_ids, dtype=np.int64, count=len(allowed_ids))
    arr = np.asarray(allowed_ids if isinstance(allowed_ids, np.ndarray) else list(allowed_ids))
    return np.unique(arr.astype(np.int64, copy=False).reshape(-1))


def pad_value(metric: str) -> float:
    """The score of a missing result: the worst there is under ``metric``."""
    return -math.inf if metric == "ip" else math.inf


def exact_search(
    queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k in numpy: ``(scores (n, k) float32, ids (n, k) int64)``, padded with -1
    ids and infinite scores; ties go to the smaller id."""
    n = len(queries)
    out_s = np.full((n, k), pad_value(metric), dtype=np.float32)
    out_i = np.full((n, k), -1, dtype=np.int64)
    if not len(ids) or not n:
        return out_s, out_i
    sims = queries @ vectors.T  # (n, N)
    if metric == "l2":
        # the expansion FAISS uses: |q|^2 - 2 q.x + |x|^2
        sims = (queries**2).sum(1)[:, None] - 2.0 * sims + (vectors**2).sum(1)[None, :]
        ranked = -sims  # nearest first
    else:
        ranked = sims
    best = top_k(ranked, k, ids)  # (n, m)
    m = best.shape[1]
    out_i[:, :m] = ids[best]
    out_s[:, :m] = np.take_along_axis(sims, best, axis=1)
    return out_s, out_i


class BruteForceIndex:
    """Numpy twin of :class:`~index.dense.DenseIndex` (exact, CPU): the reference the FAISS paths
    are tested against, and a fallback for tiny collections."""

    def __init__(self, dim: int, metric: str = "ip") -> None:
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose from {METRICS}")
        self.dim = dim
        self.metric = metric
        self._ids = np.zeros(0, dtype=np.int64)
        self._vectors = np.zeros((0, dim), dtype=np.float32)

    def __len__(self) -> int:
        return len(self._ids)

    def ids(self) -> np.ndarray:
        """The stored ids, ascending."""
        return np.sort(self._ids)

    def add(self, ids: Sequence[int] | np.ndarray, vectors: np.ndarray) -> None:
        """Store ``vectors`` under ``ids``; an id already present is replaced."""
        id_arr, x = check_additions(ids, vectors, self.dim)
        self.remove(id_arr)
        self._ids = np.concatenate([self._ids, id_arr])
        self._vectors = np.concatenate([self._vectors, x])

    def remove(self, ids: Iterable[int] | np.ndarray) -> int:
        """Drop ``ids``; unknown ids are ignored. Returns how many were removed."""
        gone = np.isin(self._ids, check_ids(ids))
        self._ids, self._vectors = self._ids[~gone], self._vectors[~gone]
        return int(gone.sum())

    def search(
        self,
        queries: np.ndarray,
        k: int,
        allowed_ids: Iterable[int] | np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores (n, k) float32, ids (n, k) int64)``; see :meth:`DenseIndex.search`."""
        if k <= 0:
            raise InvalidInput(f"k must be positive, got {k}")
        q = check_vectors(queries, self.dim, "queries")
        allowed = allowed_array(allowed_ids)
        ids, vecs = self._ids, self._vectors
        if allowed is not None:
            keep = np.isin(ids, allowed)
            ids, vecs = ids[keep], vecs[keep]
        return exact_search(q, vecs, ids, k, self.metric)
