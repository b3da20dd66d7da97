"""Exact (brute-force) cosine retrieval over in-memory vectors, as a run ``{qid: {doc_id: score}}``:
what validation during encoder training and the encoder benchmark rank with, no index needed."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from index.topk import top_k


def dense_run(
    query_vecs: np.ndarray, doc_vecs: np.ndarray, qids: Sequence[str], doc_ids: Sequence[str], k: int = 100
) -> dict[str, dict[str, float]]:
    """Brute-force cosine retrieval: ``{qid: {doc_id: score}}`` with each query's top ``k`` docs."""
    q = query_vecs / np.maximum(np.linalg.norm(query_vecs, axis=1, keepdims=True), 1e-12)  # (Q, D)
    d = doc_vecs / np.maximum(np.linalg.norm(doc_vecs, axis=1, keepdims=True), 1e-12)  # (N, D)
    scores = q @ d.T  # (Q, N)
    top = top_k(scores, k)  # (Q, k) best first
    return {qid: {doc_ids[j]: float(scores[i, j]) for j in top[i]} for i, qid in enumerate(qids)}
