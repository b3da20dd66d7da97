"""The engine exercised directly (the door the CLI, the API and the benchmarks share): lifecycle
and store ownership, collections, documents, jobs, search, answers and generator choice."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
from toydata import TOY_CORPUS, make_settings

from common.errors import (
    BudgetExceeded,
    CollectionNotFound,
    DocumentNotFound,
    InvalidInput,
    NotFound,
)
from engine import Engine, JobRunner, build_engine
from index.store import Store
from retriever.tokenizer import Tokenizer

DOCS = [{"id": k, "title": t, "text": x, "metadata": {"n": i}} for i, (k, (t, x)) in enumerate(TOY_CORPUS.items())]


class HashingEncoder:
    """A stand-in encoder (the engine is typed against a Protocol): bag of hashed words, unit
    length. Counts every text it embeds."""

    dim = 64

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.seen: list[str] = []

    def encode(self, texts):
        self.seen.extend(texts)
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, zlib.crc32(w.strip(".,").encode()) % self.dim] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


@pytest.fixture
def encoder(minilm_dir: Path) -> HashingEncoder:
    return HashingEncoder(Tokenizer.from_dir(minilm_dir))


@pytest.fixture
def engine(tmp_path: Path, encoder: HashingEncoder, tiny_qa_dir: Path):
    eng = Engine(Store(f"sqlite:///{tmp_path / 'attend.db'}"), data_dir=tmp_path, encoder="hash",
                 encoder_loader=lambda name: encoder, generator=str(tiny_qa_dir))
    eng.open()
    yield eng
    eng.close()


def test_ingest_outcomes_and_stats(engine: Engine, encoder: HashingEncoder) -> None:
    engine.create_collection("toy", {"chunk_tokens": 32, "chunk_overlap": 8})
    bad = {"id": "blank", "text": "   "}
    dup_first = {"id": "dup", "text": "first copy of the document"}
    dup_last = {"id": "dup", "text": "last copy of the document"}
    report = engine.upsert_documents("toy", [*DOCS, bad, dup_first, dup_last], batch_size=3)
    by_id = {}
    for o in report.outcomes:
        by_id.setdefault(o.doc_id, []).append(o.status)
    assert by_id["blank"] == ["failed"] and by_id["dup"] == ["failed", "inserted"]
    assert report.counts() == {"inserted": len(DOCS) + 1, "failed": 2}
    stats = engine.collection_stats("toy")
    assert stats["documents"] == len(DOCS) + 1
    assert stats["chunks"] == stats["bm25_chunks"] == stats["dense_chunks"] >= len(DOCS) + 1
    # Each chunk is embedded once, title and text joined as the indexes see them.
    assert len(encoder.seen) == stats["chunks"]
    assert "Photosynthesis" in encoder.seen[0] and "chloroplasts" in encoder.seen[0]
    # Unchanged documents are neither embedded nor rewritten; a changed one is.
    encoder.seen.clear()
    again = engine.upsert_documents("toy", [DOCS[0], {**DOCS[1], "text": "Chlorophyll is green."}])
    assert [o.status for o in again.outcomes] == ["unchanged", "updated"]
    assert encoder.seen == ["Chlorophyll Chlorophyll is green."]
    store_only = engine.collection_stats("toy", indexes=False)
    assert set(store_only) == {"documents", "chunks", "tokens"}
    assert store_only["chunks"] == engine.collection_stats("toy")["dense_chunks"]


def test_documents_and_search(engine: Engine) -> None:
    engine.create_collection("toy")
    engine.upsert_documents("toy", DOCS)
    hits = engine.search("toy", "why do volcanoes erupt lava", k=3, mode="bm25").hits
    assert hits[0].doc_id == "d3"
    filtered = engine.search("toy", "programming language", k=5, mode="hybrid", filters={"n": 5}).hits
    assert [h.doc_id for h in filtered] == ["d6"]
    assert engine.get_document("toy", "d3").title == "Volcanoes"
    assert [d.external_id for d in engine.list_documents("toy", offset=1, limit=2)] == ["d2", "d3"]
    assert engine.has_document("toy", "d3") and not engine.has_document("toy", "nope")
    removed = engine.delete_document("toy", "d3")
    assert removed >= 1
    assert all(h.doc_id != "d3" for h in engine.search("toy", "volcanoes erupt lava", k=5).hits)
    with pytest.raises(DocumentNotFound):
        engine.get_document("toy", "d3")
    with pytest.raises(CollectionNotFound):
        engine.search("nope", "anything")


def test_delete_collection_removes_its_index_files(engine: Engine, tmp_path: Path) -> None:
    engine.create_collection("toy")
    engine.upsert_documents("toy", DOCS[:3])
    engine.save("toy")
    root = tmp_path / "indexes" / "toy"
    assert any(root.iterdir())
    engine.delete_collection("toy")
    assert not root.exists()
    assert [c.name for c in engine.list_collections()] == []


def test_jobs_go_through_the_engine(engine: Engine) -> None:
    with pytest.raises(CollectionNotFound):
        engine.create_job("nope", total=1)
    engine.create_collection("toy")
    runner = JobRunner(engine, batch_size=2)
    try:
        job = runner.submit("toy", [*DOCS[:3], {"id": "bad", "text": ""}])
        runner.wait(timeout=60)
    finally:
        runner.close()
    done = engine.get_job(job.id)
    assert (done.status, done.done, done.total) == ("done", 4, 4)
    assert [e["doc_id"] for e in done.errors] == ["bad"]
    assert [j.id for j in engine.list_jobs("toy")] == [job.id]
    with pytest.raises(CollectionNotFound):
        engine.list_jobs("nope")
    with pytest.raises(NotFound):
        engine.get_job("no-such-job")


def test_answers_and_the_one_budget_check(engine: Engine) -> None:
    engine.create_collection("toy")
    engine.upsert_documents("toy", DOCS)
    found, result = engine.answer("toy", "what do plants make in chloroplasts", k=4, budget=256)
    assert found.hits and result.context.tokens <= 256
    assert result.abstained or result.citations
    window = engine.answerer().max_context
    with pytest.raises(BudgetExceeded, match=f"context window of {window}"):
        engine.answer("toy", "what do plants make", budget=window + 1)
    with pytest.raises(BudgetExceeded, match="below the minimum"):
        engine.answer("toy", "what do plants make", budget=5)
    with pytest.raises(InvalidInput, match="integer"):
        engine.answer("toy", "what do plants make", budget=True)
    found, stream = engine.answer_stream("toy", "what do plants make", budget=256)
    pieces = list(stream)
    assert stream.result is not None and "".join(pieces) == (stream.result.answer or "")
    assert "retrieval_ms" in stream.result.timings_ms


def test_generator_choice(engine: Engine, tiny_qa_dir: Path) -> None:
    assert engine.resolve_generator() == str(tiny_qa_dir)
    assert engine.resolve_generator("extractive") == str(tiny_qa_dir)
    assert engine.resolve_generator("generative") == "smollm2"
    with pytest.raises(InvalidInput, match="unknown generator"):
        engine.resolve_generator("/etc/passwd")
    with pytest.raises(InvalidInput, match="unknown generator"):
        engine.create_collection("toy", {"generator": "/somewhere/else"})
    info = engine.create_collection("toy", {"generator": "extractive"})
    assert engine.resolve_generator(collection=info.name) == str(tiny_qa_dir)


def test_engine_owns_the_store_and_a_restart_finds_everything(tmp_path: Path, tiny_qa_dir: Path) -> None:
    settings = make_settings(tmp_path / "data", generator=str(tiny_qa_dir))
    first = build_engine(settings)
    first.create_collection("toy")
    first.upsert_documents("toy", DOCS)
    closed = []
    close_store = first.store.close
    first.store.close = lambda: closed.append(True) or close_store()  # type: ignore[method-assign]
    first.close()
    assert closed == [True]  # the engine closes the store it was given
    second = build_engine(settings)
    second.open()
    try:
        assert second.collection_stats("toy")["documents"] == len(DOCS)
        assert second.search("toy", "tectonic plates earthquakes", k=1).hits[0].doc_id == "d4"
    finally:
        second.close()
