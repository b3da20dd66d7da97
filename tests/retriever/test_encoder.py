"""Our BERT encoder on a tiny seeded config: SDPA vs the reference attention path, masks, dropout."""

from __future__ import annotations

import pytest
import torch

from common.errors import InvalidInput
from retriever.encoder import BertConfig, BertEncoder, reference_attention

TINY = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)


@pytest.fixture
def model() -> BertEncoder:
    torch.manual_seed(0)
    return BertEncoder(BertConfig(**TINY)).eval()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 100, (3, 10), generator=g)  # (B, T)
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 2:] = 0
    ids[mask == 0] = 0
    return ids, mask


def test_tiny_config_forward_shapes(model):
    ids, mask = _batch()
    out = model(ids, mask)
    assert out.last_hidden_state.shape == (3, 10, 32)
    assert out.attentions is None
    assert torch.isfinite(out.last_hidden_state).all()


def test_sdpa_matches_reference_path(model):
    ids, mask = _batch()
    with torch.no_grad():
        fast = model(ids, mask, attn_impl="sdpa").last_hidden_state
        slow = model(ids, mask, attn_impl="reference").last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(fast[real], slow[real], atol=1e-5, rtol=1e-5)
    assert not torch.equal(fast[0], fast[1])  # different inputs, different outputs


def test_reference_weights_sum_to_one_and_ignore_padding(model):
    ids, mask = _batch()
    out = model(ids, mask, attn_impl="reference", output_attentions=True)
    assert out.attentions is not None and len(out.attentions) == 2
    for w in out.attentions:
        assert w.shape == (3, 4, 10, 10)  # (B, NH, T, T)
        torch.testing.assert_close(w.sum(-1), torch.ones(3, 4, 10))
        padded_keys = (mask == 0)[:, None, None, :].expand_as(w)
        assert (w[padded_keys] == 0).all()
        assert (w[~padded_keys] > 0).all()


def test_output_attentions_with_sdpa_uses_reference_weights(model):
    ids, mask = _batch()
    a = model(ids, mask, attn_impl="sdpa", output_attentions=True).attentions
    b = model(ids, mask, attn_impl="reference", output_attentions=True).attentions
    assert a is not None and b is not None
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y)


def test_reference_attention_equals_sdpa_function():
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 3, 7, 8, generator=g) for _ in range(3))  # (B, NH, T, D)
    mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    mask[1, ..., 4:] = False
    y, w = reference_attention(q, k, v, mask)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)
    assert w.shape == (2, 3, 7, 7)


def test_padding_does_not_change_real_tokens(model):
    ids, _ = _batch()
    alone = model(ids[:1, :4], torch.ones(1, 4, dtype=torch.long)).last_hidden_state  # (1, 4, H)
    padded_ids = torch.cat([ids[:1, :4], torch.zeros(1, 6, dtype=torch.long)], dim=1)
    padded_mask = torch.cat([torch.ones(1, 4), torch.zeros(1, 6)], dim=1).long()
    padded = model(padded_ids, padded_mask).last_hidden_state[:, :4]
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=1e-5)


def test_dropout_only_in_training(model):
    ids, mask = _batch()
    with torch.no_grad():
        a, b = model(ids, mask).last_hidden_state, model(ids, mask).last_hidden_state
        assert torch.equal(a, b)
        model.train()
        c, d = model(ids, mask).last_hidden_state, model(ids, mask).last_hidden_state
    assert not torch.equal(c, d)


def test_token_type_ids_default_to_zero(model):
    ids, mask = _batch()
    a = model(ids, mask).last_hidden_state
    b = model(ids, mask, torch.zeros_like(ids)).last_hidden_state
    torch.testing.assert_close(a, b)
    c = model(ids, mask, torch.ones_like(ids)).last_hidden_state
    assert not torch.allclose(a, c)


def test_config_from_hf_dict_keeps_extras_and_round_trips():
    d = {**TINY, "model_type": "bert", "architectures": ["BertModel"], "gradient_checkpointing": False, "_name_or_path": "x"}
    cfg = BertConfig.from_dict(d)
    assert cfg.hidden_size == 32 and cfg.head_dim == 8
    assert cfg.extra["gradient_checkpointing"] is False
    back = cfg.to_dict()
    assert back["model_type"] == "bert" and back["num_attention_heads"] == 4 and "_name_or_path" not in back
    assert BertConfig.from_dict(back).to_dict() == back


@pytest.mark.parametrize(
    "bad",
    [
        {"hidden_size": 30, "num_attention_heads": 4},
        {"hidden_act": "swish"},
        {"position_embedding_type": "relative_key"},
    ],
)
def test_config_rejects_what_we_do_not_model(bad):
    with pytest.raises(InvalidInput):
        BertConfig.from_dict({**TINY, **bad})


def test_unknown_attn_impl_and_too_long_input_raise(model):
    ids, mask = _batch()
    with pytest.raises(InvalidInput):
        model(ids, mask, attn_impl="flash")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        model(torch.ones(1, 65, dtype=torch.long))


def test_all_ones_mask_equals_no_mask(model):
    ids, _ = _batch()
    a = model(ids, torch.ones_like(ids)).last_hidden_state
    b = model(ids, None).last_hidden_state
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
