"""Loading and saving encoder directories: key prefixes, missing weights, round trips, and that
sentence-transformers loads what we save."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from common.errors import CheckpointError
from retriever.checkpoint import hf_to_ours, load_checkpoint, ours_to_hf
from retriever.embedder import SentenceEncoder
from retriever.encoder import BertConfig, BertEncoder
from retriever.pooling import PoolingConfig
from retriever.tokenizer import Tokenizer

WORDS = ["the", "cat", "sat", "on", "mat", "dog", "ran", "café", "photo", "##synthesis", "plants", "a", "."]
TEXTS = ["the cat sat on the mat", "a dog ran", "", "café photosynthesis plants " * 20, "unknownword ."]


def tiny_encoder(tmp_path: Path, normalize: bool = True, mode: str = "mean") -> SentenceEncoder:
    tmp_path.mkdir(parents=True, exist_ok=True)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n", encoding="utf-8")
    tok = Tokenizer.from_vocab(vocab)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
    return SentenceEncoder(BertEncoder(cfg), tok, PoolingConfig(mode=mode, normalize=normalize), max_length=16, device="cpu")


def _hf_state(model: BertEncoder, prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in ours_to_hf(model.state_dict(), model.config).items()}


@pytest.mark.parametrize("prefix", ["", "bert.", "0.auto_model.", "model."])
def test_hf_names_with_any_prefix_map_back_exactly(tmp_path, prefix):
    enc = tiny_encoder(tmp_path)
    state = _hf_state(enc.model, prefix)
    state[prefix + "pooler.dense.weight"] = torch.zeros(32, 32)  # present in BERT checkpoints, unused
    state[prefix + "embeddings.position_ids"] = torch.arange(64)
    mapped = hf_to_ours(state, enc.model.config)
    own = enc.model.state_dict()
    assert set(mapped) == set(own)
    for k in own:
        assert torch.equal(mapped[k], own[k]), k


def test_old_layernorm_names_are_accepted(tmp_path):
    enc = tiny_encoder(tmp_path)
    state = _hf_state(enc.model, "bert.")
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v for k, v in state.items()}
    mapped = hf_to_ours(state, enc.model.config)
    assert torch.equal(mapped["embeddings.norm.weight"], enc.model.state_dict()["embeddings.norm.weight"])


def test_missing_weight_is_a_checkpoint_error_naming_it(tmp_path):
    enc = tiny_encoder(tmp_path)
    state = _hf_state(enc.model, "bert.")
    del state["bert.encoder.layer.1.attention.self.key.weight"]
    with pytest.raises(CheckpointError, match="layer.1.attention.self.key.weight"):
        hf_to_ours(state, enc.model.config)


def test_non_bert_weights_are_a_checkpoint_error(tmp_path):
    enc = tiny_encoder(tmp_path)
    with pytest.raises(CheckpointError, match="not a BERT checkpoint"):
        hf_to_ours({"transformer.wte.weight": torch.zeros(3, 3)}, enc.model.config)


def test_save_then_load_round_trip(tmp_path):
    enc = tiny_encoder(tmp_path / "src", normalize=False, mode="max")
    out = enc.save_pretrained(tmp_path / "ckpt")
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "modules.json", "1_Pooling/config.json", "sentence_bert_config.json"):
        assert (out / name).is_file(), name
    again = SentenceEncoder.from_pretrained(out, device="cpu")
    assert again.pooling == enc.pooling and again.max_length == 16 and again.dim == 32
    np.testing.assert_array_equal(again.encode(TEXTS), enc.encode(TEXTS))
    assert json.loads((out / "sentence_bert_config.json").read_text())["max_seq_length"] == 16


def test_saved_directory_loads_in_sentence_transformers_with_equal_embeddings(tmp_path):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    st_mod = pytest.importorskip("sentence_transformers")
    enc = tiny_encoder(tmp_path / "src")
    out = enc.save_pretrained(tmp_path / "ckpt")
    st = st_mod.SentenceTransformer(str(out), device="cpu")
    assert st.max_seq_length == 16
    theirs = st.encode(TEXTS, convert_to_numpy=True)
    np.testing.assert_allclose(enc.encode(TEXTS), theirs, atol=1e-5)


def test_pytorch_bin_and_subfolder_layout(tmp_path):
    """Older sentence-transformers layout: the BERT files in 0_Transformer/, weights as .bin."""
    enc = tiny_encoder(tmp_path / "src")
    out = enc.save_pretrained(tmp_path / "flat")
    root = tmp_path / "nested"
    (root / "0_Transformer").mkdir(parents=True)
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json", "sentence_bert_config.json"):
        (root / "0_Transformer" / f).write_bytes((out / f).read_bytes())
    torch.save(_hf_state(enc.model, ""), root / "0_Transformer" / "pytorch_model.bin")
    (root / "1_Pooling").mkdir()
    (root / "1_Pooling" / "config.json").write_bytes((out / "1_Pooling" / "config.json").read_bytes())
    modules = json.loads((out / "modules.json").read_text())
    modules[0]["path"] = "0_Transformer"
    (root / "modules.json").write_text(json.dumps(modules))
    again = SentenceEncoder.from_pretrained(root, device="cpu")
    np.testing.assert_array_equal(again.encode(TEXTS), enc.encode(TEXTS))


def test_broken_directories_raise_checkpoint_errors(tmp_path):
    enc = tiny_encoder(tmp_path / "src")
    out = enc.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "nope")
    (out / "model.safetensors").rename(out / "weights.bak")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(out)
    # weights of the wrong shape for the config
    state = _hf_state(enc.model, "")
    state["embeddings.word_embeddings.weight"] = torch.zeros(7, 32)
    save_file(state, str(out / "model.safetensors"))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(out)
    (out / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json"):
        load_checkpoint(out)


def test_unsupported_module_is_refused(tmp_path):
    enc = tiny_encoder(tmp_path / "src")
    out = enc.save_pretrained(tmp_path / "ckpt")
    modules = json.loads((out / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (out / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(CheckpointError, match="Dense"):
        load_checkpoint(out)


def test_plain_bert_folder_means_mean_pooling_without_normalize(tmp_path):
    enc = tiny_encoder(tmp_path / "src")
    out = enc.save_pretrained(tmp_path / "ckpt")
    for name in ("modules.json", "sentence_bert_config.json"):
        (out / name).unlink()
    ckpt = load_checkpoint(out)
    assert ckpt.pooling == PoolingConfig(mode="mean", normalize=False)
    assert ckpt.max_length == 16  # from tokenizer_config.json model_max_length


@pytest.mark.slow
def test_compiled_encoder_matches_eager(tmp_path):
    """The torch.compile fast path against its eager twin (compiles a tiny model: ~10-30 s)."""
    enc = tiny_encoder(tmp_path)
    fast = SentenceEncoder(enc.model, enc.tokenizer, enc.pooling, enc.max_length, device="cpu", compile=True)
    np.testing.assert_allclose(fast.encode(TEXTS, batch_size=2), enc.encode(TEXTS, batch_size=2), atol=1e-5)
