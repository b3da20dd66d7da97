"""The rerank stage through the engine: a request's rerank, a collection's default and the
request that turns it off, the candidates it re-scores, answers packed in its order, the names a
request may use, and loading each reranker once."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from test_engine import DOCS, HashingEncoder
from toydata import build_tiny_encoder

from common.errors import InvalidInput
from engine import Engine
from engine.rerankers import Rerankers, choose_rerank
from index.collection import index_text
from index.store import Store
from retriever.cross_encoder import load_reranker
from retriever.rerank import RerankSettings
from retriever.tokenizer import Tokenizer

QUERY = "crust mantle plates volcano lava sunlight"


@pytest.fixture
def engine(tmp_path: Path, minilm_dir: Path, tiny_qa_dir: Path, tiny_reranker_dir: Path):
    encoder = HashingEncoder(Tokenizer.from_dir(minilm_dir))
    eng = Engine(Store(f"sqlite:///{tmp_path / 'attend.db'}"), data_dir=tmp_path, encoder="hash",
                 encoder_loader=lambda name: encoder, generator=str(tiny_qa_dir), reranker=str(tiny_reranker_dir))
    eng.open()
    eng.create_collection("toy", {"chunk_tokens": 32, "chunk_overlap": 8})
    eng.upsert_documents("toy", DOCS)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def reference(tiny_reranker_dir: Path):
    """The same reranker loaded apart from the engine, to check the engine's scores against."""
    return load_reranker(tiny_reranker_dir, device="cpu")


def _strip(hits):
    return [(h.rank, h.chunk_id, h.doc_id, h.text, h.scores, h.rerank_score) for h in hits]


def test_rerank_reorders_the_best_depth_candidates_then_cuts_to_k(engine: Engine, reference) -> None:
    fused = engine.search("toy", QUERY, k=8)
    assert len(fused.hits) >= 6 and all(h.rerank_score is None for h in fused.hits)
    assert "rerank_ms" not in fused.timings_ms
    # k=2 with depth 6: six candidates are retrieved and re-scored, the best two by the reranker kept.
    out = engine.search("toy", QUERY, k=2, rerank={"model": "rr", "depth": 6})
    expected = reference.score(QUERY, [index_text(h.title, h.text) for h in fused.hits[:6]])
    order = np.argsort(-expected, kind="stable")[:2]
    assert [h.chunk_id for h in out.hits] == [fused.hits[i].chunk_id for i in order]
    assert [h.rank for h in out.hits] == [1, 2]
    np.testing.assert_allclose([h.rerank_score for h in out.hits], expected[order], rtol=1e-5, atol=1e-6)
    assert out.hits[0].scores == fused.hits[order[0]].scores  # the first-stage scores are kept
    assert out.timings_ms["rerank_ms"] > 0 and out.timings_ms["total_ms"] >= out.timings_ms["rerank_ms"]
    # Depth below k: the best `depth` are reranked, the rest follow in fused order.
    part = engine.search("toy", QUERY, k=8, rerank=RerankSettings("rr", 3))
    assert [h.rerank_score is not None for h in part.hits] == [True] * 3 + [False] * (len(fused.hits) - 3)
    assert {h.chunk_id for h in part.hits[:3]} == {h.chunk_id for h in fused.hits[:3]}
    assert _strip(part.hits[3:]) == _strip(fused.hits[3:])
    scores = [h.rerank_score for h in part.hits[:3]]
    assert scores == sorted(scores, reverse=True)


def test_collection_default_request_override_and_off(engine: Engine) -> None:
    engine.create_collection("ranked", {"chunk_tokens": 32, "chunk_overlap": 8, "rerank": {"model": "rr", "depth": 4}})
    assert engine.get_collection("ranked").settings["rerank"] == {"model": "rr", "depth": 4}
    engine.upsert_documents("ranked", DOCS)
    by_default = engine.search("ranked", QUERY, k=8)
    assert sum(h.rerank_score is not None for h in by_default.hits) == 4
    deeper = engine.search("ranked", QUERY, k=8, rerank={"model": "rr", "depth": 6})
    assert sum(h.rerank_score is not None for h in deeper.hits) == 6
    off = engine.search("ranked", QUERY, k=8, rerank={"model": None})
    plain = engine.search("toy", QUERY, k=8)
    same = [(h.rank, h.doc_id, h.text, h.scores, h.rerank_score) for h in plain.hits]  # chunk ids differ
    assert [(h.rank, h.doc_id, h.text, h.scores, h.rerank_score) for h in off.hits] == same
    assert "rerank_ms" not in off.timings_ms
    # The depth alone is filled in with its default.
    engine.create_collection("filled", {"rerank": {"model": "rr"}})
    assert engine.get_collection("filled").settings["rerank"] == {"model": "rr", "depth": 50}


def test_answer_and_diagnose_take_a_rerank(engine: Engine) -> None:
    found, result = engine.answer("toy", "what makes volcanoes erupt", k=4, rerank={"model": "rr", "depth": 8})
    assert [h.rank for h in found.hits] == [1, 2, 3, 4] and all(h.rerank_score is not None for h in found.hits)
    # The context packs in the reranker's order and shows its scores.
    kept_or_cut = {c.chunk_id: c for c in result.context.kept} | {c.chunk_id: c for c, _ in result.context.cut}
    for h in found.hits:
        assert kept_or_cut[h.chunk_id].rank == h.rank
        assert kept_or_cut[h.chunk_id].score == pytest.approx(h.rerank_score)
    assert "retrieval_ms" in result.timings_ms
    diag = engine.diagnose("toy", "what makes volcanoes erupt", k=3, rerank={"model": "rr", "depth": 8})
    assert [c.chunk_id for c in sorted(diag.chunks, key=lambda c: c.rank)] == [h.chunk_id for h in found.hits[:3]]


def test_only_allowed_rerankers(engine: Engine, tiny_reranker_dir: Path) -> None:
    for bad in ({"model": "nope"}, {"model": "../rr"}, {"model": str(tiny_reranker_dir.parent)}):
        with pytest.raises(InvalidInput, match="unknown reranker"):
            engine.search("toy", QUERY, rerank=bad)
    with pytest.raises(InvalidInput, match="unknown reranker"):
        engine.create_collection("bad", {"rerank": {"model": "nope"}})
    with pytest.raises(InvalidInput, match="depth"):
        engine.search("toy", QUERY, rerank={"model": "rr", "depth": 1001})
    with pytest.raises(InvalidInput, match="needs a model"):
        engine.create_collection("bad", {"rerank": {"model": None}})
    with pytest.raises(InvalidInput, match="unknown rerank settings"):
        engine.search("toy", QUERY, rerank={"model": None, "k": 3})
    assert engine.reranker_choices() == ["attend-rerank", "rr"]  # the shipped one, and the configured one by its folder name
    # The configured reranker answers to its full value too.
    assert engine.search("toy", QUERY, k=2, rerank={"model": str(tiny_reranker_dir), "depth": 4}).hits[0].rerank_score is not None


def test_choose_rerank() -> None:
    default = {"model": "rr", "depth": 4}
    assert choose_rerank(None, None) is None
    assert choose_rerank(None, default) == RerankSettings("rr", 4)
    assert choose_rerank({"model": None}, default) is None
    assert choose_rerank({"model": "other"}, default) == RerankSettings("other", 50)
    assert choose_rerank(RerankSettings("x", 2), default) == RerankSettings("x", 2)


def test_rerankers_under_models_and_loaded_once(tmp_path: Path, tiny_reranker_dir: Path, minilm_dir: Path) -> None:
    import shutil

    models = tmp_path / "models"
    shutil.copytree(tiny_reranker_dir, models / "shipped-rr")
    build_tiny_encoder(models / "an-encoder", minilm_dir)  # a model, but not a reranker
    loads: list[Path] = []
    gate = threading.Event()

    def loader(path: Path):
        gate.wait(5)
        loads.append(path)
        return object()

    rr = Rerankers(None, models_dir=models, loader=loader)
    assert rr.choices() == ["shipped-rr"]
    assert rr.resolve("shipped-rr") == models / "shipped-rr"
    for bad in ("an-encoder", "missing", "..", "shipped-rr/", str(models / "shipped-rr")):
        with pytest.raises(InvalidInput, match="unknown reranker"):
            rr.resolve(bad)
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(rr.get("shipped-rr"))) for _ in range(4)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join()
    assert len(loads) == 1 and len(got) == 4 and all(g is got[0] for g in got)


def _with_weight(src: Path, dst: Path, weight) -> Path:
    import json
    import shutil

    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["attend_reranker"]["weight"] = weight
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_a_request_without_weight_takes_the_rerankers_own(tmp_path: Path, minilm_dir: Path, tiny_qa_dir: Path,
                                                           tiny_reranker_dir: Path) -> None:
    from common.errors import CheckpointError

    own = _with_weight(tiny_reranker_dir, tmp_path / "zero", 0.0)  # recommends the fused order
    assert load_reranker(own, device="cpu").weight == 0.0 and load_reranker(tiny_reranker_dir, device="cpu").weight == 1.0
    encoder = HashingEncoder(Tokenizer.from_dir(minilm_dir))
    eng = Engine(Store(f"sqlite:///{tmp_path / 'attend.db'}"), data_dir=tmp_path, encoder="hash",
                 encoder_loader=lambda name: encoder, generator=str(tiny_qa_dir), reranker=str(own))
    eng.open()
    try:
        eng.create_collection("toy", {"chunk_tokens": 32, "chunk_overlap": 8})
        eng.upsert_documents("toy", DOCS)
        fused = [h.chunk_id for h in eng.search("toy", QUERY, k=6).hits]
        by_own = eng.search("toy", QUERY, k=6, rerank={"model": "zero", "depth": 6})
        assert [h.chunk_id for h in by_own.hits] == fused and all(h.rerank_score is not None for h in by_own.hits)
        by_scores = eng.search("toy", QUERY, k=6, rerank={"model": "zero", "depth": 6, "weight": 1.0})
        scores = [h.rerank_score for h in by_scores.hits]
        assert scores == sorted(scores, reverse=True)  # an explicit weight wins over the reranker's own
        assert [h.chunk_id for h in by_scores.hits] != fused  # the tiny random reranker reorders these six
    finally:
        eng.close()
    for bad in (1.5, "0.3", True):
        with pytest.raises(CheckpointError, match="weight"):
            load_reranker(_with_weight(tiny_reranker_dir, tmp_path / f"bad{bad}", bad), device="cpu")


def test_the_shipped_reranker_loads_and_prefers_the_relevant_abstract() -> None:
    from common.paths import MODELS_DIR

    rr = load_reranker(MODELS_DIR / "attend-rerank", device="cpu", precision="fp32")
    assert rr.weight == 0.7  # the weight chosen on its held-out training queries (model card)
    claim = "Aspirin lowers the risk of a second heart attack."
    texts = ["In a randomised trial of 5,000 patients after myocardial infarction, daily low-dose aspirin reduced "
             "recurrent myocardial infarction by 25% compared with placebo.",
             "Chlorophyll absorbs red and blue light; leaves look green because green light is reflected.",
             "Soil bacteria fix atmospheric nitrogen in the root nodules of legumes."]
    scores = rr.score(claim, texts)
    assert scores[0] > scores[1] and scores[0] > scores[2]
    np.testing.assert_allclose(rr.score_reference(claim, texts), scores, rtol=1e-4, atol=1e-4)
