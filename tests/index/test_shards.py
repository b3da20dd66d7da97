"""Sharded search gives the single index's ranked ids and scores: BM25 with global statistics,
exact dense search, hybrid fusion over the gathered lists, before and after updates."""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import InvalidInput
from index.chunking import Chunk
from index.collection import CollectionIndex, IndexSettings
from index.records import DocumentInput, PreparedChunks
from index.shards import ShardedCollectionIndex, local_shards, shard_of
from index.store import Store
from retriever.hybrid import SearchSettings, search

DIM = 16
WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho "
         "sigma tau upsilon phi chi psi omega apple river stone cloud paper glass iron salt").split()


def toy_corpus(seed: int, n: int) -> dict[str, tuple[str, str, np.ndarray]]:
    """``{doc id: (title, text, unit vector)}``, words drawn with a skew so document
    frequencies differ."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, len(WORDS) + 1)
    p /= p.sum()
    out = {}
    for i in range(n):
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(4, 40)), p=p))
        v = rng.normal(size=DIM).astype(np.float32)
        out[f"doc-{i}"] = (f"title {rng.choice(WORDS)}" if i % 3 else "", text, v / np.linalg.norm(v))
    return out


def upsert(store: Store, docs: dict[str, tuple[str, str, np.ndarray]]) -> None:
    inputs = [DocumentInput(d, text, title=title, metadata={"even": int(d.split("-")[1]) % 2 == 0})
              for d, (title, text, _) in docs.items()]
    prepared = {
        d.external_id: PreparedChunks([Chunk(0, d.text, 0, len(d.text), len(d.text.split()))], docs[d.external_id][2][None, :])
        for d in inputs
    }
    store.upsert_documents("c", inputs, prepared)


@pytest.fixture
def store():
    s = Store("sqlite://")
    s.create_collection("c", {})
    upsert(s, toy_corpus(0, 120))
    yield s
    s.close()


def queries(seed: int = 1, n: int = 25) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 6)))) for _ in range(n)] + ["unknownword", "alpha alpha beta"]


def build(store: Store, shards: int | None, variant: str = "lucene", factory=local_shards):
    settings = IndexSettings(bm25_variant=variant, dense_kind="flat")
    if shards is None:
        idx = CollectionIndex("c", DIM, settings, root=None, device="cpu")
    else:
        idx = ShardedCollectionIndex("c", DIM, settings, None, shards, device="cpu", factory=factory)
    idx.reconcile(store)
    return idx


def assert_same_bm25(single, sharded, qs) -> None:
    for q in qs:
        for allowed in (None, np.arange(0, 400, 3)):
            a_ids, a_s = single.bm25.search(q, 10, allowed_ids=allowed)
            b_ids, b_s = sharded.bm25.search(q, 10, allowed_ids=allowed)
            assert a_ids.tolist() == b_ids.tolist(), q
            np.testing.assert_allclose(b_s, a_s, rtol=0, atol=1e-6)
            assert a_s.dtype == b_s.dtype == np.float32


def assert_same_dense(single, sharded, seed: int = 2) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(10):
        q = rng.normal(size=(1, DIM)).astype(np.float32)
        a_s, a_i = single.dense.search(q, 12)
        b_s, b_i = sharded.dense.search(q, 12)
        assert a_i.tolist() == b_i.tolist()
        np.testing.assert_allclose(b_s, a_s, rtol=0, atol=1e-6)


def assert_same_hybrid(store, single, sharded, fusion: str = "rrf") -> None:
    rng = np.random.default_rng(3)
    for q in queries(4, 10):
        v = rng.normal(size=(1, DIM)).astype(np.float32)
        for filters in (None, {"even": True}):
            kw = dict(k=10, mode="hybrid", filters=filters, settings=SearchSettings(fusion=fusion, depth=30))
            a = search(single, store, lambda _t, v=v: v, q, **kw).hits
            b = search(sharded, store, lambda _t, v=v: v, q, **kw).hits
            assert [h.chunk_id for h in a] == [h.chunk_id for h in b], q
            for x, y in zip(a, b, strict=True):
                for key in ("bm25", "dense", "fused"):
                    assert (x.scores[key] is None) == (y.scores[key] is None)
                    if x.scores[key] is not None:
                        assert abs(x.scores[key] - y.scores[key]) <= 1e-6


@pytest.mark.parametrize("variant", ["lucene", "robertson", "bm25+"])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_sharded_bm25_equals_one_index(store, variant, n):
    single, sharded = build(store, None, variant), build(store, n, variant)
    assert len(sharded) == len(single) == 120
    assert_same_bm25(single, sharded, queries())


@pytest.mark.parametrize("n", [2, 4])
def test_sharded_dense_and_hybrid_equal_one_index(store, n):
    single, sharded = build(store, None), build(store, n)
    assert_same_dense(single, sharded)
    assert_same_hybrid(store, single, sharded, "rrf")
    assert_same_hybrid(store, single, sharded, "convex")


def test_each_chunk_lives_on_its_documents_shard(store):
    sharded = build(store, 3)
    held = sharded.call_all("ids")
    doc_of = {c.id: c.doc_id for c in store.iter_chunks("c", with_embeddings=False)}
    assert sum(len(h) for h in held) == 120
    for i, ids in enumerate(held):
        assert len(ids) > 10  # the hash spreads documents
        assert all(shard_of(doc_of[int(c)], 3) == i for c in ids)


def test_shard_of_is_stable():
    # the assignment must not change between runs or machines: saved shards depend on it
    assert [shard_of(f"doc-{i}", 4) for i in range(8)] == [shard_of(f"doc-{i}", 4) for i in range(8)]
    assert shard_of("doc-0", 4) == int.from_bytes(__import__("hashlib").blake2b(b"doc-0", digest_size=8).digest(), "big") % 4


def test_updates_keep_global_statistics_exact(store):
    single, sharded = build(store, None), build(store, 3)
    # delete a third of the documents, change some, add new ones; then re-sync both from the store
    for d in [f"doc-{i}" for i in range(0, 120, 3)]:
        store.delete_document("c", d)
    changed = toy_corpus(7, 130)
    upsert(store, {k: v for k, v in changed.items() if int(k.split("-")[1]) % 5 == 1 or int(k.split("-")[1]) >= 120})
    s1, s2 = single.reconcile(store), sharded.reconcile(store)
    assert s1 == s2
    assert s2["removed"] > 0 and s2["added"] > 0
    assert len(sharded) == len(single)
    assert_same_bm25(single, sharded, queries(5))
    assert_same_dense(single, sharded, 6)


def test_direct_updates_route_by_document(store):
    sharded = build(store, 2)
    single = build(store, None)
    ids = np.asarray([10_001, 10_002], dtype=np.int64)
    vecs = np.eye(2, DIM, dtype=np.float32)
    for idx in (single, sharded):
        idx.add(ids, ["omega omega river", "river stone"], vecs, doc_ids=["new-a", "new-b"])
    assert_same_bm25(single, sharded, ["omega river", "stone"])
    held = sharded.call_all("ids")
    assert 10_001 in held[shard_of("new-a", 2)] and 10_002 in held[shard_of("new-b", 2)]
    for idx in (single, sharded):
        idx.remove([10_001])
    assert_same_bm25(single, sharded, ["omega river", "stone"])
    with pytest.raises(InvalidInput, match="document id"):
        sharded.add(ids, ["a", "b"], vecs)


def test_save_load_and_resharding(store, tmp_path):
    settings = IndexSettings(dense_kind="flat")
    a = ShardedCollectionIndex("c", DIM, settings, tmp_path / "c", 2, device="cpu")
    a.reconcile(store)
    a.save()
    b = ShardedCollectionIndex("c", DIM, settings, tmp_path / "c", 2, device="cpu")
    assert b.try_load()
    assert b.reconcile(store) == {"stored": 120, "added": 0, "removed": 0}
    single = build(store, None)
    assert_same_bm25(single, b, queries(8, 8))
    # another shard count: the saved layout does not load, and the reconcile places every chunk anew
    c = ShardedCollectionIndex("c", DIM, settings, tmp_path / "c", 3, device="cpu")
    assert not c.try_load()
    assert c.reconcile(store)["added"] == 120
    assert_same_bm25(single, c, queries(8, 8))


def test_bad_shard_counts():
    for bad in (0, -1, 65, 2.5, True):
        with pytest.raises(InvalidInput, match="shards"):
            ShardedCollectionIndex("c", DIM, IndexSettings(), None, bad)
