"""Brute-force top-k: the positions of the k highest scores, best first, by ``argpartition`` and
a sort of the few survivors, with ties broken by id so the answer does not depend on where an item
sits in its array. The BM25 index, exact vector search and the encoder tools all rank with it."""

from __future__ import annotations

import numpy as np


def top_k(scores: np.ndarray, k: int, ids: np.ndarray | None = None) -> np.ndarray:
    """Positions of the ``k`` highest ``scores`` (all of them when there are fewer), ordered by
    score descending, then by ``ids`` ascending (by position when ``ids`` is None).

    ``scores`` is ``(n,)``, giving ``(min(k, n),)`` positions, or ``(q, n)``, giving
    ``(q, min(k, n))``: one ranking per row. ``ids`` is ``(n,)``, the id of each column.
    Scores must not be NaN.
    """
    scores = np.asarray(scores)
    if scores.ndim == 2:
        m = max(0, min(k, scores.shape[1]))
        out = np.empty((scores.shape[0], m), dtype=np.int64)
        for r in range(scores.shape[0]):
            out[r] = _top_k_row(scores[r], k, ids)
        return out
    if scores.ndim != 1:
        raise ValueError(f"scores must be 1- or 2-dimensional, got shape {scores.shape}")
    return _top_k_row(scores, k, ids)


def _top_k_row(scores: np.ndarray, k: int, ids: np.ndarray | None) -> np.ndarray:
    """:func:`top_k` of one row of scores."""
    n = len(scores)
    if k <= 0 or not n:
        return np.zeros(0, dtype=np.int64)
    if n > k:
        kth = scores[np.argpartition(-scores, k - 1)[k - 1]]
        pos = np.flatnonzero(scores >= kth)  # every item tied with the k-th stays in the running
    else:
        pos = np.arange(n)
    tie = pos if ids is None else ids[pos]
    return pos[np.lexsort((tie, -scores[pos]))[:k]].astype(np.int64, copy=False)
