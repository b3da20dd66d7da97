"""Retrieval metrics as pure functions on BEIR-style runs and qrels.

A *run* maps query id -> {doc id: score}; *qrels* map query id -> {doc id: graded relevance}.
Conventions follow trec_eval / pytrec_eval as BEIR uses them:

- Documents are ranked by score descending; equal scores are broken by doc id descending
  (trec_eval's order), so results never depend on dict order.
- A document is relevant when its judgment is >= 1; judgments of 0 (or below) stay in the qrels
  but count as non-relevant and add no gain.
- nDCG uses linear gains (gain = relevance, trec_eval ``ndcg_cut`` and ranx ``ndcg``) with
  log2(rank + 1) discounts; the ideal DCG comes from the qrels.
- Scores are per query over every query in the qrels; a query with no run entry scores 0 and
  is averaged in. Run queries without judgments are ignored.
- ``ignore_identical_ids=True`` (BEIR's default) drops a document whose id equals the query id.

Every function leaves its inputs untouched.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence

from common.errors import InvalidInput

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]

DEFAULT_METRICS: tuple[str, ...] = ("ndcg@10", "recall@100", "mrr@10")

__all__ = [
    "DEFAULT_METRICS",
    "Qrels",
    "Run",
    "evaluate",
    "evaluate_per_query",
    "map_at_k",
    "mean_score",
    "mrr_at_k",
    "ndcg_at_k",
    "parse_metric",
    "precision_at_k",
    "rank_docs",
    "recall_at_k",
]


def rank_docs(scores: Mapping[str, float]) -> list[str]:
    """Doc ids ordered best first: score descending, ties by doc id descending (trec_eval)."""
    items = [(float(score), doc_id) for doc_id, score in scores.items()]
    for score, doc_id in items:
        if math.isnan(score):
            raise InvalidInput(f"score of document {doc_id!r} is NaN")
    items.sort(reverse=True)
    return [doc_id for _, doc_id in items]


# Per-query measures on one ranked list -------------------------------------------------------


def _ndcg(ranked: Sequence[str], judged: Mapping[str, int], k: int | None) -> float:
    gains = sorted((rel for rel in judged.values() if rel > 0), reverse=True)[:k]
    ideal = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
    if ideal == 0.0:
        return 0.0
    dcg = 0.0
    for i, doc_id in enumerate(ranked[:k]):
        rel = judged.get(doc_id, 0)
        if rel > 0:
            dcg += rel / math.log2(i + 2)
    return dcg / ideal


def _recall(ranked: Sequence[str], judged: Mapping[str, int], k: int | None) -> float:
    num_rel = sum(1 for rel in judged.values() if rel > 0)
    if num_rel == 0:
        return 0.0
    return sum(1 for d in ranked[:k] if judged.get(d, 0) > 0) / num_rel


def _precision(ranked: Sequence[str], judged: Mapping[str, int], k: int | None) -> float:
    # trec_eval's P_k divides by k even when fewer than k documents were retrieved.
    depth = len(ranked) if k is None else k
    if depth == 0:
        return 0.0
    return sum(1 for d in ranked[:k] if judged.get(d, 0) > 0) / depth


def _mrr(ranked: Sequence[str], judged: Mapping[str, int], k: int | None) -> float:
    for i, doc_id in enumerate(ranked[:k]):
        if judged.get(doc_id, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def _ap(ranked: Sequence[str], judged: Mapping[str, int], k: int | None) -> float:
    # Divides by all relevant documents, not min(k, R), as trec_eval's map_cut and ranx do.
    num_rel = sum(1 for rel in judged.values() if rel > 0)
    if num_rel == 0:
        return 0.0
    hits = 0
    total = 0.0
    for i, doc_id in enumerate(ranked[:k]):
        if judged.get(doc_id, 0) > 0:
            hits += 1
            total += hits / (i + 1)
    return total / num_rel


_Measure = Callable[[Sequence[str], Mapping[str, int], int | None], float]

_MEASURES: dict[str, _Measure] = {
    "ndcg": _ndcg,
    "recall": _recall,
    "precision": _precision,
    "mrr": _mrr,
    "map": _ap,
}

_ALIASES = {
    "ndcg": "ndcg",
    "ndcg_cut": "ndcg",
    "recall": "recall",
    "r": "recall",
    "precision": "precision",
    "p": "precision",
    "mrr": "mrr",
    "recip_rank": "mrr",
    "map": "map",
    "map_cut": "map",
}

_NAME_RE = re.compile(r"^\s*([a-z_]+?)(?:(?:@|_)(\d+))?\s*$")


def parse_metric(name: str) -> tuple[str, int | None]:
    """Split a metric name into (measure, cutoff): ``"ndcg@10"`` -> ``("ndcg", 10)``.

    Accepts ``ndcg``, ``recall``, ``precision``/``p``, ``mrr``, ``map`` with an optional
    ``@k`` (or trec_eval's ``_k``, e.g. ``ndcg_cut_10``); no cutoff means the whole ranking.
    Raises ValueError (InvalidInput) on anything else.
    """
    match = _NAME_RE.match(name.lower()) if isinstance(name, str) else None
    measure = _ALIASES.get(match.group(1)) if match else None
    if match is None or measure is None:
        known = ", ".join(sorted(_MEASURES))
        raise InvalidInput(f"unknown metric {name!r}; expected one of {known}, optionally with @k")
    cutoff = int(match.group(2)) if match.group(2) is not None else None
    if cutoff is not None and cutoff < 1:
        raise InvalidInput(f"metric {name!r}: the cutoff must be at least 1")
    return measure, cutoff


def _check_k(k: int | None) -> None:
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise InvalidInput(f"k must be a positive integer or None, got {k!r}")


def _rankings(
    run: Run, qrels: Qrels, ignore_identical_ids: bool
) -> Iterable[tuple[str, list[str], Mapping[str, int]]]:
    """(qid, ranked doc ids, judgments) for every query in the qrels."""
    for qid, judged in qrels.items():
        scores = run.get(qid) or {}
        if ignore_identical_ids and qid in scores:
            scores = {d: s for d, s in scores.items() if d != qid}
        yield qid, rank_docs(scores), judged


def _per_query(
    measure: str, run: Run, qrels: Qrels, k: int | None, ignore_identical_ids: bool
) -> dict[str, float]:
    _check_k(k)
    fn = _MEASURES[measure]
    return {
        qid: fn(ranked, judged, k)
        for qid, ranked, judged in _rankings(run, qrels, ignore_identical_ids)
    }


def ndcg_at_k(
    run: Run, qrels: Qrels, k: int | None = 10, *, ignore_identical_ids: bool = True
) -> dict[str, float]:
    """nDCG@k per qrels query, linear gains (trec_eval ``ndcg_cut_k``); ``k=None`` for no cutoff."""
    return _per_query("ndcg", run, qrels, k, ignore_identical_ids)


def recall_at_k(
    run: Run, qrels: Qrels, k: int | None = 100, *, ignore_identical_ids: bool = True
) -> dict[str, float]:
    """Recall@k per qrels query: relevant docs in the top k / all relevant docs (0 if none)."""
    return _per_query("recall", run, qrels, k, ignore_identical_ids)


def precision_at_k(
    run: Run, qrels: Qrels, k: int | None = 10, *, ignore_identical_ids: bool = True
) -> dict[str, float]:
    """P@k per qrels query: relevant docs in the top k / k (trec_eval ``P_k``)."""
    return _per_query("precision", run, qrels, k, ignore_identical_ids)


def mrr_at_k(
    run: Run, qrels: Qrels, k: int | None = 10, *, ignore_identical_ids: bool = True
) -> dict[str, float]:
    """Reciprocal rank of the first relevant doc within the top k, per qrels query (0 if none)."""
    return _per_query("mrr", run, qrels, k, ignore_identical_ids)


def map_at_k(
    run: Run, qrels: Qrels, k: int | None = 100, *, ignore_identical_ids: bool = True
) -> dict[str, float]:
    """Average precision cut at k per qrels query (trec_eval ``map_cut_k``); ``k=None`` for full AP."""
    return _per_query("map", run, qrels, k, ignore_identical_ids)


def mean_score(per_query: Mapping[str, float]) -> float:
    """Arithmetic mean of per-query scores; InvalidInput when there are none."""
    if not per_query:
        raise InvalidInput("cannot average a metric over zero queries (are the qrels empty?)")
    return math.fsum(per_query.values()) / len(per_query)


def evaluate_per_query(
    run: Run,
    qrels: Qrels,
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    ignore_identical_ids: bool = True,
) -> dict[str, dict[str, float]]:
    """Per-query scores, ``{metric name: {qid: score}}``, ranking each query once."""
    if isinstance(metrics, str):
        metrics = (metrics,)
    parsed = {name: parse_metric(name) for name in metrics}
    out: dict[str, dict[str, float]] = {name: {} for name in parsed}
    for qid, ranked, judged in _rankings(run, qrels, ignore_identical_ids):
        for name, (measure, k) in parsed.items():
            out[name][qid] = _MEASURES[measure](ranked, judged, k)
    return out


def evaluate(
    run: Run,
    qrels: Qrels,
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    ignore_identical_ids: bool = True,
) -> dict[str, float]:
    """Mean of each metric over the qrels queries, keyed by the names given.

    >>> evaluate({"q": {"a": 2.0, "b": 1.0}}, {"q": {"b": 1}}, ["mrr@10", "p@1"])
    {'mrr@10': 0.5, 'p@1': 0.0}
    """
    if not qrels:
        raise InvalidInput("qrels are empty: there is nothing to evaluate")
    per_query = evaluate_per_query(run, qrels, metrics, ignore_identical_ids=ignore_identical_ids)
    return {name: mean_score(scores) for name, scores in per_query.items()}
