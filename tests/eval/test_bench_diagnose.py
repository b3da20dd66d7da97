"""``attend bench diagnose``: failure attribution and the gold-top rates on hand-made records."""

from __future__ import annotations

import pytest

from common.errors import InvalidInput
from eval.diagnose import DiagnosedQuestion, failure_kind, summarize_diagnoses


def test_failure_kinds():
    assert [failure_kind(v) for v in ("not_retrieved", "cut", "ignored", "used")] == [
        "not_retrieved", "cut", "ignored", "used_but_wrong"]
    with pytest.raises(InvalidInput):
        failure_kind("lost")


def test_summarize_diagnoses_by_hand():
    def q(qid, f1, verdict, reason=None, n=3, top_a=None, top_r=None):
        return DiagnosedQuestion(qid, f1, f1 == 0.0, verdict, reason, n, top_a, top_r, top_a)

    records = [
        q("w1", 0.0, "not_retrieved", n=2), q("w2", 0.2, "cut", "budget"), q("w3", 0.4, "cut", "score_floor"),
        q("w4", 0.0, "ignored", top_a=False, top_r=True), q("w5", 0.1, "used", top_a=True, top_r=True),
        q("c1", 1.0, "used", top_a=True, top_r=False), q("c2", 0.5, "ignored", top_a=False, top_r=True),
        q("c3", 0.8, "used", n=1, top_a=True, top_r=True),  # one chunk in context: not counted
        q("c4", 1.0, "cut", "budget"),  # correct without the gold chunk: not counted
    ]
    s = summarize_diagnoses(records)
    assert s["verdicts"] == {"not_retrieved": 1, "cut": 2, "ignored": 1, "used_but_wrong": 1}
    assert s["cut_reasons"] == {"budget": 1, "score_floor": 1}
    assert (s["n"], s["n_wrong"], s["n_correct"], s["n_correct_with_gold"]) == (9, 5, 4, 2)
    assert s["gold_top_attention_rate"] == 0.5 and s["gold_top_retrieval_rate"] == 0.5
    assert summarize_diagnoses([])["gold_top_attention_rate"] is None
