"""Metrics of retrieval-augmented answering against SQuAD references, as pure functions.

One question answered under one context budget is a :class:`QuestionOutcome`; the functions here
turn outcomes into figures and never mutate their inputs. Every figure is a fraction in [0, 1].

Definitions (also in ``docs/eval.md`` and ``attend bench rag --help``):

- **EM / F1**: the official SQuAD normalisation and scoring (:mod:`eval.squad`), maximum over the
  reference answers. An abstention predicts ``""``; an unanswerable (v2.0) question has the single
  reference ``""``, so only an abstention scores on it. An answer whose text normalises to nothing
  (a lone "." or "the") is still an answer and scores 0 (the official script would credit it on
  an unanswerable question as if it were an abstention).
- **answer rate**: share of questions answered (not abstained).
- **the context contains a reference** (``context_has_answer``): some reference answer, normalised,
  occurs as a whole-word run inside the normalised text of one chunk of the packed context (the
  chunks the generator was given, after the filter and the budget). Never true for an
  unanswerable question.
- **should abstain**: the question has no answer (v2.0) or the context does not contain a
  reference. **Abstention precision**: of the abstentions, the share that should abstain;
  **abstention recall**: of the questions that should abstain, the share that did. Each is
  ``None`` when its denominator is 0.
- **hallucination rate**: answered although the context does not contain a reference (every answer
  to an unanswerable question counts), over all questions.
- **wrong-answer rate**: answered, the context contains a reference, and the answer's F1 is below
  0.5, over all questions. With the **correct-answer rate** (answered, context contains a
  reference, F1 >= 0.5) the three add up to the answer rate.
- **gold in context**: at least one chunk of the question's own paragraph is in the packed context.
- **gold position**: the 1-based place in the packed context of the first chunk of the gold
  paragraph that contains a reference (or, if none does, of the first chunk of the gold paragraph);
  accuracy by position (1, 2, 3, 4, 5+) is computed over answerable questions whose gold
  paragraph is in the context ("lost in the middle", Liu et al. 2023).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from common.squad import normalize_answer

CORRECT_F1 = 0.5  # an answer with at least this F1 counts as correct
POSITION_BUCKETS = ("1", "2", "3", "4", "5+")

__all__ = [
    "CORRECT_F1",
    "POSITION_BUCKETS",
    "QuestionOutcome",
    "abstention_precision_recall",
    "answer_in_text",
    "by_position",
    "context_has_answer",
    "gold_position",
    "outcome_class",
    "p50",
    "position_bucket",
    "should_abstain",
    "summarize",
]


@dataclass(frozen=True)
class QuestionOutcome:
    """What happened to one question under one budget and retrieval mode."""

    qid: str
    answerable: bool
    abstained: bool
    prediction: str  # "" when abstained
    em: float
    f1: float
    context_has_answer: bool
    gold_in_context: bool
    gold_position: int | None  # 1-based place of the gold chunk in the packed context
    context_tokens: int
    generate_ms: float  # context filter + generation
    retrieval_ms: float


def answer_in_text(answers: Iterable[str], text: str) -> bool:
    """Whether any of ``answers``, normalised, occurs as a whole-word run in normalised ``text``.
    Answers that normalise to nothing never match."""
    hay = f" {normalize_answer(text)} "
    for a in answers:
        needle = normalize_answer(a)
        if needle and f" {needle} " in hay:
            return True
    return False


def context_has_answer(answers: Sequence[str], chunk_texts: Iterable[str]) -> bool:
    """Whether one chunk of the context contains a reference answer (see :func:`answer_in_text`).
    An empty ``answers`` (unanswerable) never matches."""
    return bool(answers) and any(answer_in_text(answers, t) for t in chunk_texts)


def gold_position(
    chunk_doc_ids: Sequence[str], chunk_texts: Sequence[str], gold_doc_id: str, answers: Sequence[str]
) -> int | None:
    """1-based place in the context of the first chunk of ``gold_doc_id`` containing a reference,
    else of its first chunk; ``None`` when the gold document is not in the context."""
    first = None
    for i, (doc, text) in enumerate(zip(chunk_doc_ids, chunk_texts, strict=True), 1):
        if doc != gold_doc_id:
            continue
        if answers and answer_in_text(answers, text):
            return i
        if first is None:
            first = i
    return first


def position_bucket(position: int, last: int = 5) -> str:
    """``"1"`` .. ``"4"``, or ``"5+"`` (with ``last=5``) for a 1-based position."""
    if position < 1:
        raise ValueError(f"positions are 1-based, got {position}")
    return f"{last}+" if position >= last else str(position)


def should_abstain(o: QuestionOutcome) -> bool:
    """No answer exists (v2.0) or none is in the provided context."""
    return not o.answerable or not o.context_has_answer


def outcome_class(o: QuestionOutcome) -> str:
    """``abstained``, ``hallucination`` (answered, no reference in the context), ``wrong``
    (answered, reference in the context, F1 < 0.5) or ``correct``."""
    if o.abstained:
        return "abstained"
    if should_abstain(o):
        return "hallucination"
    return "correct" if o.f1 >= CORRECT_F1 else "wrong"


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def abstention_precision_recall(outcomes: Sequence[QuestionOutcome]) -> tuple[float | None, float | None]:
    """(precision, recall) of abstaining against :func:`should_abstain`; ``None`` where undefined."""
    abstained = [o for o in outcomes if o.abstained]
    should = [o for o in outcomes if should_abstain(o)]
    hits = sum(1 for o in abstained if should_abstain(o))
    return _ratio(hits, len(abstained)), _ratio(hits, len(should))


def p50(values: Sequence[float]) -> float | None:
    """The median (linear interpolation), ``None`` for no values."""
    if not values:
        return None
    s = sorted(values)
    mid = (len(s) - 1) / 2
    lo, hi = math.floor(mid), math.ceil(mid)
    return s[lo] + (s[hi] - s[lo]) * (mid - lo)


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def summarize(outcomes: Sequence[QuestionOutcome]) -> dict[str, Any]:
    """The figures of one (budget, mode) cell. Keys: ``n``, ``em``, ``f1``, ``answer_rate``,
    ``hallucination_rate``, ``wrong_answer_rate``, ``correct_answer_rate``, ``abstain_precision``,
    ``abstain_recall``, ``gold_in_context``, ``context_has_answer``, ``mean_context_tokens``,
    ``latency_p50_ms`` (filter + generation), ``retrieval_p50_ms``."""
    n = len(outcomes)
    classes = [outcome_class(o) for o in outcomes]
    precision, recall = abstention_precision_recall(outcomes)
    return {
        "n": n,
        "em": _mean([o.em for o in outcomes]),
        "f1": _mean([o.f1 for o in outcomes]),
        "answer_rate": _ratio(sum(not o.abstained for o in outcomes), n),
        "hallucination_rate": _ratio(classes.count("hallucination"), n),
        "wrong_answer_rate": _ratio(classes.count("wrong"), n),
        "correct_answer_rate": _ratio(classes.count("correct"), n),
        "abstain_precision": precision,
        "abstain_recall": recall,
        "gold_in_context": _ratio(sum(o.gold_in_context for o in outcomes), n),
        "context_has_answer": _ratio(sum(o.context_has_answer for o in outcomes), n),
        "mean_context_tokens": _mean([float(o.context_tokens) for o in outcomes]),
        "latency_p50_ms": p50([o.generate_ms for o in outcomes]),
        "retrieval_p50_ms": p50([o.retrieval_ms for o in outcomes]),
    }


def by_position(outcomes: Sequence[QuestionOutcome], last: int = 5) -> list[dict[str, Any]]:
    """F1, EM and answer rate by the gold chunk's place in the context, over answerable questions
    whose gold paragraph is in the context. One row per bucket (empty buckets have ``n`` 0 and
    ``None`` figures), in order 1, 2, ..., ``last``+."""
    groups: dict[str, list[QuestionOutcome]] = {
        (str(i) if i < last else f"{last}+"): [] for i in range(1, last + 1)
    }
    for o in outcomes:
        if o.answerable and o.gold_position is not None:
            groups[position_bucket(o.gold_position, last)].append(o)
    return [
        {
            "position": bucket,
            "n": len(group),
            "f1": _mean([o.f1 for o in group]),
            "em": _mean([o.em for o in group]),
            "answer_rate": _ratio(sum(not o.abstained for o in group), len(group)),
        }
        for bucket, group in groups.items()
    ]
