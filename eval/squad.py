"""SQuAD v1.1 / v2.0 aggregate scores as the official evaluation script reports them (exact match
and token F1 percentages, per answerable and unanswerable group). The file format and the
per-answer comparison are :mod:`common.squad`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

from common.errors import InvalidInput
from common.squad import SquadExample, exact_match, f1_score, gold_answers

logger = logging.getLogger(__name__)

__all__ = ["squad_scores"]


def _pct(values: Sequence[float]) -> float:
    return 100.0 * math.fsum(values) / len(values)


def squad_scores(
    predictions: Mapping[str, str], examples: Sequence[SquadExample]
) -> dict[str, float]:
    """Official-style aggregate scores over ``examples`` for ``predictions`` ({qid: answer text}).

    Returns ``em`` and ``f1`` (percentages, 0-100) and ``total``; ``has_ans_em``/``has_ans_f1``/
    ``has_ans_total`` and ``no_ans_em``/``no_ans_f1``/``no_ans_total`` (the metric keys only when
    that group is non-empty, like the official script); ``missing``: examples without a
    prediction, which score 0. Predictions for unknown ids are ignored (logged).
    """
    if not examples:
        raise InvalidInput("no SQuAD examples to score")
    em: dict[str, float] = {}
    f1: dict[str, float] = {}
    has_ans: list[str] = []
    no_ans: list[str] = []
    missing = 0
    for ex in examples:
        golds = gold_answers(ex)
        (has_ans if golds != [""] else no_ans).append(ex.qid)
        if ex.qid not in predictions:
            missing += 1
            em[ex.qid] = f1[ex.qid] = 0.0
            continue
        pred = predictions[ex.qid]
        if not isinstance(pred, str):
            raise InvalidInput(
                f"prediction for {ex.qid!r} must be a string, got {type(pred).__name__}"
            )
        em[ex.qid] = exact_match(pred, golds)
        f1[ex.qid] = f1_score(pred, golds)
    if missing:
        logger.warning(
            "%d of %d questions have no prediction; they score 0", missing, len(examples)
        )
    extra = len(set(predictions) - set(em))
    if extra:
        logger.warning(
            "%d predictions name questions that are not among the examples; ignored", extra
        )

    scores: dict[str, float] = {
        "em": _pct(list(em.values())),
        "f1": _pct(list(f1.values())),
        "total": len(examples),
    }
    for prefix, qids in (("has_ans", has_ans), ("no_ans", no_ans)):
        if qids:
            scores[f"{prefix}_em"] = _pct([em[q] for q in qids])
            scores[f"{prefix}_f1"] = _pct([f1[q] for q in qids])
        scores[f"{prefix}_total"] = len(qids)
    scores["missing"] = missing
    return scores
