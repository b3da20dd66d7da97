"""The rerank stage: a cross-encoder re-scores the best ``depth`` hits of a search and orders them
by its score.

:func:`rerank_hits` is pure: it takes a :class:`~retriever.hybrid.SearchResult` and returns a new one.
The first ``depth`` hits are scored as (query, title + chunk text) pairs and sorted by that score (ties
keep their fused order); the hits past ``depth`` follow in their fused order; ranks are numbered
again from 1. With ``weight`` below 1 the order blends the two stages instead:
``weight * mm(rerank score) + (1 - weight) * mm(fused score)``, each min-max normalised over the
re-scored hits (:func:`blend`); 1 (the default) orders by the reranker alone, 0 keeps the fused
order. Each re-scored hit carries its ``rerank_score``, and ``timings_ms`` gains
``rerank_ms`` (also added to ``total_ms``). The reranker itself is
:class:`retriever.cross_encoder.Reranker`, or anything with its ``score`` method.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from common.errors import InvalidInput
from index.collection import index_text
from retriever.hybrid import SearchResult

MAX_RERANK_DEPTH = 1000
DEFAULT_RERANK_DEPTH = 50
DEFAULT_RERANK_WEIGHT = 1.0  # a reranker without a weight of its own: the reranker's order
RERANK_KEYS = frozenset({"model", "depth", "weight"})


class Scorer(Protocol):
    """A cross-encoder: one relevance score per (query, text) pair, in input order. It may carry
    ``weight``, the rerank weight it recommends (:func:`scorer_weight`)."""

    def score(self, query: str, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray: ...


@dataclass(frozen=True)
class RerankSettings:
    """Which reranker re-scores the hits (``model``: a name the engine allows) and how many of the
    best hits it re-scores (``depth``, 1 to ``MAX_RERANK_DEPTH``), and the reranker's share of the
    final order (``weight``, 0 to 1; see :func:`blend`). ``weight`` None: the reranker's own
    (the one its ``config.json`` recommends, else ``DEFAULT_RERANK_WEIGHT``)."""

    model: str
    depth: int = DEFAULT_RERANK_DEPTH
    weight: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise InvalidInput("rerank model must be a reranker name")
        if not isinstance(self.depth, int) or isinstance(self.depth, bool) or not 1 <= self.depth <= MAX_RERANK_DEPTH:
            raise InvalidInput(f"rerank depth must be an integer between 1 and {MAX_RERANK_DEPTH}, got {self.depth!r}")
        if self.weight is not None and not is_weight(self.weight):
            raise InvalidInput(f"rerank weight must be a number between 0 and 1, got {self.weight!r}")

    @classmethod
    def from_mapping(cls, value: Mapping[str, Any]) -> RerankSettings:
        """``{"model": name, "depth": n}`` (``depth`` optional) into settings; InvalidInput for
        anything else, a missing or null ``model`` included."""
        if not isinstance(value, Mapping):
            raise InvalidInput(f'rerank must be an object {{"model": name, "depth": n}}, got {value!r}')
        unknown = set(value) - RERANK_KEYS
        if unknown:
            raise InvalidInput(f"unknown rerank settings {sorted(unknown)}; known: {sorted(RERANK_KEYS)}")
        if value.get("model") is None:
            raise InvalidInput("rerank needs a model")
        return cls(value["model"], value.get("depth", DEFAULT_RERANK_DEPTH), value.get("weight"))

    def to_dict(self) -> dict[str, Any]:
        """The settings as stored and shown; ``weight`` only where one was given (a collection's
        ``rerank`` setting reads as it did before weights existed, and follows its reranker's own)."""
        out: dict[str, Any] = {"model": self.model, "depth": self.depth}
        if self.weight is not None:
            out["weight"] = float(self.weight)
        return out


def is_weight(value: Any) -> bool:
    """Whether ``value`` is a rerank weight: a number (not a bool) from 0 to 1."""
    return not isinstance(value, bool) and isinstance(value, int | float) and 0.0 <= value <= 1.0


def scorer_weight(scorer: Scorer) -> float:
    """The rerank weight ``scorer`` recommends (``Reranker.weight``, from its ``config.json``), else
    ``DEFAULT_RERANK_WEIGHT``: what a rerank that gives no weight uses."""
    return float(getattr(scorer, "weight", DEFAULT_RERANK_WEIGHT))


def _minmax(x: np.ndarray) -> np.ndarray:
    span = float(x.max() - x.min()) if x.size else 0.0
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)


def blend(rerank: np.ndarray, fused: np.ndarray, weight: float) -> np.ndarray:
    """The key the re-scored hits are ordered by: ``weight`` of the reranker's scores and
    ``1 - weight`` of the fused ones, each min-max normalised over these hits (the two scales
    differ: logits against RRF sums or cosines). ``weight`` 1 returns ``rerank`` itself."""
    rerank = np.asarray(rerank, dtype=np.float64)
    if weight >= 1.0:
        return rerank
    return weight * _minmax(rerank) + (1.0 - weight) * _minmax(np.asarray(fused, dtype=np.float64))


def rerank_hits(
    found: SearchResult, scorer: Scorer, query: str, depth: int, *, k: int | None = None,
    weight: float | None = None,
) -> SearchResult:
    """``found`` with its first ``depth`` hits re-scored by ``scorer`` and sorted by that score
    (best first, ties in fused order; by :func:`blend` of it and the fused score when ``weight``
    is below 1; None: :func:`scorer_weight`), the rest after them in fused order, cut to ``k``
    hits (all when None). Each
    re-scored hit's ``rerank_score`` is the reranker's own score. ``found`` is not changed."""
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise InvalidInput(f"rerank depth must be a positive integer, got {depth!r}")
    t = time.perf_counter()
    head, tail = found.hits[:depth], found.hits[depth:]
    # The pairs hold what the indexes and the reranker's training saw of a chunk: title + text.
    scores = np.asarray(scorer.score(query, [index_text(h.title, h.text) for h in head]), dtype=np.float64)
    if scores.shape != (len(head),):
        raise ValueError(f"the reranker returned {scores.shape} scores for {len(head)} texts")
    if weight is None:
        weight = scorer_weight(scorer)
    key = blend(scores, np.array([float(h.scores.get("fused") or 0.0) for h in head]), weight) if len(head) else scores
    order = np.argsort(-key, kind="stable")  # stable: equal scores keep the fused order
    rescored = [dataclasses.replace(head[i], rerank_score=float(scores[i])) for i in order]
    ordered = [*rescored, *(dataclasses.replace(h) for h in tail)][:k]
    for rank, hit in enumerate(ordered, 1):
        hit.rank = rank
    rerank_ms = (time.perf_counter() - t) * 1e3
    timings = {**found.timings_ms, "rerank_ms": rerank_ms}
    timings["total_ms"] = found.timings_ms.get("total_ms", 0.0) + rerank_ms
    return SearchResult(ordered, timings)
