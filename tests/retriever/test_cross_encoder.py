"""The cross-encoder reranker: pair layout, the fast path against its reference twin, saving and
loading, and warm starts from an encoder checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from toydata import build_tiny_encoder

from common.errors import CheckpointError, InvalidInput
from retriever.cross_encoder import PairSettings, Reranker, load_reranker, pair_ids, warm_start

TEXTS = [
    "Lava flows downhill from the volcano.",
    "Glaciers carve valleys as the ice moves slowly over many thousands of years, leaving moraines.",
    "Python",
    "A compiler translates source code into machine code; an interpreter runs it line by line instead.",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, minilm_dir):
    enc_dir = build_tiny_encoder(tmp_path_factory.mktemp("enc"), minilm_dir)
    model, tok = warm_start(enc_dir, PairSettings(max_length=48, max_query_tokens=8), seed=3)
    with torch.no_grad():  # a head large enough that scores differ visibly
        model.classifier.weight.normal_(0, 1.0)
    return Reranker(model, tok, PairSettings(max_length=48, max_query_tokens=8), device="cpu", precision="fp32")


def test_pair_layout(tiny):
    tok = tiny.tokenizer
    query = "why does lava flow downhill from a volcano at all today"
    (ids, types), = pair_ids(tok, query, [TEXTS[1] * 5], tiny.settings)
    q = tok.encode(query, add_special_tokens=False).ids[:8]
    assert ids[0] == tok.cls_id and ids[1 : 1 + len(q)] == q and ids[1 + len(q)] == tok.sep_id
    assert ids[-1] == tok.sep_id and len(ids) == tiny.settings.max_length
    assert types == [0] * (len(q) + 2) + [1] * (len(ids) - len(q) - 2)


def test_fast_path_matches_the_reference(tiny):
    fast = tiny.score("how do volcanoes erupt", TEXTS, batch_size=3)  # padded, reordered batches
    ref = tiny.score_reference("how do volcanoes erupt", TEXTS)
    np.testing.assert_allclose(fast, ref, rtol=1e-4, atol=1e-5)
    assert np.ptp(fast) > 1e-3  # the texts get different scores
    assert tiny.score("anything", []).shape == (0,)


def test_bf16_stays_close(tiny):
    bf16 = Reranker(tiny.model, tiny.tokenizer, tiny.settings, device="cpu", precision="bf16")
    np.testing.assert_allclose(bf16.score("volcano", TEXTS), tiny.score_reference("volcano", TEXTS), atol=0.1)


def test_save_and_load_roundtrip(tiny, tmp_path):
    path = tiny.save_pretrained(tmp_path / "rr")
    config = json.loads((path / "config.json").read_text())
    assert config["attend_reranker"] == {"format": "attend-reranker", "max_length": 48, "max_query_tokens": 8}
    loaded = load_reranker(path, device="cpu", precision="fp32")
    np.testing.assert_allclose(loaded.score("ice", TEXTS), tiny.score("ice", TEXTS), rtol=1e-5, atol=1e-6)


def test_warm_start_copies_the_encoder(tmp_path, minilm_dir):
    from retriever.checkpoint import load_checkpoint

    enc_dir = build_tiny_encoder(tmp_path / "enc", minilm_dir)
    model, _ = warm_start(enc_dir, PairSettings(max_length=64, max_query_tokens=8))
    source = load_checkpoint(enc_dir).model.state_dict()
    for name, value in model.encoder.state_dict().items():
        assert torch.equal(value, source[name]), name
    with pytest.raises(InvalidInput, match="positions"):
        warm_start(enc_dir, PairSettings(max_length=256))


def test_bad_directories_and_settings(tmp_path, minilm_dir):
    with pytest.raises(CheckpointError, match="neither"):
        load_reranker(tmp_path / "missing")
    enc_dir = build_tiny_encoder(tmp_path / "enc", minilm_dir)
    with pytest.raises(CheckpointError, match="attend_reranker"):
        load_reranker(enc_dir)  # an encoder is not a reranker
    with pytest.raises(InvalidInput):
        PairSettings(max_length=32, max_query_tokens=40)
