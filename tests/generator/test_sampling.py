"""Sampling filters on hand-made logits, seeded reproducibility, stop tokens, context limits."""

from __future__ import annotations

import math

import pytest
import torch

from common.errors import ContextTooLong, InvalidInput
from generator.generate import attention_over_prompt, generate, stream_generate
from generator.sampling import logits_to_probs, sample, top_k_filter, top_p_filter

NEG = float("-inf")


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0], [0.0, 0.0, 9.0, 1.0, -1.0]])
    out = top_k_filter(logits, 2)
    assert out.tolist() == [[NEG, 5.0, NEG, 4.0, NEG], [NEG, NEG, 9.0, 1.0, NEG]]
    assert torch.equal(top_k_filter(logits, 10), logits)
    assert logits[0, 0] == 1.0  # input untouched


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]])
    logits = probs.log()
    # Mass ranked before each token: 0, .5, .7, .85, .95; a token stays while that mass is < p.
    kept = lambda p: (top_p_filter(logits, p) > NEG).int().tolist()  # noqa: E731
    assert kept(0.6) == [[1, 1, 0, 0, 0]]
    assert kept(0.75) == [[1, 1, 1, 0, 0]]
    assert kept(0.01) == [[1, 0, 0, 0, 0]]  # the most likely token always stays
    assert kept(1.0) == [[1, 1, 1, 1, 1]]
    shuffled = logits[:, [3, 0, 4, 2, 1]]  # order in the vocabulary does not matter
    assert (top_p_filter(shuffled, 0.6) > NEG).int().tolist() == [[0, 1, 0, 0, 1]]


def test_logits_to_probs_temperature_and_filters():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    p = logits_to_probs(logits, temperature=0.5)
    expected = torch.softmax(logits / 0.5, -1)
    torch.testing.assert_close(p, expected)
    p = logits_to_probs(logits, temperature=1.0, top_k=2)
    assert p[0, 2:].tolist() == [0.0, 0.0]
    assert math.isclose(p[0, :2].sum().item(), 1.0, rel_tol=1e-6)
    with pytest.raises(InvalidInput):
        logits_to_probs(logits, temperature=0.0)
    with pytest.raises(InvalidInput):
        top_p_filter(logits, 1.5)


def test_sample_greedy_and_seeded():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sample(logits, temperature=0.0), logits.argmax(-1))
    draw = lambda seed: sample(logits, 1.0, top_k=20, top_p=0.9, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    assert torch.equal(draw(1), draw(1))
    assert any(not torch.equal(draw(1), draw(s)) for s in range(2, 8))
    only = sample(logits, 1.0, top_k=1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(only, logits.argmax(-1))


def test_seeded_generation_is_reproducible(make_tiny):
    model = make_tiny(seed=10)
    kw = dict(max_new_tokens=20, temperature=1.0, top_k=50, top_p=0.95, stop_token_ids=[])
    a = generate(model, [5, 6, 7], seed=123, **kw)
    b = generate(model, [5, 6, 7], seed=123, **kw)
    c = generate(model, [5, 6, 7], seed=7, **kw)
    assert a.tokens == b.tokens
    assert a.tokens != c.tokens


def test_stop_tokens_end_generation(make_tiny):
    model = make_tiny(seed=11)
    free = generate(model, [[9, 8, 7], [1, 2]], max_new_tokens=12, stop_token_ids=[])
    stop = free.tokens[0][4]
    first = free.tokens[0].index(stop)
    out = generate(model, [[9, 8, 7], [1, 2]], max_new_tokens=12, stop_token_ids=[stop])
    assert out.tokens[0] == free.tokens[0][:first]
    assert out.finish_reasons[0] == "stop"
    row1 = free.tokens[1]
    expected = row1[: row1.index(stop)] if stop in row1 else row1
    assert out.tokens[1] == expected
    assert out.finish_reasons[1] == ("stop" if stop in row1 else "length")
    # the config's eos ids are the default stop tokens
    model.config.eos_token_id = [stop]
    assert generate(model, [[9, 8, 7]], max_new_tokens=12).tokens[0] == free.tokens[0][:first]


def test_stream_yields_the_same_tokens(make_tiny):
    model = make_tiny(seed=12)
    whole = generate(model, [3, 4, 5, 6], max_new_tokens=10, stop_token_ids=[])
    streamed = [step.tokens.item() for step in stream_generate(model, [3, 4, 5, 6], max_new_tokens=10, stop_token_ids=[])]
    assert streamed == whole.tokens[0]


def test_context_too_long(make_tiny):
    model = make_tiny(seed=13)  # max_seq_len 256
    with pytest.raises(ContextTooLong, match="context window of 256"):
        generate(model, list(range(1, 101)) * 2, max_new_tokens=57)
    generate(model, list(range(1, 101)) * 2, max_new_tokens=56, stop_token_ids=[])  # 256 fits
    with pytest.raises(ContextTooLong):
        model(torch.zeros(1, 257, dtype=torch.long))
    with pytest.raises(ContextTooLong):
        model.setup_caches(1, 300)
    with pytest.raises(InvalidInput):
        generate(model, [], max_new_tokens=3)


def test_attention_over_prompt_matches_generation(make_tiny):
    model = make_tiny(seed=14)
    prompts = [[5, 9, 13, 2, 7, 7], [4, 4, 8]]
    out = generate(model, prompts, max_new_tokens=6, stop_token_ids=[], output_attentions=True)
    for row, prompt in enumerate(prompts):
        diag = attention_over_prompt(model, prompt, out.tokens[row])
        assert diag.shape == (2, 4, 6, len(prompt))
        torch.testing.assert_close(out.prompt_attention(row), diag, atol=1e-5, rtol=1e-5)
        assert (diag.sum(-1) <= 1 + 1e-5).all()
    # the first answer token's query (the last prompt token) sees only the prompt
    torch.testing.assert_close(diag[:, :, 0].sum(-1), torch.ones(2, 4))


def test_positions_beyond_the_window_raise(make_tiny):
    model = make_tiny(seed=15, positions="learned")
    with pytest.raises(ContextTooLong):
        model(torch.tensor([[1, 2]]), position_ids=torch.tensor([[255, 256]]))
