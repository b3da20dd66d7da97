"""Toy data and helpers shared by the tests, imported as ``toydata`` (conftest modules cannot be
imported by name reliably when several folders have one)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from fastapi.testclient import TestClient
from torch import nn

from common.settings import Settings
from generator.config import DecoderConfig
from generator.model import Decoder

# A toy collection on three topics; queries have judged documents so retrieval metrics can be checked.
TOY_CORPUS = {
    "d1": ("Photosynthesis", "Plants convert sunlight, water and carbon dioxide into glucose and oxygen in their chloroplasts."),
    "d2": ("Chlorophyll", "Chlorophyll is the green pigment that absorbs red and blue light for photosynthesis."),
    "d3": ("Volcanoes", "A volcano erupts when magma from the mantle rises through the crust and escapes as lava."),
    "d4": ("Plate tectonics", "The crust is broken into tectonic plates that drift on the mantle and cause earthquakes."),
    "d5": ("Python language", "Python is a programming language with dynamic typing and garbage collection."),
    "d6": ("Compilers", "A compiler translates source code written in a programming language into machine code."),
    "d7": ("Café culture", "Parisian cafés serve espresso, croissants and crème brûlée on busy terraces."),
    "d8": ("Empty-ish", "."),
}
TOY_QUERIES = {
    "q1": "how do plants make glucose from sunlight",
    "q2": "why do volcanoes erupt lava",
    "q3": "programming language compiler",
    "q4": "earthquakes and tectonic plates",
}
TOY_QRELS = {"q1": {"d1": 2, "d2": 1}, "q2": {"d3": 1}, "q3": {"d5": 1, "d6": 1}, "q4": {"d4": 1}}


def write_beir(root: Path, corpus=TOY_CORPUS, queries=TOY_QUERIES, qrels=TOY_QRELS, split: str = "test") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as f:
        for did, (title, text) in corpus.items():
            f.write(json.dumps({"_id": did, "title": title, "text": text}) + "\n")
    with open(root / "queries.jsonl", "w", encoding="utf-8") as f:
        for qid, text in queries.items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    (root / "qrels").mkdir(exist_ok=True)
    with open(root / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qid, docs in qrels.items():
            for did, rel in docs.items():
                f.write(f"{qid}\t{did}\t{rel}\n")
    return root



# Eight short documents on four topics (the shape of the suite's toy corpus) with metadata.
TOY_DOCS = [
    {"id": "d1", "title": "Photosynthesis", "text": "Plants convert sunlight, water and carbon dioxide into glucose and oxygen in their chloroplasts.", "metadata": {"topic": "bio", "n": 1}},
    {"id": "d2", "title": "Chlorophyll", "text": "Chlorophyll is the green pigment that absorbs red and blue light for photosynthesis.", "metadata": {"topic": "bio", "n": 2}},
    {"id": "d3", "title": "Volcanoes", "text": "A volcano erupts when magma from the mantle rises through the crust and escapes as lava.", "metadata": {"topic": "geo", "n": 3}},
    {"id": "d4", "title": "Plate tectonics", "text": "The crust is broken into tectonic plates that drift on the mantle and cause earthquakes.", "metadata": {"topic": "geo", "n": 4}},
    {"id": "d5", "title": "Python language", "text": "Python is a programming language with dynamic typing and garbage collection.", "metadata": {"topic": "cs", "n": 5}},
    {"id": "d6", "title": "Compilers", "text": "A compiler translates source code written in a programming language into machine code.", "metadata": {"topic": "cs", "n": 6}},
    {"id": "d7", "title": "Café culture", "text": "Parisian cafés serve espresso, croissants and crème brûlée on busy terraces.", "metadata": {"topic": "food", "n": 7}},
    {"id": "d8", "title": "Tides", "text": "Ocean tides rise and fall twice a day, pulled mostly by the gravity of the Moon.", "metadata": {"topic": "geo", "n": 8}},
]


def build_tiny_qa(path: Path, minilm_dir: Path) -> Path:
    """A seeded, untrained GroundedQA on the MiniLM vocabulary, saved under ``path``."""
    import torch

    from generator.config import DecoderConfig
    from generator.model import Decoder
    from generator.qa_model import GroundedQA, QAConfig
    from retriever.tokenizer import Tokenizer

    tok = Tokenizer.from_dir(minilm_dir)
    cfg = DecoderConfig(
        vocab_size=tok.vocab_size, dim=32, n_layers=1, n_heads=2, intermediate_size=64, max_seq_len=1024,
        norm="layer", norm_placement="post", mlp="gelu", activation="gelu", positions="learned",
        qkv_bias=True, out_bias=True, mlp_bias=True, final_norm=False, tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    GroundedQA(Decoder(cfg), QAConfig(pointer_dim=16)).save(path, tok)
    return path


def build_tiny_encoder(path: Path, minilm_dir: Path, *, layers: int = 2, dim: int = 32, max_length: int = 64) -> Path:
    """A seeded, untrained sentence encoder on the MiniLM vocabulary (no dropout), saved under ``path``
    in the sentence-transformers layout."""
    import torch

    from retriever.checkpoint import save_checkpoint
    from retriever.encoder import BertConfig, BertEncoder
    from retriever.pooling import PoolingConfig
    from retriever.tokenizer import Tokenizer

    tok = Tokenizer.from_dir(minilm_dir)
    cfg = BertConfig(
        vocab_size=tok.vocab_size, hidden_size=dim, num_hidden_layers=layers, num_attention_heads=4,
        intermediate_size=2 * dim, max_position_embeddings=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    return save_checkpoint(path, BertEncoder(cfg), tok, PoolingConfig(mode="mean", normalize=True), max_length)


def build_tiny_reranker(path: Path, minilm_dir: Path, *, seed: int = 0) -> Path:
    """A seeded, untrained cross-encoder reranker on a tiny encoder, saved under ``path / "rr"``; its
    head is scaled up so different texts get clearly different scores."""
    from retriever.cross_encoder import PairSettings, save_reranker, warm_start

    settings = PairSettings(max_length=64, max_query_tokens=8)
    model, tok = warm_start(build_tiny_encoder(path / "enc", minilm_dir), settings, seed=seed)
    with torch.no_grad():
        model.classifier.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(seed))
    return save_reranker(path / "rr", model, tok, settings)


def make_settings(data_dir: Path, database_url: str | None = None, **kw) -> Settings:
    """Settings that ignore the environment and ``.env``: only what is passed."""
    return Settings(_env_file=None, data_dir=data_dir, database_url=database_url, **kw)


def add_toy(client: TestClient, name: str = "toy", headers: dict | None = None, **settings) -> list[dict]:
    """Create collection ``name`` and ingest ``TOY_DOCS``."""
    r = client.post("/v1/collections", json={"name": name, "settings": settings}, headers=headers)
    assert r.status_code == 201, r.text
    r = client.post(f"/v1/collections/{name}/documents", json={"documents": TOY_DOCS}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["counts"] == {"inserted": len(TOY_DOCS)}
    return TOY_DOCS


def sharpen_attention(model) -> None:
    """Scale a random GroundedQA's embeddings and q/k/v weights so its attention is far from
    uniform (at init, inputs of std 0.02 give near-equal scores)."""
    import torch

    dec = model.decoder
    with torch.no_grad():
        dec.tok_embeddings.weight.mul_(25.0)
        dec.pos_embeddings.weight.mul_(25.0)
        for layer in dec.layers:
            layer.attention.wqkv.weight.mul_(40.0)


def randomize(module: nn.Module, seed: int = 0, scale: float = 0.3) -> nn.Module:
    """Overwrite every parameter with seeded noise (norm weights around 1), in place."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(scale * noise)
    return module


def tiny_decoder(seed: int = 0, **overrides) -> Decoder:
    """A seeded ``tiny`` preset decoder in eval mode (hidden 64, 2 layers, 4 heads, 2 kv heads)."""
    torch.manual_seed(seed)
    model = Decoder(DecoderConfig.preset("tiny", **overrides))
    return randomize(model, seed).eval()  # type: ignore[return-value]
