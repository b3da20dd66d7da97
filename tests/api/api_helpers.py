"""Helpers shared by the API tests (imported as ``api_helpers``; conftest modules cannot be
imported by name reliably when several folders have one)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from api.settings import Settings

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
