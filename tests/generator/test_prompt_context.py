"""The prompt builder and the context filter (score floor, dedup, token budget)."""

from __future__ import annotations

import pytest

from common.errors import BudgetExceeded, InvalidInput
from generator.context import CUT_BUDGET, CUT_DUPLICATE, CUT_SCORE_FLOOR, Candidate, ContextFilter
from generator.prompt import ContextChunk, PromptBuilder
from retriever.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def builder(minilm_dir):
    return PromptBuilder(Tokenizer.from_dir(minilm_dir))


def test_prompt_maps_tokens_back_to_original_characters(builder):
    chunks = [
        ContextChunk(7, "Crème Brûlée was served in PARIS in 1691.", doc_id="a", char_start=100),
        ContextChunk(9, "Naïve résumé writing.", doc_id="b"),
    ]
    p = builder.build("Where was Crème brûlée served?", chunks)
    assert len(p.input_ids) == len(p.token_type_ids) == len(p.token_chunk) == len(p.token_chars)
    assert p.input_ids[0] == builder.cls_id
    # every chunk token maps to a char span of its own chunk, and spans cover the chunk text
    for ci, (s, e) in enumerate(p.chunk_spans):
        assert p.input_ids[s - 1] == builder.chunk_id and p.input_ids[e] == builder.sep_id
        assert all(p.token_chunk[t] == ci for t in range(s, e))
        assert p.token_type_ids[s] == 1
    s, e = p.chunk_spans[0]
    # find the tokens of "PARIS" and map back: original casing, not the lowercased token
    toks = [builder.tokenizer.id_to_token(i) for i in p.input_ids[s:e]]
    j = s + toks.index("paris")
    ci, a, b = p.span_text(j, j)
    assert ci == 0 and chunks[0].text[a:b] == "PARIS"
    ci, a, b = p.span_text(s, e - 1)
    assert chunks[0].text[a:b] == chunks[0].text
    with pytest.raises(InvalidInput):
        p.span_text(s, p.chunk_spans[1][0])  # crosses two chunks


def test_prompt_truncates_to_max_len(builder):
    long = " ".join(["word"] * 300)
    p = builder.build("a question", [ContextChunk(1, "short one."), ContextChunk(2, long)], max_len=60)
    assert len(p) <= 60
    assert p.truncated_chunks == [1]
    assert long.startswith(p.chunks[1].text) and len(p.chunks[1].text) < len(long)
    with pytest.raises(BudgetExceeded):
        builder.build("a question", [ContextChunk(1, "x")], max_len=4)
    with pytest.raises(InvalidInput):
        builder.build("   ", [])


def _cand(i, text, score, rank):
    return Candidate(chunk_id=i, doc_id=f"d{i}", text=text, score=score, rank=rank, char_end=len(text))


def test_filter_floor_dedup_and_budget(builder):
    a = "The Eiffel Tower was completed in 1889 for the World's Fair in Paris, France."
    cands = [
        _cand(1, a, 0.9, 1),
        _cand(2, a.replace("France.", "France"), 0.8, 2),  # near-duplicate of 1
        _cand(3, "Mount Everest is the highest mountain above sea level on Earth.", 0.7, 3),
        _cand(4, "Bananas are berries, botanically speaking.", 0.01, 4),  # under the floor
        _cand(5, " ".join(["filler text"] * 200), 0.6, 5),  # too long for the rest of the budget
    ]
    f = ContextFilter(score_floor=0.1, dedup_threshold=0.8, answer_reserve=16, truncate=False)
    budget = 80
    packed = f.apply("When was the Eiffel Tower completed?", cands, builder, budget)
    reasons = {c.chunk_id: r for c, r in packed.cut}
    assert [c.chunk_id for c in packed.kept] == [1, 3]
    assert reasons == {2: CUT_DUPLICATE, 4: CUT_SCORE_FLOOR, 5: CUT_BUDGET}
    # the budget is never overrun: the real prompt plus the answer reserve fits
    prompt = builder.build("When was the Eiffel Tower completed?", packed.chunks())
    assert len(prompt) == packed.tokens
    assert len(prompt) + f.answer_reserve <= budget


@pytest.mark.parametrize("budget", [40, 64, 100, 300])
def test_truncation_fills_but_never_overruns(builder, budget):
    cands = [_cand(i, " ".join([f"sentence {i} has words."] * 30), 1.0 - i / 10, i) for i in range(1, 4)]
    f = ContextFilter(answer_reserve=8, min_truncated_tokens=8)
    q = "what do the sentences say?"
    packed = f.apply(q, cands, builder, budget)
    prompt = builder.build(q, packed.chunks())
    assert len(prompt) + 8 <= budget
    assert len(prompt) == packed.tokens
    for c in packed.kept:  # truncated chunks are prefixes of the original text
        assert any(orig.text.startswith(c.text) for orig in cands)


def test_budget_below_minimum_is_a_clear_error(builder):
    f = ContextFilter(answer_reserve=32)
    with pytest.raises(BudgetExceeded, match="minimum"):
        f.apply("a question about something", [], builder, 20)
