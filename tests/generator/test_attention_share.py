"""Attention shares: the arithmetic on a hand-made tensor, and the one-pass attention against the
cached decode it explains."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from toydata import TOY_DOCS, sharpen_attention

from generator.attention_share import (
    answer_attention,
    chunk_shares,
    prompt_attention,
    token_shares,
    uniform_shares,
)


def test_shares_on_a_hand_made_attention_tensor():
    rng = np.random.default_rng(0)
    L, H, A, P = 2, 3, 2, 6  # noqa: N806
    att = rng.random((L, H, A, P + A))  # rows over prompt + answer keys, not normalised
    before = att.copy()
    pa = prompt_attention(att, P)
    assert np.array_equal(att, before)  # input untouched
    assert pa.shape == (L, H, A, P) and np.allclose(pa.sum(-1), 1.0)
    tok = token_shares(pa)
    assert tok.shape == (L, H, P) and np.allclose(tok.sum(-1), 1.0)
    spans = [(1, 3), (4, 6)]
    shares = chunk_shares(tok, spans)
    assert shares.shape == (2, L, H)
    expected = np.stack([(att[..., :P] / att[..., :P].sum(-1, keepdims=True))[..., s:e].sum(-1).mean(-1)
                         for s, e in spans])
    assert np.allclose(shares, expected)
    assert uniform_shares(spans, P) == [2 / 6, 2 / 6]
    # all of the attention on chunk 0's tokens: share 1 there, 0 elsewhere
    peaked = np.zeros((1, 1, 1, P + 1))
    peaked[..., 1] = 3.0
    peaked[..., 2] = 1.0
    peaked[..., P] = 5.0  # mass on an answer key is dropped by the renormalisation
    s = chunk_shares(token_shares(prompt_attention(peaked, P)), spans)
    assert np.allclose(s[:, 0, 0], [1.0, 0.0])
    assert np.allclose(token_shares(prompt_attention(peaked, P))[0, 0, 1:3], [0.75, 0.25])
    assert np.allclose(prompt_attention(np.zeros((1, 1, 1, 4)), 3), 0.0)  # no mass: zeros, not NaN


@pytest.fixture(scope="module")
def sharp_model(minilm_dir):
    """A tiny random GroundedQA whose attention is far from uniform (scaled q/k weights)."""
    from generator.config import DecoderConfig
    from generator.model import Decoder
    from generator.prompt import PromptBuilder
    from generator.qa_model import GroundedQA, QAConfig
    from retriever.tokenizer import Tokenizer

    tok = Tokenizer.from_dir(minilm_dir)
    cfg = DecoderConfig(vocab_size=tok.vocab_size, dim=32, n_layers=2, n_heads=2, intermediate_size=64,
                        max_seq_len=512, norm="layer", norm_placement="post", mlp="gelu", activation="gelu",
                        positions="learned", qkv_bias=True, out_bias=True, mlp_bias=True, final_norm=False,
                        tie_word_embeddings=True)
    torch.manual_seed(1)
    model = GroundedQA(Decoder(cfg), QAConfig(pointer_dim=16, max_answer_tokens=6)).eval()
    sharpen_attention(model)
    return model, PromptBuilder(tok)


def test_one_pass_attention_matches_the_cached_decode(sharp_model):
    """The diagnostic pass must see what decoding saw: its answer rows equal the attention of the
    prefill's [ANS] row and of every cached decode step (same mask, same positions)."""
    from generator.prompt import ContextChunk
    from generator.qa_model import parallel_context_mask

    model, builder = sharp_model
    prompt = builder.build("why do volcanoes erupt", [ContextChunk(i, d["text"]) for i, d in enumerate(TOY_DOCS[:4])])
    qa = model.read(prompt, builder.answer_id, abstain_threshold=1.0)
    assert not qa.abstained and len(qa.answer_ids) >= 2
    ids = list(qa.answer_ids)
    full = answer_attention(model.decoder, prompt, ids)  # (L, H, A, P + A)
    p, a = len(prompt.input_ids), len(ids)
    cfg = model.decoder.config
    assert full.shape == (cfg.n_layers, cfg.n_heads, a, p + a)
    assert torch.allclose(full.sum(-1), torch.ones(()), atol=1e-5)
    assert float(full[..., 0, p + 1 :].abs().max()) == 0.0  # causal among answer steps
    assert float(full.max()) > 5.0 / p  # sharp enough for the comparison to mean something

    dec = model.decoder
    dec.setup_caches(1, cfg.max_seq_len)
    a0 = prompt.answer_start_position
    with torch.inference_mode():
        x = torch.tensor([prompt.input_ids + ids[:1]])
        pos = torch.tensor([prompt.position_ids + [a0]])
        mask = parallel_context_mask(torch.tensor([prompt.block]), torch.tensor([p]), torch.ones_like(x, dtype=torch.bool))
        out = dec(x, start_pos=0, position_ids=pos, attn_mask=mask, attn_impl="reference", output_attentions=True,
                  compute_logits=False)
        for layer, w in enumerate(out.attentions):
            assert torch.allclose(w[0, :, -1], full[layer, :, 0, : p + 1], atol=1e-5)
        for step in range(1, a):
            out = dec(torch.tensor([[ids[step]]]), start_pos=p + step, position_ids=torch.tensor([[a0 + step]]),
                      attn_impl="reference", output_attentions=True, compute_logits=False)
            for layer, w in enumerate(out.attentions):
                assert torch.allclose(w[0, :, 0, : p + step + 1], full[layer, :, step, : p + step + 1], atol=1e-5)
