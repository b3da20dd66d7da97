"""Fusion of several result lists (sparse, dense, ...) into one ranking.

Each input list is either a ranking, a sequence of ``(id, score)`` best first (the position is
the rank), or a mapping ``{id: score}`` (ranked by score descending). Ids are any hashable
(int64 row ids in practice). An id repeated within one list counts once, at its first (best)
position. Output is ``[(id, fused_score), ...]`` best first; equal fused scores keep the order
in which ids were first met (list 0 first, then by position), so results never depend on hashing.

All functions are pure: inputs are never modified.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Hashable, Mapping, Sequence
from typing import Literal, TypeVar

from common.errors import InvalidInput

__all__ = ["FUSION_METHODS", "convex_combination", "fuse", "reciprocal_rank_fusion"]

IdT = TypeVar("IdT", bound=Hashable)
ResultList = Sequence[tuple[IdT, float]] | Mapping[IdT, float]
Normalization = Literal["minmax", "zscore", "none"]
_NORMALIZATIONS: tuple[str, ...] = ("minmax", "zscore", "none")


def _as_ranked(results: ResultList[IdT]) -> list[tuple[IdT, float]]:
    """Unique ``(id, score)`` pairs best first; a mapping is sorted by score (stable on ties)."""
    if isinstance(results, Mapping):
        pairs = [(doc_id, float(score)) for doc_id, score in results.items()]
        _check_scores(pairs)
        return sorted(pairs, key=lambda p: -p[1])
    if isinstance(results, (str, bytes)):
        raise InvalidInput("a result list must be a sequence of (id, score) pairs or a mapping")
    pairs = []
    seen: set[IdT] = set()
    for item in results:
        try:
            doc_id, score = item
        except (TypeError, ValueError):
            raise InvalidInput(f"expected an (id, score) pair, got {item!r}") from None
        if doc_id in seen:
            continue
        seen.add(doc_id)
        pairs.append((doc_id, float(score)))
    _check_scores(pairs)
    return pairs


def _check_scores(pairs: Sequence[tuple[Hashable, float]]) -> None:
    for doc_id, score in pairs:
        if math.isnan(score):
            raise InvalidInput(f"score of {doc_id!r} is NaN")


def check_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0] * n
    ws = [float(w) for w in weights]
    if len(ws) != n:
        raise InvalidInput(f"got {len(ws)} weights for {n} result lists")
    for w in ws:
        if not math.isfinite(w) or w < 0:
            raise InvalidInput(f"weights must be finite and non-negative, got {w!r}")
    return ws


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise InvalidInput(f"limit must be a non-negative integer or None, got {limit!r}")


def _ordered(fused: dict[IdT, float], limit: int | None) -> list[tuple[IdT, float]]:
    # dict order is first-seen order and sorted() is stable, so ties keep first-seen order.
    ranked = sorted(fused.items(), key=lambda p: -p[1])
    return ranked if limit is None else ranked[:limit]


def reciprocal_rank_fusion(
    rankings: Sequence[ResultList[IdT]],
    k: float = 60,
    weights: Sequence[float] | None = None,
    limit: int | None = None,
) -> list[tuple[IdT, float]]:
    """Reciprocal rank fusion (Cormack et al., 2009): ``score(d) = sum_i w_i / (k + rank_i(d))``.

    Ranks start at 1; a list that does not hold ``d`` adds nothing. Scores inside each list
    matter only through the order they give. ``weights`` default to 1 per list.
    """
    if isinstance(k, bool) or not math.isfinite(k) or k < 0:
        raise InvalidInput(f"k must be a finite non-negative number, got {k!r}")
    _check_limit(limit)
    ws = check_weights(weights, len(rankings))
    fused: dict[IdT, float] = {}
    for ranking, w in zip(rankings, ws, strict=True):
        for rank, (doc_id, _) in enumerate(_as_ranked(ranking), start=1):
            fused[doc_id] = fused.get(doc_id, 0.0) + w / (k + rank)
    return _ordered(fused, limit)


def _normalize(scores: list[float], method: str) -> tuple[list[float], float]:
    """Normalised scores and the value given to documents missing from the list."""
    if method == "none":
        return scores, min(scores)
    if method == "minmax":
        lo, hi = min(scores), max(scores)
        if hi == lo:  # one document, or all tied: every listed document is the list's best
            return [1.0] * len(scores), 0.0
        return [(s - lo) / (hi - lo) for s in scores], 0.0
    if method == "zscore":
        mean = statistics.fmean(scores)
        std = statistics.pstdev(scores)
        if std == 0.0:
            return [0.0] * len(scores), 0.0
        z = [(s - mean) / std for s in scores]
        return z, min(z)
    raise AssertionError(method)  # convex_combination validates the name


def convex_combination(
    score_lists: Sequence[ResultList[IdT]],
    weights: Sequence[float] | None = None,
    normalization: Normalization = "minmax",
    limit: int | None = None,
) -> list[tuple[IdT, float]]:
    """Weighted sum of per-list normalised scores: ``score(d) = sum_i w_i * norm_i(d)``.

    ``normalization``: ``"minmax"`` maps each list to [0, 1] (a list of equal scores maps to 1),
    ``"zscore"`` to (s - mean) / std (population std; 0 when constant), ``"none"`` keeps raw
    scores. A document missing from a list gets that list's lowest normalised value: 0 for
    minmax, the lowest z-score, or the lowest raw score. ``weights`` default to 1 per list
    (use weights summing to 1 for a convex combination proper). Infinite scores are rejected.
    """
    if normalization not in _NORMALIZATIONS:
        raise InvalidInput(
            f"unknown normalization {normalization!r}; expected one of {', '.join(_NORMALIZATIONS)}"
        )
    _check_limit(limit)
    ws = check_weights(weights, len(score_lists))
    lists = [_as_ranked(s) for s in score_lists]
    for pairs in lists:
        for doc_id, score in pairs:
            if not math.isfinite(score):
                raise InvalidInput(f"score of {doc_id!r} is not finite: {score!r}")

    normalized: list[tuple[dict[IdT, float], float]] = []
    order: dict[IdT, None] = {}
    for pairs in lists:
        if not pairs:  # an empty list adds nothing to any document
            normalized.append(({}, 0.0))
            continue
        values, floor = _normalize([s for _, s in pairs], normalization)
        normalized.append((dict(zip((d for d, _ in pairs), values, strict=True)), floor))
        for doc_id, _ in pairs:
            order.setdefault(doc_id, None)

    fused = {
        doc_id: math.fsum(
            w * norm.get(doc_id, floor) for w, (norm, floor) in zip(ws, normalized, strict=True)
        )
        for doc_id in order
    }
    return _ordered(fused, limit)


FUSION_METHODS = {
    "rrf": reciprocal_rank_fusion,
    "reciprocal_rank_fusion": reciprocal_rank_fusion,
    "convex": convex_combination,
    "convex_combination": convex_combination,
}


def fuse(method: str, results: Sequence[ResultList[IdT]], **kwargs) -> list[tuple[IdT, float]]:
    """Fuse ``results`` with a method named ``"rrf"`` or ``"convex"`` (or their full names);
    ``kwargs`` go to that function. Raises ValueError (InvalidInput) on unknown names."""
    fn = FUSION_METHODS.get(method.lower() if isinstance(method, str) else method)
    if fn is None:
        raise InvalidInput(
            f"unknown fusion method {method!r}; expected one of {sorted(FUSION_METHODS)}"
        )
    return fn(results, **kwargs)
