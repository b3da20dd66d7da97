"""Our checkpoint format round-trips; BERT weights warm-start a decoder that reproduces BERT."""

from __future__ import annotations

import json

import pytest
import torch

from common.errors import CheckpointError
from generator.checkpoint import (
    extend_positions,
    from_bert_checkpoint,
    load_decoder,
    save_pretrained,
)
from generator.config import DecoderConfig


def test_save_and_load_round_trip(tmp_path, make_tiny):
    for tied in (False, True):
        model = make_tiny(seed=20, tie_word_embeddings=tied, qkv_bias=True, sliding_window=16)
        model.config.eos_token_id = [2]
        save_pretrained(model, tmp_path / str(tied))
        cfg = json.loads((tmp_path / str(tied) / "config.json").read_text())
        assert cfg["attend_decoder"] is True
        loaded, tokenizer = load_decoder(tmp_path / str(tied))
        assert tokenizer is None
        assert loaded.config == model.config
        assert (loaded.output.weight is loaded.tok_embeddings.weight) == tied
        ids = torch.randint(0, 128, (2, 9))
        with torch.no_grad():
            assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_round_trip_with_tokenizer_and_dtype(tmp_path, make_tiny, minilm_dir):
    from retriever.tokenizer import Tokenizer

    model = make_tiny(seed=21)
    save_pretrained(model, tmp_path, tokenizer=Tokenizer.from_dir(minilm_dir))
    loaded, tokenizer = load_decoder(tmp_path, dtype=torch.bfloat16)
    assert tokenizer is not None and tokenizer.encode("hello world").ids[0] == tokenizer.cls_id
    assert loaded.dtype == torch.bfloat16 and loaded.rope_cos.dtype == torch.float32
    with torch.no_grad():
        out = loaded(torch.tensor([[1, 2, 3]])).logits
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_bad_directories_raise_checkpoint_error(tmp_path, make_tiny):
    with pytest.raises(CheckpointError, match="config.json"):
        load_decoder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(CheckpointError, match="gpt2"):
        load_decoder(tmp_path)
    save_pretrained(make_tiny(), tmp_path / "ours")
    (tmp_path / "ours" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_decoder(tmp_path / "ours")
    # weights that do not fit the config
    save_pretrained(make_tiny(), tmp_path / "mismatch")
    cfg = json.loads((tmp_path / "mismatch" / "config.json").read_text())
    cfg["decoder_config"]["n_layers"] = 3
    (tmp_path / "mismatch" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="missing"):
        load_decoder(tmp_path / "mismatch")


def test_from_hf_config_fields():
    cfg = DecoderConfig.from_hf_config({
        "model_type": "qwen2", "vocab_size": 1000, "hidden_size": 64, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 1, "intermediate_size": 96,
        "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "rope_theta": 1e6, "tie_word_embeddings": True,
        "use_sliding_window": True, "sliding_window": 32, "max_window_layers": 2, "eos_token_id": 7,
    })
    assert (cfg.qkv_bias, cfg.out_bias, cfg.n_kv_heads, cfg.rope_theta) == (True, False, 1, 1e6)
    assert cfg.sliding_window == 32 and cfg.sliding_window_layers == [2, 3]
    assert [cfg.window_for_layer(i) for i in range(4)] == [None, None, 32, 32]
    assert cfg.eos_token_id == [7]
    legacy = DecoderConfig.from_hf_config({
        "model_type": "llama", "vocab_size": 10, "hidden_size": 64, "num_hidden_layers": 1,
        "num_attention_heads": 4, "intermediate_size": 96, "rope_scaling": {"type": "linear", "factor": 2.0},
    })
    assert legacy.rope_scaling == {"rope_type": "linear", "factor": 2.0}
    with pytest.raises(CheckpointError, match="yarn"):
        DecoderConfig(rope_scaling={"rope_type": "yarn", "factor": 2.0})
    assert 20e6 < DecoderConfig.preset("attend-qa-small").num_params() < 30e6


def test_extend_positions_tiles():
    table = torch.arange(12.0).view(4, 3)
    out = extend_positions(table, 10)
    assert out.shape == (10, 3)
    assert torch.equal(out[:4], table) and torch.equal(out[4:8], table) and torch.equal(out[8:], table[:2])


def test_bert_warm_start_reproduces_bert(minilm_dir):
    """With a fully bidirectional mask, the post-norm/GELU/learned-position decoder holding
    all-MiniLM-L6-v2 computes BertModel's hidden states."""
    transformers = pytest.importorskip("transformers")
    from retriever.tokenizer import Tokenizer

    bert = transformers.BertModel.from_pretrained(str(minilm_dir)).eval()
    model = from_bert_checkpoint(minilm_dir, max_seq_len=1024)
    assert model.config.max_seq_len == 1024 and model.pos_embeddings.weight.shape == (1024, 384)
    tok = Tokenizer.from_dir(minilm_dir)
    texts = ["Plants convert sunlight into glucose.", "A volcano erupts when magma rises through the crust and escapes."]
    for text in texts:
        ids = torch.tensor([tok.encode(text).ids])
        with torch.no_grad():
            expected = bert(ids).last_hidden_state
            got = model(ids, prefix_len=ids.shape[1], output_hidden=True, compute_logits=False).hidden
            causal = model(ids, output_hidden=True, compute_logits=False).hidden
        assert (expected - got).abs().max().item() <= 1e-4
        assert (expected - causal).abs().max().item() > 1e-2  # the mask matters
    # load_decoder recognises a BERT directory and brings its tokenizer
    loaded, tokenizer = load_decoder(minilm_dir)
    assert tokenizer is not None and loaded.config.norm_placement == "post"
