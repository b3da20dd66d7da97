"""SQuAD loading, the official answer comparison and seeded sampling, on hand-made files and cases."""

from __future__ import annotations

import json

import pytest

from common.errors import InvalidInput, NotFound
from common.squad import (
    SquadExample,
    exact_match,
    f1_score,
    gold_answers,
    load_squad,
    normalize_answer,
    sample_examples,
)

CONTEXT = "The cat sat on the mat in Paris."


def _write(path, data):
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _squad_v2(tmp_path):
    return _write(
        tmp_path / "dev-v2.json",
        {
            "version": "v2.0",
            "data": [
                {
                    "title": "Cats",
                    "paragraphs": [
                        {
                            "context": CONTEXT,
                            "qas": [
                                {
                                    "id": "a1",
                                    "question": "Where did the cat sit?",
                                    "answers": [
                                        {"text": "on the mat", "answer_start": 12},
                                        {"text": "the mat", "answer_start": 16},
                                    ],
                                    "is_impossible": False,
                                },
                                {
                                    "id": "u1",
                                    "question": "What colour was the dog?",
                                    "answers": [],
                                    "plausible_answers": [{"text": "mat", "answer_start": 20}],
                                    "is_impossible": True,
                                },
                            ],
                        }
                    ],
                }
            ],
        },
    )


def test_load_squad_v2(tmp_path):
    examples = load_squad(_squad_v2(tmp_path))
    assert [e.qid for e in examples] == ["a1", "u1"]
    a1, u1 = examples
    assert a1.answers == ["on the mat", "the mat"]
    assert a1.answer_starts == [12, 16]
    assert CONTEXT[a1.answer_starts[0] :].startswith(a1.answers[0])
    assert (a1.title, a1.paragraph_id, a1.context, a1.is_impossible) == (
        "Cats",
        "0-0",
        CONTEXT,
        False,
    )
    assert u1.is_impossible and u1.answers == [] and u1.answer_starts == []


def test_load_squad_synthesises_ids_without_them(tmp_path):
    # train-v1.1 has no question ids: "<article>-<paragraph>-<question>".
    para = {
        "context": "x y",
        "qas": [{"question": "q?", "answers": [{"text": "x", "answer_start": 0}]}] * 2,
    }
    data = {
        "data": [{"title": "A", "paragraphs": [para]}, {"title": "B", "paragraphs": [para, para]}]
    }
    path = _write(tmp_path / "train.json", data)
    examples = load_squad(path)
    assert [e.qid for e in examples] == ["0-0-0", "0-0-1", "1-0-0", "1-0-1", "1-1-0", "1-1-1"]
    assert [e.paragraph_id for e in examples][-2:] == ["1-1", "1-1"]
    assert load_squad(path) == examples  # stable


def test_load_squad_errors(tmp_path):
    with pytest.raises(NotFound, match="missing.json"):
        load_squad(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [', encoding="utf-8")
    with pytest.raises(InvalidInput, match="malformed JSON"):
        load_squad(bad)
    with pytest.raises(InvalidInput, match="'data'"):
        load_squad(_write(tmp_path / "nodata.json", {"version": "1.1"}))
    no_q = {"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "x", "answers": []}]}]}]}
    with pytest.raises(InvalidInput, match=r"data\[0\]\.paragraphs\[0\]\.qas\[0\].*'question'"):
        load_squad(_write(tmp_path / "noq.json", no_q))
    dup = {"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "x", "question": "?"}] * 2}]}]}
    with pytest.raises(InvalidInput, match="repeated"):
        load_squad(_write(tmp_path / "dup.json", dup))


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("The Cat", "cat"),
        ("  a  dog,  AN apple!  ", "dog apple"),
        ("theatre", "theatre"),  # articles only as whole words
        ("U.S.A.", "usa"),
        ("the", ""),
    ],
)
def test_normalize_answer(raw, normalized):
    assert normalize_answer(raw) == normalized


def test_exact_match():
    assert exact_match("the Cat", ["cat"]) == 1.0
    assert exact_match("Cat.", "the cat") == 1.0
    assert exact_match("cats", ["cat", "dog"]) == 0.0
    assert exact_match("dog", ["cat", "dog"]) == 1.0  # max over references


def test_f1_partial_overlap_and_max_over_references():
    # pred "sat on the mat" -> [sat, on, mat]; gold "on the mat" -> [on, mat]: P=2/3, R=1.
    assert f1_score("sat on the mat", ["on the mat"]) == pytest.approx(2 * (2 / 3) / (2 / 3 + 1))
    # Against "the mat" -> [mat]: P=1/3, R=1 -> 0.5; the max over both references is 0.8.
    assert f1_score("sat on the mat", ["the mat"]) == pytest.approx(0.5)
    assert f1_score("sat on the mat", ["the mat", "on the mat"]) == pytest.approx(0.8)
    assert f1_score("dog", ["cat"]) == 0.0
    # Repeated tokens count by multiplicity: [x, y, y] shares one "y" with [y].
    assert f1_score("x y y", ["y"]) == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))


def test_unanswerable_rules():
    assert exact_match("", []) == 1.0
    assert f1_score("", [""]) == 1.0
    assert exact_match("the mat", []) == 0.0
    assert f1_score("the mat", [""]) == 0.0
    # An answer that normalises to nothing behaves like an empty one.
    assert f1_score("the", [""]) == 1.0
    # Empty prediction on an answerable question scores 0.
    assert exact_match("", ["cat"]) == 0.0 and f1_score("", ["cat"]) == 0.0


def test_gold_answers_drop_empty_normalisations():
    ex = SquadExample(qid="x", question="?", context="c", answers=["The", "a cat"])
    assert gold_answers(ex) == ["a cat"]
    assert gold_answers(SquadExample(qid="u", question="?", context="c", is_impossible=True)) == [
        ""
    ]


def test_sample_examples_is_seeded_and_sorted_by_id():
    examples = [SquadExample(qid=f"q{i:02d}", question="?", context="c") for i in range(20)]
    assert sample_examples(examples, None, 0) is examples and sample_examples(examples, 50, 0) is examples
    drawn = sample_examples(examples, 5, seed=3)
    assert drawn == sample_examples(examples, 5, seed=3) and len(drawn) == 5
    assert [e.qid for e in drawn] == sorted(e.qid for e in drawn)
