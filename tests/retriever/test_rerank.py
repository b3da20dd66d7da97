"""The rerank stage: re-scoring the best ``depth`` hits, the order it gives, the hits past the
depth, the cut to ``k``, and the checks of its settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from toydata import build_tiny_encoder

from common.errors import InvalidInput
from retriever.cross_encoder import PairSettings, Reranker, warm_start
from retriever.hybrid import Hit, SearchResult
from retriever.rerank import (
    DEFAULT_RERANK_DEPTH,
    MAX_RERANK_DEPTH,
    RerankSettings,
    blend,
    rerank_hits,
)


class LengthScorer:
    """Scores a text by its length: the longest first. Records what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    def score(self, query, texts, *, batch_size=32):
        self.calls.append((query, list(texts)))
        return np.asarray([len(t) for t in texts], dtype=np.float32)


def _result(texts: list[str]) -> SearchResult:
    hits = [
        Hit(rank=i + 1, chunk_id=100 + i, doc_id=f"d{i}", title="", text=t, char_start=0, char_end=len(t),
            metadata={}, scores={"bm25": None, "dense": None, "fused": 1.0 / (i + 1)})
        for i, t in enumerate(texts)
    ]
    return SearchResult(hits, {"bm25_ms": 1.0, "total_ms": 5.0})


TEXTS = ["aa", "aaaa", "a", "aaaaa", "aaa", "aaaaaa"]  # fused order d0..d5


def test_reranks_within_depth_and_keeps_the_rest_in_fused_order():
    found = _result(TEXTS)
    scorer = LengthScorer()
    out = rerank_hits(found, scorer, "q", 4)
    assert scorer.calls == [("q", TEXTS[:4])]  # only the best 4 are re-scored
    assert [h.doc_id for h in out.hits] == ["d3", "d1", "d0", "d2", "d4", "d5"]
    assert [h.rank for h in out.hits] == [1, 2, 3, 4, 5, 6]
    assert [h.rerank_score for h in out.hits] == [5.0, 4.0, 2.0, 1.0, None, None]
    # Every first-stage score is kept; ``score`` is the one the ranking used.
    assert [h.scores["fused"] for h in out.hits[:4]] == [1 / 4, 1 / 2, 1.0, 1 / 3]
    assert out.hits[0].score == 5.0 and out.hits[4].score == pytest.approx(1 / 5)
    assert out.timings_ms["bm25_ms"] == 1.0 and out.timings_ms["rerank_ms"] >= 0
    assert out.timings_ms["total_ms"] == pytest.approx(5.0 + out.timings_ms["rerank_ms"])
    # Pure: the input is untouched.
    assert [h.doc_id for h in found.hits] == [f"d{i}" for i in range(6)]
    assert [h.rank for h in found.hits] == list(range(1, 7))
    assert all(h.rerank_score is None for h in found.hits) and "rerank_ms" not in found.timings_ms


def test_cut_to_k_after_reranking():
    out = rerank_hits(_result(TEXTS), LengthScorer(), "q", 6, k=2)
    assert [h.doc_id for h in out.hits] == ["d5", "d3"] and [h.rank for h in out.hits] == [1, 2]
    deep = rerank_hits(_result(TEXTS[:3]), LengthScorer(), "q", 50)  # depth beyond the hits
    assert [h.doc_id for h in deep.hits] == ["d1", "d0", "d2"]


def test_ties_keep_the_fused_order_and_empty_results_pass():
    class Flat:
        def score(self, query, texts, *, batch_size=32):
            return np.zeros(len(texts), np.float32)

    out = rerank_hits(_result(TEXTS), Flat(), "q", 6)
    assert [h.doc_id for h in out.hits] == [f"d{i}" for i in range(6)]
    assert rerank_hits(SearchResult([], {}), Flat(), "q", 10).hits == []


def test_a_real_cross_encoder_orders_by_its_own_scores(tmp_path, minilm_dir):
    settings = PairSettings(max_length=64, max_query_tokens=8)
    model, tok = warm_start(build_tiny_encoder(tmp_path / "enc", minilm_dir), settings, seed=1)
    with torch.no_grad():
        model.classifier.weight.normal_(0, 1.0)
    reranker = Reranker(model, tok, settings, device="cpu", precision="fp32")
    texts = ["Lava flows from volcanoes.", "Bread rises with yeast.", "Tides follow the Moon.", "Kites fly on wind."]
    out = rerank_hits(_result(texts), reranker, "why do volcanoes erupt", 4)
    expected = reranker.score("why do volcanoes erupt", texts)
    assert [h.text for h in out.hits] == [texts[i] for i in np.argsort(-expected, kind="stable")]
    np.testing.assert_allclose([h.rerank_score for h in out.hits], np.sort(expected)[::-1], rtol=1e-6)


def test_settings_are_checked():
    assert RerankSettings("rr").depth == DEFAULT_RERANK_DEPTH == 50
    assert RerankSettings.from_mapping({"model": "rr", "depth": 7}) == RerankSettings("rr", 7)
    assert RerankSettings("rr", MAX_RERANK_DEPTH).to_dict() == {"model": "rr", "depth": 1000}
    assert RerankSettings("rr", 5, 0.5).to_dict() == {"model": "rr", "depth": 5, "weight": 0.5}
    assert RerankSettings.from_mapping({"model": "rr", "weight": 0.25}).weight == 0.25
    # no weight: the reranker's own (Reranker.weight); an explicit one is kept, 1 included
    assert RerankSettings("rr").weight is None and "weight" not in RerankSettings("rr").to_dict()
    assert RerankSettings.from_mapping({"model": "rr", "weight": 1}).to_dict() == {"model": "rr", "depth": 50, "weight": 1.0}
    for weight in (-0.1, 1.5, "0.5", True, float("nan")):
        with pytest.raises(InvalidInput, match="weight"):
            RerankSettings("rr", 5, weight)  # type: ignore[arg-type]
    for depth in (0, -1, MAX_RERANK_DEPTH + 1, 2.5, True, "10"):
        with pytest.raises(InvalidInput, match="depth"):
            RerankSettings("rr", depth)  # type: ignore[arg-type]
    for model in ("", "  ", None, 3):
        with pytest.raises(InvalidInput, match="model"):
            RerankSettings(model)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="unknown rerank settings"):
        RerankSettings.from_mapping({"model": "rr", "k": 3})
    with pytest.raises(InvalidInput, match="needs a model"):
        RerankSettings.from_mapping({"depth": 3})
    with pytest.raises(InvalidInput, match="object"):
        RerankSettings.from_mapping("rr")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="depth"):
        rerank_hits(_result(TEXTS), LengthScorer(), "q", 0)


def test_weight_blends_the_reranker_with_the_fused_order():
    # fused: d0 > d1 > ... > d5 (1/(i+1)); lengths: d5 > d3 > d1 > d4 > d0 > d2
    found = _result(TEXTS)
    only = rerank_hits(found, LengthScorer(), "q", 6, weight=1.0)
    assert [h.doc_id for h in only.hits] == ["d5", "d3", "d1", "d4", "d0", "d2"]
    kept = rerank_hits(found, LengthScorer(), "q", 6, weight=0.0)
    assert [h.doc_id for h in kept.hits] == [f"d{i}" for i in range(6)]  # the fused order, re-scored
    assert [h.rerank_score for h in kept.hits] == [2.0, 4.0, 1.0, 5.0, 3.0, 6.0]  # each the reranker's own score
    mid = rerank_hits(found, LengthScorer(), "q", 6, weight=0.5)
    lengths = np.array([len(t) for t in TEXTS], float)
    fused = 1.0 / np.arange(1, 7)
    key = 0.5 * (lengths - 1) / 5 + 0.5 * (fused - fused.min()) / (1 - fused.min())
    assert [h.doc_id for h in mid.hits] == [f"d{i}" for i in np.argsort(-key, kind="stable")]
    assert [h.doc_id for h in mid.hits] not in ([h.doc_id for h in only.hits], [h.doc_id for h in kept.hits])


def test_blend_normalises_each_side_and_handles_flat_scores():
    np.testing.assert_allclose(blend(np.array([3.0, 1.0]), np.array([0.0, 1.0]), 1.0), [3.0, 1.0])
    np.testing.assert_allclose(blend(np.array([10.0, 0.0, 5.0]), np.array([0.1, 0.3, 0.2]), 0.5), [0.5, 0.5, 0.5])
    np.testing.assert_allclose(blend(np.array([2.0, 2.0]), np.array([0.3, 0.1]), 0.7), [0.3, 0.0])  # flat side counts 0
