"""Rule-made unanswerable questions, their use as training examples, and the abstain-threshold
calibration."""

from __future__ import annotations

import random

import pytest

from common.errors import InvalidInput
from generator.calibrate import (
    FloorUnreachable,
    Scored,
    best_threshold,
    cross_calibrated,
    f1_at,
    score_cases,
    unsupported_case,
)
from generator.prompt import ContextChunk, PromptBuilder
from generator.qa_data import (
    ABSTAIN_CLASS,
    END_CLASS,
    POINTER_OFFSET,
    QAExampleSource,
    QAItem,
    QAMix,
    remove_answer_sentences,
)
from generator.unanswerable import (
    SQUAD2_SHARES,
    SUPPORTED_KINDS,
    UNANSWERABLE_KINDS,
    add_condition,
    antonym_question,
    make_supported,
    make_unanswerable,
    negate_question,
    swap_entity,
    swap_within,
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


def test_swap_within_uses_a_name_of_another_sentence_and_its_twin_exchanges_the_two():
    ctx = "Chopin left Warsaw in 1830 for Vienna. In Vienna he met Hummel in 1831. He later settled in Paris."
    q, start = "When did Chopin leave Warsaw?", ctx.index("1830")
    made = {swap_within(q, ctx, start, random.Random(seed)) for seed in range(20)}
    # Vienna is in the answer's sentence, "In" and "He" only open sentences: never drawn; names are
    # not typed (a person may stand in for a place), as no tagger is at hand
    assert made == {f"When did {a} leave {b}?" for a, b in
                    (("Hummel", "Warsaw"), ("Paris", "Warsaw"), ("Chopin", "Hummel"), ("Chopin", "Paris"))}
    assert swap_within(q, ctx, None, random.Random(0)) is None  # needs the answer's place
    assert swap_within("When did Liszt leave Rome?", ctx, start, random.Random(0)) is None  # nothing of it in that sentence
    for seed in range(20):
        new_q, new_ctx, answer, new_start = make_supported("pos_within", q, ctx, "1830", start, [], random.Random(seed))
        assert new_q in made and new_ctx[new_start:new_start + 4] == answer == "1830"
        old = "Chopin" if "Chopin" not in new_q else "Warsaw"
        new = next(n for n in ("Hummel", "Paris") if n in new_q)
        assert new_ctx == ctx.replace(old, "\0").replace(new, old).replace("\0", new)  # exchanged both ways


def test_supported_twin_rewrites_question_and_paragraph_alike():
    para = "Paris is the largest city of France. Lyon is the smallest city of the region. The Seine crosses Paris."
    q = "What is the largest city of France?"
    question, context, answer, start = make_supported("pos_antonym", q, para, "Paris", 0, [], random.Random(0))
    assert question == "What is the smallest city of France?"
    # both words of the pair swap, so the paragraph stays consistent and now answers the new question
    assert context == "Paris is the smallest city of France. Lyon is the largest city of the region. The Seine crosses Paris."
    assert (answer, start) == ("Paris", 0)
    # an entity swap: every occurrence in the paragraph, the answer offsets shifted to match
    other = "The Statue of Liberty was dedicated in 1886 in New York."
    q = "What river crosses Paris?"
    question, context, answer, start = make_supported("pos_swap", q, para, "Seine", para.index("Seine"), [other], random.Random(0))
    new = question.removeprefix("What river crosses ").removesuffix("?")
    assert new != "Paris" and new in other and "Paris" not in context and context.count(new) == 2
    assert answer == "Seine" and context[start : start + len(answer)] == "Seine"


def test_supported_twin_follows_a_replacement_inside_the_answer_and_refuses_a_cut():
    para = "The First Year of Studies program began in 1962. It guides new students."
    q = "What guides first year students?"
    question, context, answer, start = make_supported("pos_antonym", q, para, "The First Year of Studies program", 0, [], random.Random(0))
    assert question == "What guides last year students?"
    assert answer == "The Last Year of Studies program" and context.startswith(answer)
    # the replaced word straddles the answer's boundary: no twin
    assert make_supported("pos_antonym", q, para, "irst Year", 5, [], random.Random(0)) is None
    assert make_supported("pos_antonym", q, para, "The First", 0, [], random.Random(0))[2] == "The Last"
    # the paragraph never uses the question's word: nothing to rewrite, so no twin
    assert make_supported("pos_antonym", "Who came first?", "Ann came at noon.", "Ann", 0, [], random.Random(0)) is None
    with pytest.raises(ValueError, match="unknown supported kind"):
        make_supported("pos_bogus", q, para, "x", 0, [], random.Random(0))


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


@pytest.mark.parametrize("kind", SUPPORTED_KINDS)
def test_supported_twins_point_at_the_answer_in_the_rewritten_paragraph(builder, kind):
    para = "The largest tower of Paris was completed in 1889 by the company. It was designed by the company of Gustave Eiffel."
    other = "The Statue of Liberty was dedicated in 1886 in New York. The monument has a copper skin."
    item = QAItem("q1", "When was the largest tower of Paris completed by the company?", para, ("1889",), (para.index("1889"),), "Eiffel")
    filler = QAItem("q2", "Where is the Statue of Liberty?", other, ("New York",), (other.index("New York"),), "Eiffel")
    source = QAExampleSource(builder, [item, filler], lambda it, n: [], QAMix(), seed=0)
    ex = source.example(item, kind)
    assert ex is not None and ex.kind == kind and ex.gold_chunk == 0
    assert ex.targets[-1] == END_CLASS and ABSTAIN_CLASS not in ex.targets
    copied = builder.tokenizer.decode([ex.input_ids[t - POINTER_OFFSET] for t in ex.targets[:-1]])
    assert copied == "1889"
    prompt_text = builder.tokenizer.decode(ex.input_ids[: ex.prefix_len])
    question_text = builder.tokenizer.decode(builder.tokenizer.encode(item.question).ids)
    assert question_text not in prompt_text  # the question was rewritten ...
    assert "largest tower of paris" not in prompt_text or kind == "pos_word"  # ... and the paragraph with it


def test_mining_keeps_the_rewrite_the_scorer_finds_most_answerable(builder):
    item = QAItem("q1", "Who in the company was the largest designer of the Eiffel Tower?", PARA, ("1889",), (PARA.index("1889"),), "Eiffel")
    other = QAItem("q2", "Where is the Statue of Liberty?", OTHER, ("New York",), (OTHER.index("New York"),), "Eiffel")
    mix = QAMix(neg_negation=1.0, neg_antonym=1.0, neg_swap=1.0, neg_word=1.0, neg_condition=1.0)
    seen: list[list] = []

    def scorer(candidates):  # "answerable-looking" = the shortest prompt, an arbitrary but known order
        seen.append(candidates)
        return [len(c.input_ids) / 1000 for c in candidates]

    source = QAExampleSource(builder, [item, other], lambda it, n: [], mix, seed=1, mine=5, scorer=scorer)
    for _ in range(10):
        ex = source.example(item, "neg_antonym")
        assert ex.targets == [ABSTAIN_CLASS] and ex.kind in UNANSWERABLE_KINDS
        cands = seen[-1]
        assert 1 < len(cands) <= 5 and cands[0].kind == "neg_antonym"  # the drawn kind is always a candidate
        assert len({tuple(c.input_ids) for c in cands}) == len(cands)  # no rewrite scored twice
        assert len(ex.input_ids) == min(len(c.input_ids) for c in cands)
    assert len({c.kind for cands in seen for c in cands}) > 2  # the other candidates come from the mix's rule kinds
    plain = QAExampleSource(builder, [item, other], lambda it, n: [], mix, seed=1, scorer=scorer)
    before = len(seen)
    assert plain.example(item, "neg_antonym").kind == "neg_antonym" and len(seen) == before  # mine=1: no scoring
    with pytest.raises(ValueError, match="needs a scorer"):
        QAExampleSource(builder, [item], lambda it, n: [], mix, mine=3)


def test_abstain_scorer_matches_inference_and_keeps_the_training_mode(builder, minilm_dir, tmp_path):
    from toydata import build_tiny_qa

    from generator.qa_model import NEVER_ABSTAIN, GroundedQA
    from generator.train_qa import abstain_scorer

    model, _ = GroundedQA.load(build_tiny_qa(tmp_path / "qa", minilm_dir))
    item = QAItem("q1", "Who designed the Eiffel Tower?", PARA, ("Gustave Eiffel",), (PARA.index("Gustave Eiffel"),), "Eiffel")
    other = QAItem("q2", "Where is the Statue of Liberty?", OTHER, ("New York",), (OTHER.index("New York"),), "Eiffel")
    source = QAExampleSource(builder, [item, other], lambda it, n: [], QAMix(), seed=0)
    examples = [source.example(item, "gold"), source.example(other, "neg_removed")]
    model.train()
    probs = abstain_scorer(model, builder.tokenizer.pad_id or 0)(examples)
    assert model.training and len(probs) == 2  # scoring left the model in training mode
    questions = [item.question, other.question]
    contexts = [PARA, remove_answer_sentences(OTHER, other.answers)]
    model.eval()
    for p, q, ctx in zip(probs, questions, contexts, strict=True):
        ans = model.read(builder.build(q, [ContextChunk(0, ctx)]), builder.answer_id, abstain_threshold=NEVER_ABSTAIN)
        assert p == pytest.approx(ans.abstain_prob, abs=1e-4)  # the batched pass scores what serving would


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


def test_unsupported_case_follows_the_given_shares():
    item = QAItem("q1", "When was the Eiffel Tower completed?", PARA, ("1889",), (PARA.index("1889"),), "Eiffel")
    rng = random.Random(5)
    drawn = [unsupported_case(item, [PARA, OTHER], rng, {"neg_swap": 3, "neg_removed": 1})[2] for _ in range(400)]
    assert set(drawn) == {"neg_swap", "neg_removed"}  # kinds without a share are never drawn
    assert 0.65 < drawn.count("neg_swap") / len(drawn) < 0.85  # 3:1
    # SQuAD 2.0's shares, renormalised over the kinds that apply to this question
    drawn = [unsupported_case(item, [PARA, OTHER], rng, SQUAD2_SHARES)[2] for _ in range(2000)]
    applicable = set(drawn)
    expected = SQUAD2_SHARES["neg_swap"] / sum(SQUAD2_SHARES[k] for k in applicable)
    assert abs(drawn.count("neg_swap") / len(drawn) - expected) < 0.05
    assert unsupported_case(item, [PARA, OTHER], rng, {"neg_bogus": 1.0}) is None  # nothing applies


def test_score_cases_rejects_an_unknown_draw():
    with pytest.raises(ValueError, match="unknown negatives"):
        score_cases(None, None, [], negatives="adversarial")


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


def test_an_answerable_floor_picks_the_best_cut_among_those_that_keep_it():
    rng = random.Random(5)
    for _ in range(20):
        cases = [Scored(round(rng.random(), 2), rng.choice([0.0, 0.5, 1.0]), rng.random() < 0.5, "gold")
                 for _ in range(rng.randint(2, 40))]
        probs = sorted({c.abstain_prob for c in cases})
        candidates = [probs[0] / 2] + [(a + b) / 2 for a, b in zip(probs, probs[1:], strict=False)] + [(probs[-1] + 1) / 2]
        floor = rng.choice([0.0, 20.0, 50.0, 70.0])
        keep = [t for t in candidates if 100 * f1_at(cases, t)[1] >= floor - 1e-9]
        if not keep:
            with pytest.raises(FloorUnreachable, match="no threshold keeps answerable F1"):
                best_threshold(cases, has_ans_floor=floor)
            continue
        cal = best_threshold(cases, has_ans_floor=floor)
        assert cal.has_ans_f1 >= floor - 1e-9 and cal.has_ans_floor == floor
        assert cal.f1 == pytest.approx(100 * max(f1_at(cases, t)[0] for t in keep))
        if floor == 0.0:  # no constraint at all
            assert cal.threshold == best_threshold(cases).threshold


def test_a_floor_trades_negatives_for_answerable_f1():
    # the unconstrained cut (0.15) abstains on the 0.3 answer; keeping answerable F1 >= 75 must answer it
    cases = [Scored(0.1, 1.0, True, "gold"), Scored(0.3, 1.0, True, "gold"), Scored(0.2, 0.0, False, "labeled"),
             Scored(0.25, 0.0, False, "labeled"), Scored(0.4, 0.0, False, "labeled"), Scored(0.5, 0.0, False, "labeled")]
    cal = best_threshold(cases)  # answers 0.1 only: F1 (1 + 4) / 6, answerable F1 50
    assert cal.threshold == pytest.approx(0.15) and cal.has_ans_f1 == 50.0
    cal = best_threshold(cases, has_ans_floor=75.0)  # answers both, two negatives with them: (2 + 2) / 6
    assert cal.threshold == pytest.approx(0.35) and cal.has_ans_f1 == 100.0 and cal.f1 == pytest.approx(400 / 6)
    with pytest.raises(FloorUnreachable):  # answerable F1 never exceeds 100
        best_threshold([Scored(0.1, 0.5, True, "gold"), Scored(0.9, 0.0, False, "labeled")], has_ans_floor=60.0)
    with pytest.raises(InvalidInput, match="0-100 scale"):
        best_threshold(cases, has_ans_floor=0.6 * 1000)
    groups = ["a", "b", "a", "b", "a", "b"]
    assert cross_calibrated(cases, groups, has_ans_floor=0.0) == cross_calibrated(cases, groups)


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


def test_cross_calibration_cuts_each_article_at_the_other_articles_threshold():
    # article "a" (fold 2) separates at 0.3, article "b" (fold 1) at 0.6: each cut misjudges the other
    cases = [Scored(0.2, 1.0, True, "gold"), Scored(0.4, 0.0, False, "labeled"),
             Scored(0.5, 1.0, True, "gold"), Scored(0.7, 0.0, False, "labeled")]
    f1, thresholds = cross_calibrated(cases, ["a", "a", "b", "b"])
    # the cut applied to each fold, in fold order: b (fold 1) gets a's cut, a (fold 2) gets b's
    assert thresholds == [pytest.approx(0.3), pytest.approx(0.6)]
    assert f1 == pytest.approx(50.0)  # a answers its negative at 0.6, b abstains on its answer at 0.3
    assert best_threshold(cases).f1 == pytest.approx(75.0)  # one cut tuned on all four does better
    assert cross_calibrated(cases, ["a"] * 4) is None  # one fold: nothing to calibrate on
    with pytest.raises(ValueError, match="one group per case"):
        cross_calibrated(cases, ["a"])
