"""retriever.hybrid.search over a real store and a collection's indexes: each mode, fusion,
filters, hydration of hits, and the checks of queries and settings."""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import InvalidInput
from index.chunking import Chunk
from index.collection import CollectionIndex, IndexSettings
from index.records import DocumentInput, PreparedChunks
from index.store import Store
from retriever.fusion import reciprocal_rank_fusion
from retriever.hybrid import SearchSettings, search

DIM = 4
# external id -> (title, text, metadata, embedding): BM25 and the dense side disagree on purpose.
DOCS = {
    "lava": ("Volcanoes", "Lava flows downhill from the volcano.", {"topic": "earth"}, [1.0, 0.0, 0.0, 0.0]),
    "ice": ("Glaciers", "Glaciers carve valleys as the ice moves.", {"topic": "earth"}, [0.0, 1.0, 0.0, 0.0]),
    "code": ("Python", "Python code runs in an interpreter.", {"topic": "tech"}, [0.0, 0.0, 1.0, 0.0]),
    "mix": ("Volcano code", "A volcano simulation written in Python code.", {"topic": "tech"}, [0.6, 0.0, 0.8, 0.0]),
}


@pytest.fixture
def setup():
    store = Store("sqlite://")
    store.create_collection("c", {})
    docs = [DocumentInput(ext, text, title=title, metadata=meta) for ext, (title, text, meta, _) in DOCS.items()]
    prepared = {
        d.external_id: PreparedChunks([Chunk(0, d.text, 0, len(d.text), len(d.text.split()))],
                                      np.asarray([DOCS[d.external_id][3]], dtype=np.float32))
        for d in docs
    }
    store.upsert_documents("c", docs, prepared)
    index = CollectionIndex("c", DIM, IndexSettings(dense_kind="flat"), root=None, device="cpu")
    index.reconcile(store)
    yield index, store
    store.close()


def encoder(vector: list[float]):
    calls: list[list[str]] = []

    def encode(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        return np.asarray([vector] * len(texts), dtype=np.float32)

    encode.calls = calls  # type: ignore[attr-defined]
    return encode


def test_bm25_mode_hydrates_hits_without_encoding(setup):
    index, store = setup
    enc = encoder([1, 0, 0, 0])
    result = search(index, store, enc, "volcano lava", k=2, mode="bm25")
    assert enc.calls == []  # BM25 alone never embeds the query
    top = result.hits[0]
    assert (top.rank, top.doc_id, top.title) == (1, "lava", "Volcanoes")
    assert top.text == DOCS["lava"][1] and (top.char_start, top.char_end) == (0, len(DOCS["lava"][1]))
    assert top.metadata == {"topic": "earth"}
    assert top.scores["dense"] is None and top.scores["bm25"] == top.scores["fused"] > 0
    assert [h.rank for h in result.hits] == [1, 2]
    assert {"bm25_ms", "fusion_ms", "hydrate_ms", "total_ms"} <= set(result.timings_ms)


def test_dense_mode_ranks_by_the_query_vector(setup):
    index, store = setup
    enc = encoder([0, 1, 0, 0])
    hits = search(index, store, enc, "anything at all", k=4, mode="dense").hits
    assert enc.calls == [["anything at all"]]
    assert hits[0].doc_id == "ice" and hits[0].scores["bm25"] is None
    assert hits[0].scores["dense"] == pytest.approx(1.0)
    assert [h.scores["dense"] for h in hits] == sorted((h.scores["dense"] for h in hits), reverse=True)


def test_hybrid_rrf_is_the_fusion_of_both_sides(setup):
    index, store = setup
    enc = encoder([0, 0, 1, 0])
    bm25 = search(index, store, enc, "volcano", k=4, mode="bm25").hits
    dense = search(index, store, enc, "volcano", k=4, mode="dense").hits
    hybrid = search(index, store, enc, "volcano", k=4, mode="hybrid", settings=SearchSettings(rrf_k=60.0)).hits
    expected = reciprocal_rank_fusion(
        [[(h.chunk_id, h.scores["bm25"]) for h in bm25], [(h.chunk_id, h.scores["dense"]) for h in dense]], k=60.0, limit=4
    )
    assert [(h.chunk_id, pytest.approx(h.scores["fused"])) for h in hybrid] == [(c, pytest.approx(s)) for c, s in expected]
    assert hybrid[0].doc_id == "mix"  # second on both sides beats first on one
    both = {h.doc_id: h.scores for h in hybrid}
    assert both["mix"]["bm25"] is not None and both["mix"]["dense"] is not None


def test_convex_weights_choose_a_side(setup):
    index, store = setup
    enc = encoder([0, 1, 0, 0])
    dense_only = search(index, store, enc, "volcano lava", k=1, settings=SearchSettings(fusion="convex", weights=(0.0, 1.0)))
    bm25_only = search(index, store, enc, "volcano lava", k=1, settings=SearchSettings(fusion="convex", weights=(1.0, 0.0)))
    assert dense_only.hits[0].doc_id == "ice" and bm25_only.hits[0].doc_id == "lava"


def test_filters_apply_before_the_cut(setup):
    index, store = setup
    enc = encoder([1, 0, 0, 0])
    hits = search(index, store, enc, "volcano", k=4, filters={"topic": "tech"}).hits
    assert {h.doc_id for h in hits} <= {"code", "mix"} and hits[0].doc_id == "mix"
    nothing = search(index, store, enc, "volcano", k=4, filters={"topic": "none"})
    assert nothing.hits == [] and "filter_ms" in nothing.timings_ms


@pytest.mark.parametrize(("query", "k", "mode", "message"), [
    ("  ", 3, "hybrid", "empty"),
    ("lava", 3, "sparse", "unknown mode"),
    ("lava", 0, "bm25", "k must be"),
    ("lava", 1001, "bm25", "k must be"),
])
def test_bad_queries_are_rejected(setup, query, k, mode, message):
    index, store = setup
    with pytest.raises(InvalidInput, match=message):
        search(index, store, encoder([1, 0, 0, 0]), query, k=k, mode=mode)


@pytest.mark.parametrize("kwargs", [
    {"fusion": "max"}, {"depth": 0}, {"depth": True}, {"rrf_k": 0}, {"rrf_k": float("inf")},
    {"weights": (1.0, float("nan"))}, {"weights": (-1.0, 1.0)},
])
def test_bad_settings_are_rejected(kwargs):
    with pytest.raises(InvalidInput):
        SearchSettings(**kwargs)


def test_settings_from_a_collection():
    s = SearchSettings.from_settings({"fusion": "convex", "weights": [0.3, 0.7], "depth": 50, "chunk_tokens": 200})
    assert (s.fusion, s.weights, s.depth) == ("convex", (0.3, 0.7), 50)
