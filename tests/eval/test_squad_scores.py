"""The official SQuAD aggregate scores on hand-made cases."""

from __future__ import annotations

import pytest

from common.errors import InvalidInput
from common.squad import SquadExample
from eval.squad import squad_scores

CONTEXT = "The cat sat on the mat in Paris."
EXAMPLES = [
    SquadExample(qid="a1", question="Where did the cat sit?", context=CONTEXT, answers=["on the mat", "the mat"],
                 answer_starts=[12, 16], title="Cats", paragraph_id="0-0"),
    SquadExample(qid="u1", question="What colour was the dog?", context=CONTEXT, is_impossible=True, title="Cats",
                 paragraph_id="0-0"),
]


def test_squad_scores(caplog):
    examples = EXAMPLES
    perfect = squad_scores({"a1": "on the mat", "u1": ""}, examples)
    assert perfect == {
        "em": 100.0,
        "f1": 100.0,
        "total": 2,
        "has_ans_em": 100.0,
        "has_ans_f1": 100.0,
        "has_ans_total": 1,
        "no_ans_em": 100.0,
        "no_ans_f1": 100.0,
        "no_ans_total": 1,
        "missing": 0,
    }
    mixed = squad_scores({"a1": "sat on the mat", "u1": "the dog", "unknown": "x"}, examples)
    assert mixed["has_ans_em"] == 0.0
    assert mixed["has_ans_f1"] == pytest.approx(80.0)
    assert mixed["no_ans_f1"] == 0.0
    assert mixed["f1"] == pytest.approx(40.0)
    with caplog.at_level("WARNING"):
        missing = squad_scores({"a1": "the mat"}, examples)
    assert missing["missing"] == 1 and missing["em"] == 50.0 and missing["no_ans_em"] == 0.0
    assert "no prediction" in caplog.text


def test_squad_scores_v1_has_no_no_ans_metrics():
    examples = [SquadExample(qid="q", question="?", context="c", answers=["cat"])]
    scores = squad_scores({"q": "The cat"}, examples)
    assert scores["em"] == 100.0 and scores["no_ans_total"] == 0
    assert "no_ans_em" not in scores
    with pytest.raises(InvalidInput):
        squad_scores({}, [])
    with pytest.raises(InvalidInput):
        squad_scores({"q": None}, examples)
