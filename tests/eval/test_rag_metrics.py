"""The RAG metrics on hand-made outcomes: every figure checked against a count done by hand."""

from __future__ import annotations

import copy
import math

import pytest

from eval.rag_metrics import (
    QuestionOutcome,
    abstention_precision_recall,
    answer_in_text,
    by_position,
    context_has_answer,
    gold_position,
    outcome_class,
    p50,
    position_bucket,
    should_abstain,
    summarize,
)


def outcome(qid: str, *, answerable=True, abstained=False, f1=0.0, em=0.0, has=True, gold=True, pos=1,
            tokens=100, gen=10.0, ret=1.0) -> QuestionOutcome:
    return QuestionOutcome(
        qid=qid, answerable=answerable, abstained=abstained, prediction="" if abstained else "x", em=em, f1=f1,
        context_has_answer=has, gold_in_context=gold, gold_position=pos if gold else None, context_tokens=tokens,
        generate_ms=gen, retrieval_ms=ret,
    )


# Eight questions, one of each situation:
CASES = [
    outcome("correct", f1=1.0, em=1.0, pos=1),                      # answered right
    outcome("partial", f1=0.6, pos=2),                              # answered, F1 >= 0.5: correct
    outcome("wrong", f1=0.2, pos=3),                                # answered, reference in context, F1 < 0.5
    outcome("halluc-miss", has=False, gold=False),                  # answered, no reference in context
    outcome("halluc-unans", answerable=False, has=False, pos=6),    # answered an unanswerable question
    outcome("abst-good", abstained=True, has=False, gold=False),    # abstained, nothing to find: right call
    outcome("abst-unans", answerable=False, abstained=True, has=False, f1=1.0, em=1.0, pos=5),  # right call, scores 1
    outcome("abst-bad", abstained=True, pos=5),                     # abstained although the answer was there
]


def test_answer_in_text_uses_squad_normalisation_and_whole_words():
    assert answer_in_text(["The Eiffel Tower"], "we saw eiffel tower, at night")
    assert answer_in_text(["1889"], "built in 1889.")
    assert not answer_in_text(["188"], "built in 1889")  # not a whole word
    assert not answer_in_text(["the"], "the tower")  # normalises to nothing
    assert not answer_in_text([], "anything")
    assert context_has_answer(["lava"], ["no", "hot lava flows"])
    assert not context_has_answer([], ["lava"])  # unanswerable: never


def test_gold_position_prefers_the_chunk_with_the_answer():
    docs, texts = ["a", "g", "b", "g"], ["x", "intro of gold", "y", "the answer is 42"]
    assert gold_position(docs, texts, "g", ["42"]) == 4
    assert gold_position(docs, texts, "g", ["absent"]) == 2
    assert gold_position(docs, texts, "g", []) == 2
    assert gold_position(docs, texts, "zzz", ["42"]) is None
    assert [position_bucket(i) for i in (1, 2, 3, 4, 5, 9)] == ["1", "2", "3", "4", "5+", "5+"]
    with pytest.raises(ValueError):
        position_bucket(0)


def test_classes_and_should_abstain():
    classes = {o.qid: outcome_class(o) for o in CASES}
    assert classes == {
        "correct": "correct", "partial": "correct", "wrong": "wrong", "halluc-miss": "hallucination",
        "halluc-unans": "hallucination", "abst-good": "abstained", "abst-unans": "abstained", "abst-bad": "abstained",
    }
    assert [o.qid for o in CASES if should_abstain(o)] == ["halluc-miss", "halluc-unans", "abst-good", "abst-unans"]


def test_summary_by_hand():
    before = copy.deepcopy(CASES)
    s = summarize(CASES)
    assert CASES == before  # inputs untouched
    assert s["n"] == 8
    assert s["answer_rate"] == 5 / 8
    assert s["hallucination_rate"] == 2 / 8
    assert s["wrong_answer_rate"] == 1 / 8
    assert s["correct_answer_rate"] == 2 / 8
    assert math.isclose(s["answer_rate"], s["hallucination_rate"] + s["wrong_answer_rate"] + s["correct_answer_rate"])
    # abstentions: abst-good, abst-unans (should), abst-bad (should not); should-abstain: 4 questions
    p, r = abstention_precision_recall(CASES)
    assert (s["abstain_precision"], s["abstain_recall"]) == (p, r) == (2 / 3, 2 / 4)
    assert math.isclose(s["f1"], (1.0 + 0.6 + 0.2 + 1.0) / 8)
    assert s["em"] == 2 / 8
    assert s["gold_in_context"] == 6 / 8
    assert s["context_has_answer"] == 4 / 8
    assert s["mean_context_tokens"] == 100.0


def test_undefined_figures_are_none():
    answered = [outcome("a", f1=1.0)]
    p, r = abstention_precision_recall(answered)
    assert p is None and r is None  # no abstentions, nothing should be abstained on
    empty = summarize([])
    assert empty["n"] == 0 and empty["f1"] is None and empty["answer_rate"] is None and empty["latency_p50_ms"] is None


def test_p50():
    assert p50([]) is None
    assert p50([3.0]) == 3.0
    assert p50([5.0, 1.0, 3.0]) == 3.0
    assert p50([4.0, 1.0, 2.0, 3.0]) == 2.5
    s = summarize([outcome("a", gen=30.0, ret=2.0), outcome("b", gen=10.0, ret=4.0), outcome("c", gen=20.0, ret=9.0)])
    assert (s["latency_p50_ms"], s["retrieval_p50_ms"]) == (20.0, 4.0)


def test_by_position_counts_answerable_questions_with_gold_in_context():
    rows = {r["position"]: r for r in by_position(CASES)}
    assert list(rows) == ["1", "2", "3", "4", "5+"]
    # halluc-unans / abst-unans are unanswerable and halluc-miss / abst-good lack the gold: excluded
    assert {k: r["n"] for k, r in rows.items()} == {"1": 1, "2": 1, "3": 1, "4": 0, "5+": 1}
    assert rows["1"]["f1"] == 1.0 and rows["2"]["f1"] == 0.6 and rows["3"]["f1"] == 0.2
    assert rows["5+"]["answer_rate"] == 0.0 and rows["5+"]["f1"] == 0.0
    assert rows["4"]["f1"] is None and rows["4"]["answer_rate"] is None
