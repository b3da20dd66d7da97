from __future__ import annotations

import threading
from datetime import timezone

import numpy as np
import pytest

from common.errors import (
    AlreadyExists,
    CollectionNotFound,
    DocumentNotFound,
    InvalidInput,
    NotFound,
)
from index.chunking import Chunk
from index.records import DocumentInput, PreparedChunks
from index.store import Store


def sentence_chunks(doc: DocumentInput) -> list[Chunk]:
    """One chunk per '. '-separated sentence, with exact offsets (a tokenizer-free test chunker)."""
    out, pos = [], 0
    for part in doc.text.split(". "):
        start = doc.text.index(part, pos)
        end = start + len(part)
        pos = end
        if part.strip():
            out.append(Chunk(len(out), part, start, end, len(part.split())))
    return out


@pytest.fixture
def store(db_url) -> Store:
    s = Store(db_url)
    yield s
    s.close()


def docs(*specs: tuple[str, str], **meta) -> list[DocumentInput]:
    return [DocumentInput(ext, text, title=ext.upper(), metadata=dict(meta)) for ext, text in specs]


# ------------------------------------------------------------------------------------ collections


def test_collections_create_list_get_delete(store):
    info = store.create_collection(
        "alpha", {"encoder": "all-MiniLM-L6-v2", "chunking": {"max_tokens": 200}}
    )
    assert info.name == "alpha" and info.encoder == "all-MiniLM-L6-v2"
    assert info.settings["chunking"] == {"max_tokens": 200}
    assert info.created_at.tzinfo is not None
    store.create_collection("beta.v2_x-1", {})
    assert [c.name for c in store.list_collections()] == ["alpha", "beta.v2_x-1"]
    assert store.get_collection("alpha") == info
    assert store.delete_collection("beta.v2_x-1") == []
    assert [c.name for c in store.list_collections()] == ["alpha"]
    with pytest.raises(CollectionNotFound):
        store.get_collection("beta.v2_x-1")
    with pytest.raises(CollectionNotFound):
        store.delete_collection("nope")


def test_duplicate_collection(store):
    store.create_collection("c", {"a": 1})
    with pytest.raises(AlreadyExists):
        store.create_collection("c", {"a": 2})
    assert store.get_collection("c").settings == {"a": 1}


def test_bad_collection_name(store):
    for name in ["", "x" * 65, "has space", "slash/y", "é", None, 3]:
        with pytest.raises(InvalidInput):
            store.create_collection(name, {})
    assert store.list_collections() == []
    assert store.create_collection("x" * 64, {}).name == "x" * 64


def test_bad_settings(store):
    with pytest.raises(InvalidInput):
        store.create_collection("c", {"x": float("nan")})
    with pytest.raises(InvalidInput):
        store.create_collection("c", {"x": object()})
    assert store.list_collections() == []


# --------------------------------------------------------------------------------------- upserts


def test_upsert_insert_replace_unchanged(store):
    store.create_collection("c", {})
    first = store.upsert_documents(
        "c", docs(("d1", "One a. One b"), ("d2", "Two a. Two b. Two c")), sentence_chunks
    )
    assert [r.status for r in first] == ["inserted", "inserted"]
    assert [len(r.chunk_ids) for r in first] == [2, 3]
    assert all(r.rechunked and r.removed_chunk_ids == [] for r in first)
    all_ids = first[0].chunk_ids + first[1].chunk_ids
    assert len(set(all_ids)) == 5

    calls: list[str] = []

    def counting(doc):
        calls.append(doc.external_id)
        return sentence_chunks(doc)

    second = store.upsert_documents(
        "c", docs(("d1", "One a. One b"), ("d2", "Two replaced")), counting
    )
    assert calls == ["d2"]  # unchanged documents are never re-chunked
    r1, r2 = second
    assert (r1.status, r1.chunk_ids, r1.removed_chunk_ids, r1.rechunked) == (
        "unchanged",
        first[0].chunk_ids,
        [],
        False,
    )
    assert r1.added_chunk_ids == []
    assert r2.status == "updated" and r2.rechunked
    assert r2.removed_chunk_ids == first[1].chunk_ids
    assert len(r2.chunk_ids) == 1 and not set(r2.chunk_ids) & set(all_ids)  # ids never reused
    assert r2.document_id == first[1].document_id

    doc = store.get_document("c", "d2")
    assert doc.text == "Two replaced" and doc.chunk_ids == r2.chunk_ids
    assert store.get_chunks(first[1].chunk_ids) == []  # old chunks are gone
    assert store.collection_stats("c").chunks == 3


def test_metadata_only_change_keeps_chunks(store):
    store.create_collection("c", {})
    (r,) = store.upsert_documents("c", docs(("d1", "A. B"), lang="en"), sentence_chunks)
    (r2,) = store.upsert_documents("c", docs(("d1", "A. B"), lang="fr"), sentence_chunks)
    assert (r2.status, r2.rechunked, r2.chunk_ids, r2.removed_chunk_ids) == (
        "updated",
        False,
        r.chunk_ids,
        [],
    )
    assert store.get_document("c", "d1").metadata == {"lang": "fr"}
    assert store.get_chunks(r.chunk_ids)[0].metadata == {"lang": "fr"}


def test_chunk_offsets_preserved(store):
    store.create_collection("c", {})
    text = "Café crème brûlée. Naïve résumé. Ünïcödé 東京"
    (r,) = store.upsert_documents("c", [DocumentInput("u", text, title="Ü")], sentence_chunks)
    recs = store.get_chunks(r.chunk_ids)
    assert [c.text for c in recs] == ["Café crème brûlée", "Naïve résumé", "Ünïcödé 東京"]
    for c in recs:
        assert text[c.char_start : c.char_end] == c.text
        assert c.title == "Ü" and c.external_id == "u" and c.collection == "c"
    assert [c.ordinal for c in recs] == [0, 1, 2]


def test_precomputed_chunks_and_embeddings(store):
    store.create_collection("c", {})
    d = DocumentInput("d", "x. y. z")
    emb = np.arange(9, dtype=np.float64).reshape(3, 3) / 7
    (r,) = store.upsert_documents("c", [d], {"d": PreparedChunks(sentence_chunks(d), emb)})
    got = {c.id: c.embedding for c in store.iter_chunks("c")}
    np.testing.assert_array_equal(np.stack([got[i] for i in r.chunk_ids]), emb.astype(np.float32))
    with pytest.raises(InvalidInput):  # a batch member missing from the mapping
        store.upsert_documents("c", [DocumentInput("e", "e")], {"d": []})


BAD_CHUNKS = [
    lambda d: [Chunk(0, "wrong", 0, 5, 1)],  # text differs from the span
    lambda d: [Chunk(0, d.text, 0, len(d.text) + 1, 1)],  # span past the end
    lambda d: [Chunk(0, "", 2, 2, 0)],  # empty span
    lambda d: [Chunk(0, "Hello", 0, 5, -1)],  # negative token count
    lambda d: PreparedChunks(sentence_chunks(d), np.zeros((1, 4))),  # embeddings rows != chunks
    lambda d: ["not a chunk"],
]


def test_bad_chunks_rejected(store):
    store.create_collection("c", {})
    (good,) = store.upsert_documents("c", [DocumentInput("ok", "Fine")], sentence_chunks)
    for bad in BAD_CHUNKS:
        batch = [DocumentInput("new", "New"), DocumentInput("ok", "Hello there. General")]
        with pytest.raises(InvalidInput):
            store.upsert_documents(
                "c",
                batch,
                lambda d, bad=bad: sentence_chunks(d) if d.external_id == "new" else bad(d),
            )
    assert store.collection_stats("c").documents == 1
    assert store.get_document("c", "ok").chunk_ids == good.chunk_ids


def test_bad_documents_rejected(store):
    store.create_collection("c", {})
    with pytest.raises(InvalidInput):
        store.upsert_documents("c", docs(("d", "a"), ("d", "b")), sentence_chunks)
    for kwargs in (
        {"external_id": "", "text": "x"},
        {"external_id": "d", "text": "nul\x00"},
        {"external_id": "d", "text": "x", "metadata": {"a": float("inf")}},
        {"external_id": "d", "text": "x", "metadata": {1: "int key"}},
        {"external_id": "d", "text": None},
    ):
        with pytest.raises(InvalidInput):
            DocumentInput(**kwargs)
    with pytest.raises(CollectionNotFound):
        store.upsert_documents("missing", docs(("d", "a")), sentence_chunks)
    assert store.collection_stats("c").documents == 0


def test_failing_batch_stores_nothing(store):
    store.create_collection("c", {})
    before = store.upsert_documents(
        "c", docs(("keep", "Kept. Here"), ("d2", "Old two")), sentence_chunks
    )

    def explode_on_third(doc):
        if doc.external_id == "d3":
            raise RuntimeError("encoder crashed")
        return sentence_chunks(doc)

    batch = docs(("new1", "New one"), ("d2", "Replaced two"), ("d3", "Three"), ("new4", "Four"))
    with pytest.raises(RuntimeError, match="encoder crashed"):
        store.upsert_documents("c", batch, explode_on_third)
    _assert_untouched(store, before)


def test_failure_inside_write_transaction_rolls_back(store, monkeypatch):
    store.create_collection("c", {})
    before = store.upsert_documents(
        "c", docs(("keep", "Kept. Here"), ("d2", "Old two")), sentence_chunks
    )

    def broken_insert(self, s, rows):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Store, "_insert_chunks", broken_insert)
    with pytest.raises(RuntimeError, match="disk full"):
        store.upsert_documents(
            "c", docs(("new1", "New one"), ("d2", "Replaced two")), sentence_chunks
        )
    monkeypatch.undo()
    _assert_untouched(store, before)


def _assert_untouched(store, before):
    stats = store.collection_stats("c")
    assert (stats.documents, stats.chunks) == (2, 3)
    assert store.get_document("c", "d2").text == "Old two"
    assert store.get_document("c", "keep").chunk_ids == before[0].chunk_ids
    with pytest.raises(DocumentNotFound):
        store.get_document("c", "new1")
    assert [c.text for c in store.get_chunks(before[0].chunk_ids + before[1].chunk_ids)] == [
        "Kept",
        "Here",
        "Old two",
    ]


# ------------------------------------------------------------------------------------- deletions


def test_delete_document_removes_chunks(store):
    store.create_collection("c", {})
    r1, r2 = store.upsert_documents("c", docs(("d1", "A. B"), ("d2", "C")), sentence_chunks)
    assert store.delete_document("c", "d1") == r1.chunk_ids
    assert store.get_chunks(r1.chunk_ids + r2.chunk_ids) == store.get_chunks(r2.chunk_ids)
    assert len(store.get_chunks(r2.chunk_ids)) == 1
    with pytest.raises(DocumentNotFound):
        store.get_document("c", "d1")
    with pytest.raises(DocumentNotFound):
        store.delete_document("c", "d1")
    assert store.collection_stats("c").documents == 1


def test_delete_collection_cascades(store):
    store.create_collection("c", {})
    store.create_collection("other", {})
    res = store.upsert_documents("c", docs(("d1", "A. B"), ("d2", "C")), sentence_chunks)
    (keep,) = store.upsert_documents("other", docs(("d1", "Other doc")), sentence_chunks)
    ids = [i for r in res for i in r.chunk_ids]
    assert sorted(store.delete_collection("c")) == sorted(ids)
    assert store.get_chunks(ids) == []
    # Re-created under the same name: empty, and nothing leaks from the old one.
    store.create_collection("c", {})
    stats = store.collection_stats("c")
    assert (stats.documents, stats.chunks) == (0, 0)
    assert [c.text for c in store.get_chunks(keep.chunk_ids)] == ["Other doc"]


# ------------------------------------------------------------------------------- reads & filters


def test_get_chunks_order_and_missing(store):
    store.create_collection("c", {})
    (r,) = store.upsert_documents("c", docs(("d", "a0. a1. a2. a3")), sentence_chunks)
    order = [r.chunk_ids[2], r.chunk_ids[0], 10**9, r.chunk_ids[3], r.chunk_ids[0]]
    assert [c.text for c in store.get_chunks(order)] == ["a2", "a0", "a3", "a0"]
    assert store.get_chunks([]) == []


def test_metadata_filters(store):
    store.create_collection("c", {})
    batch = [
        DocumentInput("en1", "E1. E1b", metadata={"lang": "en", "year": 2023, "tags": ["x", "y"]}),
        DocumentInput("en2", "E2", metadata={"lang": "en", "year": 2024, "draft": True}),
        DocumentInput("fr1", "F1", metadata={"lang": "fr", "year": 2024, "draft": 1}),
        DocumentInput("none", "N"),
    ]
    store.create_collection("other", {})
    store.upsert_documents(
        "other", [DocumentInput("en9", "Other", metadata={"lang": "en"})], sentence_chunks
    )
    r = {
        x.external_id: set(x.chunk_ids) for x in store.upsert_documents("c", batch, sentence_chunks)
    }
    f = lambda filters: store.filter_chunk_ids("c", filters)  # noqa: E731
    assert f({"lang": "en"}) == r["en1"] | r["en2"]
    assert f({"lang": {"$eq": "fr"}}) == r["fr1"]
    assert f({"year": {"$in": [2024, 1999]}}) == r["en2"] | r["fr1"]
    assert f({"year": [2023]}) == r["en1"]
    assert f({"lang": "en", "year": 2024}) == r["en2"]
    assert f({"tags": "y"}) == r["en1"]  # list-valued field: any element
    assert f({"draft": True}) == r["en2"]  # True is not 1
    assert f({"draft": 1}) == r["fr1"]
    assert f({"lang": "de"}) == set()
    assert f({"year": {"$in": []}}) == set()
    assert f({}) == f(None) == set().union(*r.values())
    for bad in (
        {"lang": {"$regex": "e"}},
        {"lang": {"$in": "en"}},
        {"a": {"$eq": 1, "$in": [1]}},
        ["lang"],
    ):
        with pytest.raises(InvalidInput):
            f(bad)
    with pytest.raises(CollectionNotFound):
        store.filter_chunk_ids("missing", {"lang": "en"})


def test_embeddings_round_trip_and_iter(store):
    store.create_collection("c", {})
    res = store.upsert_documents(
        "c", docs(*[(f"d{i}", f"s{i}a. s{i}b") for i in range(5)]), sentence_chunks
    )
    ids = [i for r in res for i in r.chunk_ids]
    rows = list(store.iter_chunks("c", batch_size=3))
    assert [r.id for r in rows] == sorted(ids)
    assert all(r.embedding is None for r in rows)
    cid, text, emb, title, doc_id = rows[0]  # unpacks as a tuple
    assert text == "s0a" and emb is None
    assert doc_id == res[0].external_id  # the document's own id, which a sharded index routes by

    rng = np.random.default_rng(0)
    mat = rng.standard_normal((len(ids), 8)).astype(np.float32)
    store.set_embeddings(ids, mat)
    got = {r.id: r.embedding for r in store.iter_chunks("c", batch_size=4)}
    for i, cid in enumerate(ids):
        assert got[cid].dtype == np.float32
        np.testing.assert_array_equal(got[cid], mat[i])
    assert store.collection_stats("c").embedded_chunks == len(ids)
    assert all(r.embedding is None for r in store.iter_chunks("c", with_embeddings=False))

    with pytest.raises(NotFound):
        store.set_embeddings([ids[0], 10**9], mat[:2] * 0)
    np.testing.assert_array_equal(next(iter(store.iter_chunks("c"))).embedding, mat[0])  # untouched
    with pytest.raises(InvalidInput):
        store.set_embeddings(ids[:2], mat[:3])
    with pytest.raises(InvalidInput):
        store.set_embeddings(ids[:1], np.full((1, 8), np.nan))
    with pytest.raises(CollectionNotFound):
        store.iter_chunks("missing")


def test_stats_and_list_documents(store):
    store.create_collection("c", {})
    store.upsert_documents("c", docs(("a", "one two. three"), ("b", "four")), sentence_chunks)
    stats = store.collection_stats("c")
    assert (stats.documents, stats.chunks, stats.embedded_chunks, stats.tokens) == (2, 3, 0, 4)
    listed = store.list_documents("c", limit=1, offset=1)
    assert [d.external_id for d in listed] == ["b"] and listed[0].updated_at.tzinfo == timezone.utc


def test_changed_documents(store):
    store.create_collection("c", {})
    store.upsert_documents("c", docs(("a", "same"), ("b", "old")), sentence_chunks)
    changed = store.changed_documents("c", docs(("a", "same"), ("b", "new"), ("c", "fresh")))
    assert [d.external_id for d in changed] == ["b", "c"]


# ------------------------------------------------------------------------------------------- jobs


def test_job_lifecycle(store):
    job = store.create_job("c", total=3)
    assert (job.status, job.total, job.done, job.errors, job.finished) == (
        "queued",
        3,
        0,
        [],
        False,
    )
    assert store.update_job(job.id, status="running").status == "running"
    store.update_job(job.id, done=1, add_errors=[{"doc_id": "d2", "reason": "empty text"}])
    store.update_job(job.id, done=3, add_errors=[{"doc_id": "d3", "reason": "too long"}])
    final = store.update_job(job.id, status="done")
    got = store.get_job(job.id)
    assert got == final
    assert (got.status, got.done, got.finished) == ("done", 3, True)
    assert got.errors == [
        {"doc_id": "d2", "reason": "empty text"},
        {"doc_id": "d3", "reason": "too long"},
    ]
    assert got.updated_at >= got.created_at
    assert [j.id for j in store.list_jobs("c")] == [job.id]
    with pytest.raises(NotFound):
        store.get_job("nope")
    with pytest.raises(NotFound):
        store.update_job("nope", status="done")
    with pytest.raises(InvalidInput):
        store.update_job(job.id, status="exploded")
    with pytest.raises(InvalidInput):
        store.update_job(job.id, add_errors=[{"doc_id": "x"}])
    assert store.get_job(job.id) == final


# ------------------------------------------------------------------------------------ concurrency


def test_concurrent_writers_and_readers_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'concurrent.db'}"
    stores = [Store(url), Store(url)]  # two Store objects on one file share the process lock
    stores[0].create_collection("c", {})
    errors: list[BaseException] = []
    n_writers, n_docs = 4, 15

    def writer(w: int) -> None:
        st = stores[w % 2]
        try:
            for i in range(n_docs):
                (r,) = st.upsert_documents(
                    "c", docs((f"w{w}-{i}", f"Doc {i}. By {w}"), writer=w), sentence_chunks
                )
                st.set_embeddings(r.chunk_ids, np.ones((len(r.chunk_ids), 4)))
                if i % 5 == 4:
                    st.delete_document("c", f"w{w}-{i}")
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    def reader() -> None:
        st = stores[1]
        try:
            for _ in range(30):
                ids = st.filter_chunk_ids("c", {"writer": [0, 1, 2, 3]})
                st.get_chunks(list(ids)[:20])
                st.collection_stats("c")
                list(st.iter_chunks("c", batch_size=7))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(n_writers)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    stats = stores[0].collection_stats("c")
    kept = n_writers * (n_docs - n_docs // 5)
    assert (stats.documents, stats.chunks, stats.embedded_chunks) == (kept, 2 * kept, 2 * kept)
    for s in stores:
        s.close()


def test_memory_and_plain_path_urls(tmp_path):
    with Store("sqlite://") as mem:
        mem.create_collection("m", {})
        assert [c.name for c in mem.list_collections()] == ["m"]
    path = tmp_path / "nested" / "dir" / "plain.db"
    with Store(path) as st:
        st.create_collection("p", {})
    with Store(str(path)) as st:
        assert [c.name for c in st.list_collections()] == ["p"]
    with pytest.raises(InvalidInput):
        Store("mysql://u@h/db")


def test_concurrent_upserts_of_same_documents(db_url):
    """Writers racing on the same external ids: no lock errors, no unique-constraint violations,
    and each document ends up with exactly the chunks of one writer's version."""
    stores = [Store(db_url) for _ in range(3)]
    stores[0].create_collection("c", {})
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            for rnd in range(4):
                batch = docs(*[(f"d{i}", f"Version {w}. Round {rnd}. Doc {i}") for i in range(5)])
                stores[w].upsert_documents("c", batch, sentence_chunks)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    stats = stores[0].collection_stats("c")
    assert (stats.documents, stats.chunks) == (5, 15)
    for i in range(5):
        doc = stores[0].get_document("c", f"d{i}")
        assert [c.text for c in stores[0].get_chunks(doc.chunk_ids)] == doc.text.split(". ")
    for s in stores:
        s.close()
