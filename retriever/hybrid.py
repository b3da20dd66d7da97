"""Search over one collection: BM25, dense, or both fused.

Each side returns up to ``depth`` candidates (metadata filters applied before the cut, inside each
index); fusion (:mod:`retriever.fusion`) combines them; the top ``k`` are hydrated from the store
with their text, document id, offsets and every score (bm25, dense, fused).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.errors import InvalidInput
from index.collection import CollectionIndex
from index.store import Store
from retriever.fusion import check_weights, convex_combination, reciprocal_rank_fusion

MODES = ("bm25", "dense", "hybrid")
FUSIONS = ("rrf", "convex")
MAX_K = 1000
MAX_DEPTH = 10_000


def _finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class SearchSettings:
    """How hybrid search fuses: RRF (``rrf_k``) or a convex combination of min-max normalised
    scores, ``weights`` = (bm25, dense), ``depth`` candidates per side (at least ``k``)."""

    fusion: str = "rrf"
    rrf_k: float = 60.0
    weights: tuple[float, float] = (1.0, 1.0)
    depth: int = 100

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise InvalidInput(f"unknown fusion {self.fusion!r}; choose from {FUSIONS}")
        if not isinstance(self.depth, int) or isinstance(self.depth, bool) or not 1 <= self.depth <= MAX_DEPTH:
            raise InvalidInput(f"depth must be an integer between 1 and {MAX_DEPTH}, got {self.depth!r}")
        if not _finite_number(self.rrf_k) or self.rrf_k <= 0:
            raise InvalidInput(f"rrf_k must be a finite number > 0, got {self.rrf_k!r}")
        if not all(_finite_number(w) for w in self.weights):
            raise InvalidInput(f"weights must be two finite numbers (bm25, dense), got {self.weights!r}")
        check_weights(self.weights, 2)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> SearchSettings:
        kw = {k: settings[k] for k in ("fusion", "rrf_k", "depth") if k in settings}
        if "weights" in settings:
            kw["weights"] = tuple(settings["weights"])
        return cls(**kw)


@dataclass
class Hit:
    """One retrieved chunk. ``scores`` holds ``bm25``, ``dense`` (None where that side did not
    return the chunk) and ``fused`` (the score the ranking used); ``rerank_score`` is the
    cross-encoder's score where the rerank stage (:mod:`retriever.rerank`) re-scored the hit."""

    rank: int
    chunk_id: int
    doc_id: str
    title: str
    text: str
    char_start: int
    char_end: int
    metadata: dict[str, Any]
    scores: dict[str, float | None] = field(default_factory=dict)
    rerank_score: float | None = None

    @property
    def score(self) -> float:
        """The score the ranking used: the reranker's where it re-scored the hit, else the fused one."""
        if self.rerank_score is not None:
            return self.rerank_score
        return float(self.scores["fused"] or 0.0)


@dataclass
class SearchResult:
    hits: list[Hit]
    timings_ms: dict[str, float]


def check_query(query: str, k: int, mode: str) -> None:
    if not isinstance(query, str) or not query.strip():
        raise InvalidInput("the query is empty")
    if mode not in MODES:
        raise InvalidInput(f"unknown mode {mode!r}; choose from {MODES}")
    if not 1 <= k <= MAX_K:
        raise InvalidInput(f"k must be between 1 and {MAX_K}, got {k}")


def search(
    index: CollectionIndex,
    store: Store,
    encode_query: Callable[[list[str]], np.ndarray],
    query: str,
    *,
    k: int = 10,
    mode: str = "hybrid",
    filters: Mapping[str, Any] | None = None,
    settings: SearchSettings | None = None,
) -> SearchResult:
    """Retrieve the ``k`` best chunks of ``index``'s collection for ``query``."""
    check_query(query, k, mode)
    settings = settings or SearchSettings()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    allowed = None
    if filters:
        allowed = np.fromiter(store.filter_chunk_ids(index.name, filters), dtype=np.int64)
        timings["filter_ms"] = (time.perf_counter() - t0) * 1e3
        if len(allowed) == 0:
            return SearchResult([], timings)
    depth = max(k, settings.depth) if mode == "hybrid" else k
    sparse: list[tuple[int, float]] = []
    dense: list[tuple[int, float]] = []
    if mode in ("bm25", "hybrid"):
        t = time.perf_counter()
        ids, scores = index.bm25.search(query, depth, allowed_ids=allowed)
        sparse = list(zip(ids.tolist(), scores.tolist(), strict=True))
        timings["bm25_ms"] = (time.perf_counter() - t) * 1e3
    if mode in ("dense", "hybrid"):
        t = time.perf_counter()
        q = encode_query([query])  # (1, dim)
        timings["encode_ms"] = (time.perf_counter() - t) * 1e3
        t = time.perf_counter()
        scores, ids = index.dense.search(q, depth, allowed_ids=allowed)
        dense = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
        timings["dense_ms"] = (time.perf_counter() - t) * 1e3
    t = time.perf_counter()
    if mode == "bm25":
        fused = sparse[:k]
    elif mode == "dense":
        fused = dense[:k]
    elif settings.fusion == "rrf":
        fused = reciprocal_rank_fusion([sparse, dense], k=settings.rrf_k, weights=settings.weights, limit=k)
    else:
        fused = convex_combination([sparse, dense], weights=settings.weights, normalization="minmax", limit=k)
    timings["fusion_ms"] = (time.perf_counter() - t) * 1e3
    t = time.perf_counter()
    bm25_of, dense_of = dict(sparse), dict(dense)
    records = {r.id: r for r in store.get_chunks([cid for cid, _ in fused])}
    hits = []
    for cid, score in fused:
        r = records.get(cid)
        if r is None:  # deleted between search and hydration
            continue
        hits.append(
            Hit(
                rank=len(hits) + 1,
                chunk_id=cid,
                doc_id=r.external_id,
                title=r.title,
                text=r.text,
                char_start=r.char_start,
                char_end=r.char_end,
                metadata=dict(r.metadata),
                scores={"bm25": bm25_of.get(cid), "dense": dense_of.get(cid), "fused": float(score)},
            )
        )
    timings["hydrate_ms"] = (time.perf_counter() - t) * 1e3
    timings["total_ms"] = (time.perf_counter() - t0) * 1e3
    return SearchResult(hits, timings)
