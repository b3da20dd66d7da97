"""Rule-made unanswerable questions, their use as training examples, and the abstain-threshold
calibration."""

from __future__ import annotations

import random

import pytest

from generator.calibrate import Scored, best_threshold, f1_at, unsupported_case
from generator.prompt import PromptBuilder
from generator.qa_data import ABSTAIN_CLASS, QAExampleSource, QAItem, QAMix
from generator.unanswerable import (
    UNANSWERABLE_KINDS,
    add_condition,
    antonym_question,
    make_unanswerable,
    negate_question,
    swap_entity,
    swap_word,
)
from retriever.tokenizer import Tokenizer

PARA = "The Eiffel Tower was completed in 1889. It was designed by the company of Gustave Eiffel. It is in Paris."
OTHER = "The Statue of Liberty was dedicated in 1886 in New York. Its copper skin came from Norway."


def test_negation_contracts_the_first_auxiliary():
    assert negate_question("When did Chopin leave Warsaw?") == "When didn't Chopin leave Warsaw?"
    assert negate_question("What Is the capital?") == "What Isn't the capital?"
    assert negate_question("Name the largest city.") is None  # no auxiliary verb
    assert negate_question("Who did?") is None  # nothing after it to negate


def test_antonym_keeps_case_and_replaces_one_word():
    assert antonym_question("What is the largest city in the north?") == "What is the smallest city in the north?"
    assert antonym_question("First, who came?") == "Last, who came?"
    assert antonym_question("Who wrote Hamlet?") is None


def test_swap_replaces_a_grounded_name_with_one_the_paragraph_lacks():
    rng = random.Random(0)
    q = "When was the Eiffel Tower completed?"
    out = swap_entity(q, PARA, [OTHER], rng)
    assert out is not None and out != q
    new = out.replace("When was the ", "").replace(" completed?", "")
    assert new.lower() not in PARA.lower()  # the swapped-in name is not in the paragraph
    assert new in OTHER
    # a question with no name from the paragraph is left alone
    assert swap_entity("When was it completed?", PARA, [OTHER], rng) is None
    # numbers swap for numbers of the same length
    out = swap_entity("What happened in 1889?", PARA, [OTHER], rng)
    assert out == "What happened in 1886?"


def test_word_swap_replaces_a_grounded_noun_keeping_its_inflection():
    rng = random.Random(0)
    para = "The treaty ended the war. The generals signed the papers."
    other = "The blockade lasted a year. The sailors mutinied over the rations. The Queen spoke."
    for _ in range(10):
        out = swap_word("What did the treaty end?", para, [other], rng)
        assert out == "What did the blockade end?"  # "year" is a stop word, "Queen" is a name
        out = swap_word("Who signed the papers?", para, [other], rng)
        assert out in ("Who signed the sailors?", "Who signed the rations?")  # plural for plural
    # nothing after a determiner that the paragraph holds: no rewrite
    assert swap_word("Who signed it?", para, [other], rng) is None
    # a word cut at a hyphen ("mid-" of "mid-1960s") is not a word to swap
    assert swap_word("What ended in the mid-1960s?", para + " It ended in the mid-1960s.", [other + " the mid-1950s"], rng) is None
    assert swap_word("What did the treaty end?", para, ["The treaty was signed."], rng) is None


def test_condition_adds_a_year_the_paragraph_never_mentions():
    rng = random.Random(0)
    out = add_condition("Who designed the tower?", PARA, [OTHER], rng)
    assert out == "Who designed the tower in 1886?"  # the only year of the article PARA lacks
    for _ in range(10):
        out = add_condition("Who designed the tower?", PARA, [], rng)
        year = out.removeprefix("Who designed the tower in ").removesuffix("?")
        assert year.isdigit() and year != "1889" and abs(int(year) - 1889) <= 30
    assert add_condition("When was the tower designed?", PARA, [OTHER], rng) is None  # asks for a time
    assert add_condition("Who designed it in 1887?", PARA, [OTHER], rng) is None  # already has a year
    assert add_condition("Name the designer.", PARA, [OTHER], rng) is None  # not a question


def test_unknown_kind_is_a_value_error():
    with pytest.raises(ValueError, match="unknown unanswerable kind"):
        make_unanswerable("neg_bogus", "Who?", PARA, [], random.Random(0))


@pytest.fixture(scope="module")
def builder(minilm_dir):
    return PromptBuilder(Tokenizer.from_dir(minilm_dir))


@pytest.mark.parametrize("kind", UNANSWERABLE_KINDS)
def test_rule_examples_target_abstain_on_the_gold_paragraph(builder, kind):
    item = QAItem("q1", "Who in the company was the largest designer of the Eiffel Tower?", PARA, ("1889",), (PARA.index("1889"),), "Eiffel")
    other = QAItem("q2", "Where is the Statue of Liberty?", OTHER, ("New York",), (OTHER.index("New York"),), "Eiffel")
    source = QAExampleSource(builder, [item, other], lambda it, n: [], QAMix(), seed=0)
    ex = source.example(item, kind)
    assert ex is not None and ex.kind == kind
    assert ex.targets == [ABSTAIN_CLASS] and ex.gold_chunk == -1
    prompt_text = builder.tokenizer.decode(ex.input_ids[: ex.prefix_len])
    assert "eiffel tower was completed in 1889" in prompt_text  # the gold paragraph is the context


def test_unsupported_case_never_holds_the_answer_or_uses_an_unchanged_question():
    item = QAItem("q1", "When was the Eiffel Tower completed?", PARA, ("1889",), (PARA.index("1889"),), "Eiffel")
    rng = random.Random(3)
    kinds = set()
    for _ in range(40):
        question, context, kind = unsupported_case(item, [PARA, OTHER], rng)
        kinds.add(kind)
        if kind in ("neg_removed", "neg_other"):
            assert "1889" not in context and question == item.question
        else:
            assert context == PARA and question != item.question
    assert {"neg_removed", "neg_other"} <= kinds and kinds & set(UNANSWERABLE_KINDS)


def test_best_threshold_sweep_matches_scoring_every_candidate():
    rng = random.Random(3)
    for _ in range(20):
        cases = [Scored(round(rng.random(), 2), rng.choice([0.0, 0.5, 1.0]), rng.random() < 0.5, "gold")
                 for _ in range(rng.randint(1, 40))]
        cal = best_threshold(cases, default=0.5)
        probs = sorted({c.abstain_prob for c in cases})
        candidates = [probs[0] / 2] + [(a + b) / 2 for a, b in zip(probs, probs[1:], strict=False)] + [(probs[-1] + 1) / 2]
        best_f1 = max(f1_at(cases, t)[0] for t in candidates)
        assert cal.f1 == pytest.approx(100 * best_f1) and f1_at(cases, cal.threshold)[0] == pytest.approx(best_f1)
        ties = [t for t in candidates if round(f1_at(cases, t)[0], 9) == round(best_f1, 9)]
        assert cal.threshold == min(ties, key=lambda t: abs(t - 0.5))


def test_best_threshold_separates_and_scores_like_squad_v2():
    cases = [Scored(0.1, 1.0, True, "gold"), Scored(0.2, 0.5, True, "gold"),
             Scored(0.6, 0.0, False, "neg_removed"), Scored(0.3, 0.0, False, "neg_swap")]
    cal = best_threshold(cases)
    assert 0.2 < cal.threshold <= 0.3  # abstains on both negatives, answers both positives
    assert cal.f1 == pytest.approx(100 * (1.0 + 0.5 + 1 + 1) / 4)
    assert cal.has_ans_f1 == pytest.approx(75.0) and cal.no_ans_acc == pytest.approx(100.0)
    # at 0.5 the swap case is answered (scores 0)
    assert f1_at(cases, 0.5)[0] == pytest.approx((1.0 + 0.5 + 1) / 4)
    assert cal.f1_at_default == pytest.approx(100 * (1.0 + 0.5 + 1) / 4)
    with pytest.raises(ValueError):
        best_threshold([])
