"""Our decoder against ``transformers`` on the same weights: Llama, Qwen2 (q/k/v biases, tied
head), Mistral (sliding window), RoPE scaling, sharded checkpoints."""

from __future__ import annotations

import pytest
import torch

from generator.checkpoint import load_decoder
from generator.generate import generate

transformers = pytest.importorskip("transformers")

SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=128, max_position_embeddings=256)


def _hf_model(kind: str, seed: int, randomize_params, **extra):
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    classes = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM),
               "mistral": (MistralConfig, MistralForCausalLM)}
    cfg_cls, model_cls = classes[kind]
    torch.manual_seed(seed)
    model = model_cls(cfg_cls(**{**SHAPE, **extra})).eval()
    randomize_params(model, seed, scale=0.2)
    if model.config.tie_word_embeddings:
        model.tie_weights()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def _load(hf, tmp_path, **save_kw):
    hf.save_pretrained(tmp_path, **save_kw)
    model, tokenizer = load_decoder(tmp_path)
    assert tokenizer is None
    return model


def _inputs(seed: int):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 128, (b, t), generator=g) for b, t in ((1, 1), (1, 7), (3, 19), (2, 64))]


CASES = {
    "llama": ("llama", {}),
    "llama-bias": ("llama", dict(attention_bias=True, mlp_bias=True)),
    "llama-linear": ("llama", dict(rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 500.0})),
    "llama3-rope": ("llama", dict(rope_parameters={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                    "high_freq_factor": 4.0, "original_max_position_embeddings": 32,
                                                    "rope_theta": 10000.0})),
    "qwen2": ("qwen2", dict(tie_word_embeddings=True)),
    "mistral-window": ("mistral", dict(sliding_window=8)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_transformers(case, tmp_path, randomize_params):
    kind, extra = CASES[case]
    hf = _hf_model(kind, 0, randomize_params, **extra)
    ours = _load(hf, tmp_path)
    if kind == "qwen2":
        assert ours.config.qkv_bias and not ours.config.out_bias and ours.config.tie_word_embeddings
        assert ours.output.weight is ours.tok_embeddings.weight
    if kind == "mistral":
        assert ours.config.sliding_window == 8
    for ids in _inputs(1):
        with torch.no_grad():
            expected = hf(ids).logits
            got = ours(ids).logits
        assert (expected - got).abs().max().item() <= 1e-4, case


@pytest.mark.parametrize("case", ["llama", "qwen2", "mistral-window"])
def test_greedy_generation_matches_transformers(case, tmp_path, randomize_params):
    kind, extra = CASES[case]
    hf = _hf_model(kind, 1, randomize_params, **extra)
    ours = _load(hf, tmp_path)
    prompts = [[5, 17, 99, 3, 42, 8, 8, 11, 60, 2, 7], [33, 21, 9, 120, 4]]
    for prompt in prompts:
        expected = hf.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False)[0, len(prompt):]
        got = generate(ours, prompt, max_new_tokens=24, stop_token_ids=[]).tokens[0]
        assert got == expected.tolist()
    # a left-padded batch, as transformers pads it
    ids = torch.tensor([[0] * 6 + prompts[1], prompts[0]])
    mask = (torch.arange(11)[None] >= torch.tensor([[6], [0]])).long()
    expected = hf.generate(ids, attention_mask=mask, max_new_tokens=16, do_sample=False)[:, 11:]
    got = generate(ours, [prompts[1], prompts[0]], max_new_tokens=16, stop_token_ids=[]).tokens
    assert got == expected.tolist()


def test_sharded_checkpoint_loads(tmp_path, randomize_params):
    hf = _hf_model("llama", 2, randomize_params)
    ours = _load(hf, tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    ids = _inputs(3)[2]
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids).logits).abs().max().item() <= 1e-4


def test_export_round_trip_into_transformers(make_tiny):
    """Our weights copied into LlamaForCausalLM (the benchmark's peer) give the same logits."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from generator.checkpoint import to_hf_llama

    ours = make_tiny(seed=3, tie_word_embeddings=True)
    cfg, state = to_hf_llama(ours)
    hf = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in cfg.items() if k != "model_type"})).eval()
    hf.load_state_dict(state, strict=False)
    hf.tie_weights()
    ids = _inputs(4)[2]
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids).logits).abs().max().item() <= 1e-4
