"""Cached decoding equals full recomputation: causal, prefix-LM, left-padded batches, windows."""

from __future__ import annotations

import pytest
import torch

from generator.generate import decode_one_token, generate, pad_left, prefill

VARIANTS = {
    "gqa": {},
    "window": dict(sliding_window=8),
    "bert-like": dict(norm="layer", norm_placement="post", final_norm=False, mlp="gelu", activation="gelu",
                      positions="learned", qkv_bias=True, out_bias=True, mlp_bias=True, embedding_norm=True,
                      type_embedding=True),
}


def _prompts(seed: int = 0, lengths=(11, 5, 8)) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 128, (n,), generator=g).tolist() for n in lengths]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("prefix_lm", [False, True])
def test_cached_logits_equal_full_recompute(variant, prefix_lm, make_tiny):
    """Step by step: the cached logits of every new token match a full forward of the sequence."""
    model = make_tiny(seed=4, **VARIANTS[variant])
    ids, mask = pad_left(_prompts(1), pad_id=0)  # (3, 11), left-padded
    lengths = mask.sum(-1)
    prefix_len = lengths if prefix_lm else None
    model.setup_caches(3, 11 + 64)
    seq, seq_mask = ids, mask
    with torch.inference_mode():
        out = prefill(model, ids, attention_mask=mask, prefix_len=prefix_len)
        for step in range(64):
            full = model(seq, attention_mask=seq_mask, prefix_len=prefix_len).logits[:, -1]  # (B, V)
            torch.testing.assert_close(out.logits[:, -1], full, atol=1e-4, rtol=1e-4)
            token = full.argmax(-1)  # (B,)
            seq = torch.cat([seq, token[:, None]], dim=1)
            seq_mask = torch.cat([seq_mask, torch.ones_like(seq_mask[:, :1])], dim=1)
            out = decode_one_token(model, token[:, None], 11 + step, position_ids=(lengths + step)[:, None])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("prefix_lm", [False, True])
def test_greedy_cached_equals_uncached(variant, prefix_lm, make_tiny):
    model = make_tiny(seed=5, **VARIANTS[variant])
    prompts = _prompts(2)
    cached = generate(model, prompts, max_new_tokens=64, stop_token_ids=[], prefix_lm=prefix_lm)
    full = generate(model, prompts, max_new_tokens=64, stop_token_ids=[], prefix_lm=prefix_lm, use_cache=False)
    assert cached.tokens == full.tokens
    assert all(len(t) == 64 for t in cached.tokens)


@pytest.mark.parametrize("prefix_lm", [False, True])
def test_left_padded_batch_equals_each_prompt_alone(prefix_lm, make_tiny):
    model = make_tiny(seed=6)
    prompts = _prompts(3, lengths=(3, 13, 7))
    batch = generate(model, prompts, max_new_tokens=32, stop_token_ids=[], prefix_lm=prefix_lm)
    for row, prompt in enumerate(prompts):
        alone = generate(model, prompt, max_new_tokens=32, stop_token_ids=[], prefix_lm=prefix_lm)
        assert batch.tokens[row] == alone.tokens[0]


def test_padded_prefill_logits_equal_unpadded(make_tiny):
    model = make_tiny(seed=7)
    short = _prompts(4, lengths=(6,))[0]
    ids, mask = pad_left([short, list(range(3, 13))])
    with torch.inference_mode():
        padded = model(ids, attention_mask=mask).logits[0, -6:]
        alone = model(torch.tensor([short])).logits[0]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)


def test_cache_is_reused_and_padding_state_reset(make_tiny):
    """A padded batch followed by an unpadded one on the same cache: no stale padding leaks."""
    model = make_tiny(seed=8)
    prompts = _prompts(5, lengths=(4, 9))
    generate(model, prompts, max_new_tokens=8, stop_token_ids=[])
    cache = model.cache
    again = generate(model, [prompts[1]], max_new_tokens=8, stop_token_ids=[])
    assert model.cache is cache  # big enough: kept
    fresh = generate(model, [prompts[1]], max_new_tokens=8, stop_token_ids=[], use_cache=False)
    assert again.tokens == fresh.tokens


def test_sdpa_and_reference_generation_agree(make_tiny):
    model = make_tiny(seed=9, sliding_window=6)
    prompts = _prompts(6)
    fast = generate(model, prompts, max_new_tokens=24, stop_token_ids=[])
    ref = generate(model, prompts, max_new_tokens=24, stop_token_ids=[], attn_impl="reference")
    assert fast.tokens == ref.tokens


def test_transposed_head_equals_linear_head(make_tiny):
    model = make_tiny(seed=15)
    ids = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        plain = model(ids).logits
        model.transpose_head(True)
        fast = model(ids).logits
        torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
    # the copy follows the weight when it changes
    with torch.no_grad():
        model.output.weight.mul_(2.0)
    with torch.inference_mode():
        torch.testing.assert_close(model(ids).logits, 2 * plain, atol=1e-5, rtol=1e-5)
    # with autograd on, the real weight is used so gradients reach it
    model(ids).logits.sum().backward()
    assert model.output.weight.grad is not None
    model.transpose_head(False)
    assert model._head_t is None
