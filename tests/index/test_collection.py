"""CollectionIndex.reconcile: the BM25 and dense indexes end up holding exactly the store's chunks."""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import InvalidInput
from index.chunking import Chunk
from index.collection import CollectionIndex, IndexSettings, index_text
from index.records import DocumentInput, PreparedChunks
from index.store import Store

DIM = 4


def one_chunk(doc: DocumentInput, vector: list[float] | None) -> PreparedChunks:
    """The whole text as one chunk, with ``vector`` as its embedding (or none)."""
    chunk = Chunk(0, doc.text, 0, len(doc.text), len(doc.text.split()))
    emb = None if vector is None else np.asarray([vector], dtype=np.float32)
    return PreparedChunks([chunk], emb)


def unit(i: int) -> list[float]:
    v = [0.0] * DIM
    v[i % DIM] = 1.0
    return v


@pytest.fixture
def store():
    s = Store("sqlite://")
    s.create_collection("c", {})
    yield s
    s.close()


def add_docs(store: Store, specs: dict[str, tuple[str, str, list[float] | None]]) -> dict[str, int]:
    """Upsert ``{external id: (title, text, vector)}``; the chunk id of each document."""
    docs = [DocumentInput(ext, text, title=title) for ext, (title, text, _) in specs.items()]
    prepared = {ext: one_chunk(d, specs[ext][2]) for ext, d in zip(specs, docs, strict=True)}
    results = store.upsert_documents("c", docs, prepared)
    return {r.external_id: r.chunk_ids[0] for r in results}


def new_index() -> CollectionIndex:
    return CollectionIndex("c", DIM, IndexSettings(dense_kind="flat"), root=None, device="cpu")


def index_ids(index: CollectionIndex) -> tuple[list[int], list[int]]:
    return index.bm25.ids().tolist(), index.dense.ids().tolist()


def test_reconcile_adds_stored_chunks_missing_from_the_indexes(store):
    ids = add_docs(
        store,
        {"a": ("Volcanoes", "Lava flows downhill.", unit(0)), "b": ("", "Glaciers carve valleys.", unit(1))},
    )
    index = new_index()
    stats = index.reconcile(store)
    expected = sorted(ids.values())
    assert stats == {"stored": 2, "added": 2, "removed": 0}
    assert index_ids(index) == (expected, expected)
    # BM25 sees the title in front of the chunk text; the dense index holds the stored embedding.
    assert index.bm25.search("volcano", k=5)[0].tolist() == [ids["a"]]
    scores, found = index.dense.search(np.asarray(unit(1), dtype=np.float32), k=1)
    assert found[0].tolist() == [ids["b"]] and scores[0, 0] == pytest.approx(1.0)


def test_reconcile_removes_chunks_no_longer_stored(store):
    ids = add_docs(store, {"a": ("", "Lava flows.", unit(0)), "b": ("", "Ice melts.", unit(1))})
    index = new_index()
    index.reconcile(store)
    store.delete_document("c", "a")
    index.add(np.asarray([999_999]), ["a stray entry"], np.asarray([unit(2)], dtype=np.float32))
    stats = index.reconcile(store)
    assert stats == {"stored": 1, "added": 0, "removed": 2}
    assert index_ids(index) == ([ids["b"]], [ids["b"]])
    assert index.bm25.search("lava", k=5)[0].size == 0


def test_reconcile_follows_a_replaced_document(store):
    old = add_docs(store, {"a": ("", "Lava flows.", unit(0))})
    index = new_index()
    index.reconcile(store)
    new = add_docs(store, {"a": ("", "Ice melts.", unit(1))})
    assert new["a"] != old["a"]
    assert index.reconcile(store) == {"stored": 1, "added": 1, "removed": 1}
    assert index_ids(index) == ([new["a"]], [new["a"]])
    assert index.bm25.search("ice", k=5)[0].tolist() == [new["a"]]


def test_reconcile_is_a_no_op_when_in_sync(store):
    add_docs(store, {"a": ("T", "Lava flows.", None), "b": ("", "Ice melts.", unit(1))})
    calls: list[list[str]] = []

    def encode(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        return np.asarray([unit(3)] * len(texts), dtype=np.float32)

    index = new_index()
    index.reconcile(store, encode)
    before = index_ids(index)
    segments = index.bm25.n_segments
    assert index.reconcile(store, encode) == {"stored": 2, "added": 0, "removed": 0}
    assert index_ids(index) == before
    assert index.bm25.n_segments == segments
    assert calls == [["T Lava flows."]]  # encoded once, by the first reconcile only


def test_reconcile_repairs_a_chunk_held_by_one_index_only(store):
    ids = add_docs(store, {"a": ("", "Lava flows.", unit(0)), "b": ("", "Ice melts.", unit(1))})
    index = new_index()
    index.reconcile(store)
    index.dense.remove([ids["a"]])
    assert index.reconcile(store) == {"stored": 2, "added": 1, "removed": 0}
    expected = sorted(ids.values())
    assert index_ids(index) == (expected, expected)
    assert index.bm25.search("lava", k=5)[0].tolist() == [ids["a"]]


def test_reconcile_encodes_and_stores_missing_embeddings(store):
    ids = add_docs(store, {"a": ("Volcanoes", "Lava flows.", None), "b": ("", "Ice melts.", unit(1))})
    with pytest.raises(InvalidInput, match="no embedding"):
        new_index().reconcile(store)
    seen: list[str] = []

    def encode(texts: list[str]) -> np.ndarray:
        seen.extend(texts)
        return np.asarray([unit(2)] * len(texts), dtype=np.float32)

    index = new_index()
    assert index.reconcile(store, encode)["added"] == 2
    assert seen == [index_text("Volcanoes", "Lava flows.")]
    assert store.collection_stats("c").embedded_chunks == 2
    stored = {ch.id: ch.embedding for ch in store.iter_chunks("c")}
    np.testing.assert_array_equal(stored[ids["a"]], unit(2))
    # the next index over the same store needs no encoder
    assert new_index().reconcile(store)["added"] == 2


def test_index_text_joins_title_and_text():
    assert index_text("Volcanoes", "Lava flows.") == "Volcanoes Lava flows."
    assert index_text("", " Lava flows. ") == "Lava flows."
    assert index_text("Only title", "") == "Only title"
