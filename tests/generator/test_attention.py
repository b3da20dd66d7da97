"""The SDPA path equals the reference attention path, and the reference weights obey the masks."""

from __future__ import annotations

import pytest
import torch

from generator.attention import build_attention_mask, prefix_flags

BERT_LIKE = dict(norm="layer", norm_placement="post", final_norm=False, mlp="gelu", activation="gelu",
                 positions="learned", qkv_bias=True, out_bias=True, mlp_bias=True, embedding_norm=True,
                 type_embedding=True, n_kv_heads=4)
CONFIGS = {
    "gqa": {},
    "mha-bias": dict(n_kv_heads=4, qkv_bias=True),
    "window": dict(sliding_window=5, sliding_window_layers=[1]),
    "bert-like": BERT_LIKE,
}


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 128, (3, 12), generator=g)
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[1, :4] = 0  # left padding
    mask[2, :9] = 0
    return ids, mask


def test_mask_by_hand():
    valid = torch.tensor([[False, True, True, True, True]])
    prefix = prefix_flags(valid, 2)  # real tokens 1 and 2 form the prefix
    assert prefix.tolist() == [[False, True, True, False, False]]
    mask = build_attention_mask(torch.arange(5), valid, prefix=prefix, window=None)[0, 0].int()
    assert mask.tolist() == [
        [1, 0, 0, 0, 0],  # padding query sees only itself
        [0, 1, 1, 0, 0],  # prefix sees the whole prefix both ways
        [0, 1, 1, 0, 0],
        [0, 1, 1, 1, 0],  # causal after the prefix
        [0, 1, 1, 1, 1],
    ]
    windowed = build_attention_mask(torch.arange(5), torch.ones(1, 5, dtype=torch.bool), window=2)[0, 0].int()
    assert windowed[4].tolist() == [0, 0, 0, 1, 1]
    decode = build_attention_mask(torch.tensor([4]), valid)[0, 0].int()
    assert decode.tolist() == [[0, 1, 1, 1, 1]]


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("case", ["causal", "padded", "prefix", "padded-prefix"])
def test_sdpa_equals_reference(name, case, make_tiny):
    model = make_tiny(seed=1, **CONFIGS[name])
    ids, mask = _batch()
    kwargs = {}
    if "padded" in case:
        kwargs["attention_mask"] = mask
    if "prefix" in case:
        kwargs["prefix_len"] = torch.tensor([5, 3, 2])
    with torch.no_grad():
        fast = model(ids, **kwargs).logits
        ref = model(ids, attn_impl="reference", output_attentions=True, **kwargs)
    assert torch.allclose(fast, ref.logits, atol=1e-5, rtol=1e-5)
    assert len(ref.attentions) == model.config.n_layers
    for w in ref.attentions:
        assert w.shape == (3, model.config.n_heads, 12, 12)
        torch.testing.assert_close(w.sum(-1), torch.ones(3, model.config.n_heads, 12))


def test_reference_weights_respect_masks(make_tiny):
    model = make_tiny(seed=2, sliding_window=4, sliding_window_layers=[1])
    ids, mask = _batch(1)
    with torch.no_grad():
        out = model(ids, attention_mask=mask, prefix_len=torch.tensor([6, 3, 1]), attn_impl="reference", output_attentions=True)
    full, windowed = out.attentions
    i = torch.arange(12)
    future = i[None, :] > i[:, None]  # (Tq, Tk) key after query
    # Row 0: the first 6 tokens are a bidirectional prefix, the rest is causal.
    row0 = full[0]  # (H, T, T)
    assert (row0[:, :6, :6] > 0).all()
    assert (row0[:, 6:][:, future[6:]] == 0).all()
    # Row 1: four padding slots are never attended to by real tokens.
    assert (full[1][:, 4:, :4] == 0).all()
    assert (full[1][:, 4:, 4:7] > 0).all()  # its 3-token prefix
    # Row 2: one-token prefix = plain causal; padding masked.
    assert (full[2][:, 9:][:, future[9:]] == 0).all()
    assert (full[2][:, 9:, :9] == 0).all()
    # Window of 4 on layer 1: a late causal query ignores keys 4+ positions back.
    assert (windowed[0][:, 11, :8] == 0).all()
    assert (windowed[0][:, 11, 8:] > 0).all()


def test_prefix_changes_the_prefix_but_not_later_causal_masks(make_tiny):
    model = make_tiny(seed=3)
    ids = torch.randint(0, 128, (1, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        causal = model(ids).logits
        prefix = model(ids, prefix_len=4).logits
    assert not torch.allclose(causal[:, :3], prefix[:, :3], atol=1e-4)  # early tokens see ahead
    # the prefix of length 1 is the causal mask
    with torch.no_grad():
        assert torch.allclose(model(ids, prefix_len=1).logits, causal, atol=1e-6)


def test_unknown_attn_impl_rejected(make_tiny):
    from common.errors import InvalidInput

    model = make_tiny()
    with pytest.raises(InvalidInput):
        model(torch.zeros(1, 3, dtype=torch.long), attn_impl="nope")


def test_explicit_attn_mask_equals_built_masks(make_tiny):
    """An explicit mask gives what the built one gives, on both paths, with and without the cache."""
    from common.errors import InvalidInput

    model = make_tiny(seed=4)
    ids, mask = _batch(2)
    prefix_len = torch.tensor([4, 2, 1])
    built = build_attention_mask(torch.arange(12), mask.bool(), prefix=prefix_flags(mask.bool(), prefix_len))
    with torch.no_grad():
        expected = model(ids, attention_mask=mask, prefix_len=prefix_len).logits
        for impl in ("sdpa", "reference"):
            got = model(ids, attention_mask=mask, attn_mask=built, attn_impl=impl).logits
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        model.setup_caches(3, 16)
        cached = model(ids, start_pos=0, attention_mask=mask, attn_mask=built).logits
        torch.testing.assert_close(cached, expected, atol=1e-5, rtol=1e-5)
        # an explicit mask that hides everything but the token itself changes the result
        alone = torch.eye(12, dtype=torch.bool)[None, None]
        assert not torch.allclose(model(ids, attn_mask=alone).logits, expected, atol=1e-3)
        with pytest.raises(InvalidInput):
            model(ids, attn_mask=built[:, :, :5])


def test_flash_falls_back_to_sdpa_off_cuda(make_tiny):
    """``attn_impl="flash"`` needs CUDA, half precision and no mask; elsewhere it is SDPA."""
    model = make_tiny(seed=5)
    ids, mask = _batch(3)
    with torch.no_grad():
        for kwargs in ({}, {"attention_mask": mask}):
            torch.testing.assert_close(model(ids, attn_impl="flash", **kwargs).logits, model(ids, **kwargs).logits)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sdpa_equals_reference_on_cuda_half(make_tiny):
    model = make_tiny(seed=6).to("cuda", torch.bfloat16)
    ids, mask = (t.cuda() for t in _batch(4))
    with torch.no_grad():
        for kwargs in ({}, {"attention_mask": mask}, {"prefix_len": 4}):
            fast = model(ids, **kwargs).logits.float()
            ref = model(ids, attn_impl="reference", **kwargs).logits.float()
            torch.testing.assert_close(fast, ref, atol=5e-2, rtol=5e-2)
