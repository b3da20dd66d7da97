"""A sharded collection through the engine: the same ranked ids and scores as one index, for bm25,
dense and hybrid, with shards in this process and in Ray actors on a local cluster (separate
worker processes), across adds, updates, deletes and a restart."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import pytest

from common.errors import InvalidInput
from engine import Engine
from index.shards import ShardedCollectionIndex, shard_of
from index.store import Store
from retriever.tokenizer import Tokenizer

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho "
         "sigma tau upsilon phi chi psi omega apple river stone cloud paper glass iron salt").split()


class HashingEncoder:
    """A stand-in encoder: the sum of a dense pseudo-random vector per word (seeded by its hash),
    unit length, so scores have no exact ties (FAISS orders exact ties by insertion, which differs
    between one index and its shards)."""

    dim = 32

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer

    def encode(self, texts):
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            for j, w in enumerate(t.lower().split()):
                out[i] += np.random.default_rng(zlib.crc32(w.encode())).normal(size=self.dim) * (1.0 + 0.01 * j)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def docs(seed: int, n: int, start: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, len(WORDS) + 1)
    p /= p.sum()
    return [{"id": f"doc-{i}", "title": f"t{i % 7}", "text": " ".join(rng.choice(WORDS, size=int(rng.integers(5, 60)), p=p)),
             "metadata": {"even": i % 2 == 0}} for i in range(start, start + n)]


QUERIES = ["alpha beta", "river stone salt", "omega", "gamma gamma delta", "iron cloud paper glass", "nothingmatches"]


@pytest.fixture(scope="module")
def tokenizer(minilm_dir: Path) -> Tokenizer:
    return Tokenizer.from_dir(minilm_dir)


def make_engine(tmp_path: Path, backend: str, tokenizer: Tokenizer) -> Engine:
    enc = HashingEncoder(tokenizer)
    eng = Engine(Store(f"sqlite:///{tmp_path / 'attend.db'}"), data_dir=tmp_path, encoder="hash",
                 encoder_loader=lambda name: enc, generator=None, shard_backend=backend)
    eng.open()
    return eng


def assert_same_results(engine: Engine, a: str, b: str) -> None:
    for q in QUERIES:
        for mode in ("bm25", "dense", "hybrid"):
            for filters in (None, {"even": True}):
                x = engine.search(a, q, k=10, mode=mode, filters=filters).hits
                y = engine.search(b, q, k=10, mode=mode, filters=filters).hits
                assert [(h.doc_id, h.text) for h in x] == [(h.doc_id, h.text) for h in y], (q, mode)
                for hx, hy in zip(x, y, strict=True):
                    for key in ("bm25", "dense", "fused"):
                        assert (hx.scores[key] is None) == (hy.scores[key] is None)
                        if hx.scores[key] is not None:
                            assert abs(hx.scores[key] - hy.scores[key]) <= 1e-6, (q, mode, key)


def fill(engine: Engine, names: list[str]) -> None:
    for name in names:
        engine.upsert_documents(name, docs(0, 90), batch_size=32)


def mutate(engine: Engine, names: list[str]) -> None:
    for name in names:
        for i in range(0, 90, 4):
            engine.delete_document(name, f"doc-{i}")
        engine.upsert_documents(name, docs(9, 20, start=5) + docs(10, 15, start=200), batch_size=16)


def run_scenario(tmp_path: Path, backend: str, shards: int, tokenizer: Tokenizer) -> None:
    engine = make_engine(tmp_path, backend, tokenizer)
    try:
        engine.create_collection("one", {"dense_kind": "flat", "chunk_tokens": 32, "chunk_overlap": 0})
        engine.create_collection("many", {"dense_kind": "flat", "chunk_tokens": 32, "chunk_overlap": 0, "shards": shards})
        fill(engine, ["one", "many"])
        idx = engine._index("many")
        assert isinstance(idx, ShardedCollectionIndex) and idx.n_shards == shards
        per_shard = [c[0] for c in idx.counts()]
        assert sum(per_shard) == engine.collection_stats("one")["chunks"] and min(per_shard) > 0
        assert engine.collection_stats("many")["bm25_chunks"] == engine.collection_stats("one")["bm25_chunks"]
        assert_same_results(engine, "one", "many")
        mutate(engine, ["one", "many"])
        assert_same_results(engine, "one", "many")
    finally:
        engine.close()
    # a restart loads the shards' files (or rebuilds them from the store): still the same
    engine = make_engine(tmp_path, backend, tokenizer)
    try:
        assert_same_results(engine, "one", "many")
    finally:
        engine.close()


@pytest.mark.parametrize("shards", [2, 3])
def test_local_shards_match_one_index(tmp_path: Path, shards: int, tokenizer: Tokenizer) -> None:
    run_scenario(tmp_path, "local", shards, tokenizer)


def test_ray_shards_match_one_index(tmp_path: Path, ray_cluster, tokenizer: Tokenizer) -> None:
    run_scenario(tmp_path, "ray", 3, tokenizer)


def test_ray_shards_are_separate_processes(tmp_path: Path, ray_cluster, tokenizer: Tokenizer) -> None:
    engine = make_engine(tmp_path, "ray", tokenizer)
    try:
        engine.create_collection("many", {"shards": 2, "dense_kind": "flat"})
        engine.upsert_documents("many", docs(1, 30))
        idx = engine._index("many")
        pids = idx.shards.pids()
        assert len(set(pids)) == 2 and os.getpid() not in pids
        held = idx.call_all("ids")
        doc_of = {c.id: c.doc_id for c in engine.store.iter_chunks("many", with_embeddings=False)}
        for i, ids in enumerate(held):
            assert all(shard_of(doc_of[int(c)], 2) == i for c in ids)
    finally:
        engine.close()


def test_reshard_rebuilds_from_the_store_without_encoding(tmp_path: Path, tokenizer: Tokenizer) -> None:
    engine = make_engine(tmp_path, "local", tokenizer)
    try:
        engine.create_collection("one", {"dense_kind": "flat"})
        engine.create_collection("c", {"dense_kind": "flat"})
        engine.upsert_documents("one", docs(2, 60))
        engine.upsert_documents("c", docs(2, 60))
        before = engine.search("c", "alpha river", k=10).hits
        encoded: list[str] = []
        enc = engine.encoder()
        original = enc.encode
        for n in (4, 1, None):
            enc.encode = lambda texts: (encoded.extend(texts), original(texts))[1]
            stats = engine.reshard("c", n)
            enc.encode = original
            assert stats["added"] == engine.collection_stats("c")["chunks"] and stats["removed"] == 0
            assert engine.get_collection("c").settings.get("shards") == n
            idx = engine._index("c")
            assert (n is None) != isinstance(idx, ShardedCollectionIndex)
            assert [h.chunk_id for h in engine.search("c", "alpha river", k=10).hits] == [h.chunk_id for h in before]
            assert_same_results(engine, "one", "c")
        assert encoded == []  # stored embeddings were reused
        with pytest.raises(InvalidInput, match="shards"):
            engine.reshard("c", 0)
    finally:
        engine.close()
    engine = make_engine(tmp_path, "local", tokenizer)  # the setting survives a restart
    try:
        assert not isinstance(engine._index("c"), ShardedCollectionIndex)
    finally:
        engine.close()


def test_shards_setting_is_checked(tmp_path: Path, tokenizer: Tokenizer) -> None:
    engine = make_engine(tmp_path, "local", tokenizer)
    try:
        for bad in (0, 65, "2", 1.5, True):
            with pytest.raises(InvalidInput, match="shards"):
                engine.create_collection("bad", {"shards": bad})
        with pytest.raises(InvalidInput, match="shard_backend"):
            Engine(engine.store, shard_backend="cluster")
    finally:
        engine.close()
