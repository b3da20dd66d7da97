"""BM25: parity with rank_bm25 and bm25s, incremental adds/deletes equal a fresh build, filters,
persistence, concurrency, and SciFact quality."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from common.errors import InvalidInput, NotFound
from index.analyzer import Analyzer
from index.bm25 import BM25Index, select_variant

# Repeated terms within documents, "common" in 7 of 8 documents (negative Robertson idf), an empty
# document, and lengths that vary a lot.
CORPUS = [
    "common apple apple apple banana",
    "common banana cherry",
    "common cherry cherry date date date date elderberry",
    "common date",
    "common apple elderberry fig fig grape grape grape grape grape grape",
    "common",
    "",
    "honeydew kiwi kiwi apple",
    "common fig lemon lemon mango apple banana cherry date elderberry",
]
QUERIES = [
    "apple",
    "apple apple banana",  # repeated query term
    "common",  # negative idf only
    "common date",
    "kiwi grape nothinghere",
    "fig lemon mango banana cherry",
    "nothinghere",
]
PLAIN = Analyzer(stopwords=None, stemmer=None)


def _tokens(texts):
    return [PLAIN(t) for t in texts]


def _build(texts, ids=None, **kw) -> BM25Index:
    index = BM25Index(analyzer=PLAIN, **kw)
    index.add(np.arange(len(texts)) if ids is None else ids, texts)
    return index


def test_select_variant():
    assert select_variant("lucene").name == "lucene"
    assert select_variant("okapi") is select_variant("robertson")
    assert select_variant("BM25+").query_delta
    with pytest.raises(ValueError, match="unknown BM25 variant"):
        select_variant("bm26")
    with pytest.raises(ValueError):
        BM25Index(variant="tf-idf")


@pytest.mark.parametrize("k1,b", [(1.5, 0.75), (0.9, 0.4), (1.2, 0.9)])
def test_okapi_equals_rank_bm25(k1, b):
    rank_bm25 = pytest.importorskip("rank_bm25")
    ref = rank_bm25.BM25Okapi(_tokens(CORPUS), k1=k1, b=b, epsilon=0.25)
    assert min(ref.idf.values()) > 0 and ref.idf["common"] == pytest.approx(0.25 * ref.average_idf)
    ours = _build(CORPUS, variant="robertson", k1=k1, b=b)
    for q in QUERIES:
        ids, scores = ours.score_all(q)
        np.testing.assert_array_equal(ids, np.arange(len(CORPUS)))
        np.testing.assert_allclose(scores, ref.get_scores(PLAIN(q)), rtol=0, atol=1e-6)
        top_ids, top_scores = ours.search(q, k=4)
        expected = ref.get_scores(PLAIN(q))
        order = [i for i in np.lexsort((np.arange(len(CORPUS)), -expected)) if expected[i] > 0][:4]
        np.testing.assert_array_equal(top_ids, order)
        np.testing.assert_allclose(top_scores, expected[order], rtol=1e-6)


def test_bm25plus_equals_rank_bm25_on_matching_documents():
    rank_bm25 = pytest.importorskip("rank_bm25")
    ref = rank_bm25.BM25Plus(_tokens(CORPUS), k1=1.2, b=0.75, delta=1.0)
    ours = _build(CORPUS, variant="bm25+", k1=1.2, b=0.75, delta=1.0)
    for q in QUERIES:
        ids, scores = ours.score_all(q)
        matching = np.array([any(t in doc for t in PLAIN(q)) for doc in _tokens(CORPUS)])
        np.testing.assert_allclose(scores[matching], ref.get_scores(PLAIN(q))[matching], atol=1e-6)
        assert not scores[~matching].any()  # rank_bm25 gives them delta * idf; we never return them


@pytest.mark.parametrize("k1,b", [(1.5, 0.75), (0.9, 0.4)])
def test_lucene_equals_bm25s(k1, b):
    bm25s = pytest.importorskip("bm25s")
    ref = bm25s.BM25(method="lucene", k1=k1, b=b)
    ref.index(_tokens(CORPUS), show_progress=False)
    ours = _build(CORPUS, k1=k1, b=b)
    for q in QUERIES:
        q_tokens = [t for t in PLAIN(q) if t in ref.vocab_dict]
        expected = ref.get_scores(q_tokens) if q_tokens else np.zeros(len(CORPUS))
        np.testing.assert_allclose(
            ours.score_all(q)[1], expected, rtol=1e-5, atol=1e-6
        )  # bm25s: float32


def test_top_k_order_and_filters():
    index = _build(CORPUS)
    ids, scores = index.search("apple", k=10)
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    assert sorted(ids.tolist()) == [0, 4, 7, 8]  # only documents containing the term
    assert np.all(np.diff(scores) <= 0)
    # the filter applies before the cut: k=2 still gives two allowed documents
    allowed = {7, 8, 5}
    f_ids, f_scores = index.search("apple", k=2, allowed_ids=allowed)
    assert set(f_ids.tolist()) == {7, 8}
    np.testing.assert_allclose(f_scores, [scores[ids.tolist().index(i)] for i in f_ids])
    assert index.search("apple", k=2, allowed_ids=np.array([5, 6]))[0].size == 0
    assert index.search("apple", k=5, allowed_ids=[])[0].size == 0
    assert index.search("nothinghere", k=5)[0].size == 0
    assert index.search("", k=5)[0].size == 0


def test_ties_break_by_ascending_id():
    index = _build(["same words here"] * 4 + ["other"], ids=[40, 10, 30, 20, 50])
    ids, scores = index.search("words", k=3)
    assert ids.tolist() == [10, 20, 30]
    assert len(set(scores.tolist())) == 1


def test_search_batch_equals_search():
    index = _build(CORPUS)
    batch = index.search_batch(QUERIES, k=3, allowed_ids={0, 1, 2, 4, 8})
    for q, (ids, scores) in zip(QUERIES, batch, strict=True):
        e_ids, e_scores = index.search(q, k=3, allowed_ids={0, 1, 2, 4, 8})
        np.testing.assert_array_equal(ids, e_ids)
        np.testing.assert_array_equal(scores, e_scores)


def test_bad_input():
    index = BM25Index()
    assert index.search("anything", k=3)[0].size == 0
    with pytest.raises(InvalidInput):
        index.search("x", k=0)
    with pytest.raises(InvalidInput):
        index.add([1, 2], ["one"])
    with pytest.raises(InvalidInput):
        index.add([1, 1], ["one", "two"])
    with pytest.raises(InvalidInput):
        index.add([1.5], ["one"])
    assert index.delete([12345]) == 0


def test_readd_replaces_and_delete_removes():
    index = _build(CORPUS, ids=np.arange(100, 100 + len(CORPUS)))
    index.add([100], ["zucchini"])
    assert len(index) == len(CORPUS)
    assert index.search("zucchini", k=5)[0].tolist() == [100]
    assert 100 not in index.search("banana", k=10)[0]
    assert index.delete([100, 101, 999]) == 2
    assert len(index) == len(CORPUS) - 2
    assert index.search("zucchini", k=5)[0].size == 0
    assert 101 not in index.ids() and 100 not in index


WORDS = [f"w{i}" for i in range(40)]


def _random_text(rng) -> str:
    n = int(rng.integers(0, 12))
    # Zipf-ish: low word numbers are common, so some terms have high df
    return " ".join(WORDS[min(int(rng.zipf(1.3)) - 1, len(WORDS) - 1)] for _ in range(n))


def _assert_same_as_fresh(index: BM25Index, live: dict[int, str], queries, variant: str) -> None:
    assert len(index) == len(live)
    np.testing.assert_array_equal(index.ids(), sorted(live))
    fresh = BM25Index(analyzer=PLAIN, variant=variant)
    if live:
        fresh.add(list(live), list(live.values()))
    for q in queries:
        for allowed in (None, set(list(live)[::2])):
            ids, scores = index.search(q, k=7, allowed_ids=allowed)
            e_ids, e_scores = fresh.search(q, k=7, allowed_ids=allowed)
            np.testing.assert_allclose(scores, e_scores, rtol=0, atol=1e-6)
            np.testing.assert_array_equal(ids, e_ids)  # ties break by id, so the order is exact
        a_ids, a_scores = index.score_all(q)
        e_ids, e_scores = fresh.score_all(q)
        np.testing.assert_array_equal(a_ids, e_ids)
        np.testing.assert_allclose(a_scores, e_scores, rtol=0, atol=1e-6)


@pytest.mark.parametrize("variant", ["lucene", "robertson", "bm25+"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_adds_and_deletes_equal_fresh_build(variant, seed):
    rng = np.random.default_rng(seed)
    # small thresholds so delta merges and full compactions both happen
    index = BM25Index(
        analyzer=PLAIN, variant=variant, merge_ratio=0.5, tombstone_ratio=0.3, max_deltas=3
    )
    live: dict[int, str] = {}
    queries = [" ".join(rng.choice(WORDS[:15], size=int(rng.integers(1, 5)))) for _ in range(6)]
    next_id = 0
    saw_segments = set()
    for _ in range(25):
        op = rng.choice(["add", "add", "readd", "delete"])
        if op == "add" or not live:
            n = int(rng.integers(1, 15))
            new_ids = list(range(next_id, next_id + n))
            next_id += n
        elif op == "readd":
            new_ids = [
                int(i) for i in rng.choice(list(live), size=min(len(live), 3), replace=False)
            ]
        if op in ("add", "readd") or not live:
            texts = [_random_text(rng) for _ in new_ids]
            index.add(new_ids, texts)
            live.update(zip(new_ids, texts, strict=True))
        else:
            victims = [
                int(i)
                for i in rng.choice(
                    list(live), size=int(rng.integers(1, len(live) + 1)), replace=False
                )
            ]
            assert index.delete(victims + [10**9]) == len(victims)
            for v in victims:
                del live[v]
        saw_segments.add(index.n_segments)
        _assert_same_as_fresh(index, live, queries, variant)
    assert max(saw_segments) > 1  # deltas did exist, so the equality was not trivial


def test_segments_stay_bounded_under_single_adds():
    index = BM25Index(analyzer=PLAIN)
    index.add(np.arange(1000), [f"doc {i} w{i % 7}" for i in range(1000)])
    for i in range(1000, 1150):
        index.add([i], [f"doc {i} w{i % 7}"])
        assert index.n_segments <= 1 + index.max_deltas + 1
    assert len(index) == 1150
    ids, _ = index.search("w3", k=1000)
    assert sorted(ids.tolist()) == [i for i in range(1150) if i % 7 == 3]


def test_save_load_round_trip(tmp_path: Path):
    index = BM25Index(
        analyzer=Analyzer(stopwords=["common"]), variant="bm25+", k1=1.1, b=0.6, delta=0.5
    )
    index.add(np.arange(len(CORPUS)) * 10, CORPUS)
    index.add([1000], ["apple kiwi"])
    index.delete([30])
    manifest = index.save(tmp_path / "bm25")
    first_arrays = json.loads(manifest.read_text())["arrays"]
    loaded = BM25Index.load(tmp_path / "bm25")
    assert (loaded.variant, loaded.k1, loaded.b, loaded.delta) == ("bm25+", 1.1, 0.6, 0.5)
    assert loaded.analyzer.to_dict() == index.analyzer.to_dict()
    np.testing.assert_array_equal(loaded.ids(), index.ids())
    for q in QUERIES:
        for got, want in zip(loaded.search(q, k=5), index.search(q, k=5), strict=True):
            np.testing.assert_array_equal(got, want)
    # saving again replaces the arrays file and removes the old one; no temporary files remain
    loaded.add([2000], ["lemon"])
    loaded.save(tmp_path / "bm25")
    files = sorted(os.listdir(tmp_path / "bm25"))
    assert len(files) == 2 and "bm25.json" in files and first_arrays not in files
    assert 2000 in BM25Index.load(tmp_path / "bm25").search("lemon", k=5)[0]


def test_load_missing_raises_not_found(tmp_path: Path):
    with pytest.raises(NotFound):
        BM25Index.load(tmp_path / "nothing")


def test_searches_during_adds_see_consistent_snapshots():
    # Every document is the same text, so in any consistent state all scores for "alpha" are equal
    # and the result holds min(k, len) documents; a torn state (stats of one version, rows of
    # another) breaks one or the other.
    index = BM25Index(analyzer=PLAIN, max_deltas=2)
    index.add(np.arange(50), ["alpha beta"] * 50)
    errors: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            ids, scores = index.search("alpha", k=1000)
            if len(ids) < 50 or not np.all(scores == scores[0]):
                errors.append(f"{len(ids)} ids, scores {np.unique(scores)}")

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(50, 400, 7):
            index.add(np.arange(i, i + 7), ["alpha beta"] * 7)
            index.delete([i - 50])
            index.add([i - 50], ["alpha beta"])
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[:3]


# The shared data folder sits beside the repository (../shared/data), in CI too.
SCIFACT = Path(os.environ.get("ATTEND_SCIFACT", Path(__file__).resolve().parents[3] / "shared" / "data" / "scifact"))


@pytest.mark.slow
@pytest.mark.skipif(
    not (SCIFACT / "corpus.jsonl").exists(), reason=f"SciFact not found at {SCIFACT}"
)
def test_scifact_ndcg():
    from common.beir import load_beir
    from eval.metrics import evaluate
    from index.collection import index_text

    data = load_beir(SCIFACT, "test")
    doc_ids = list(data.corpus)
    index = BM25Index()
    index.add(np.arange(len(doc_ids)), [index_text(data.corpus[d]["title"], data.corpus[d]["text"]) for d in doc_ids])
    qids = list(data.queries)
    results = index.search_batch([data.queries[q] for q in qids], k=10)
    run = {
        q: {doc_ids[i]: float(s) for i, s in zip(*r, strict=True)}
        for q, r in zip(qids, results, strict=True)
    }
    assert evaluate(run, data.qrels, ("ndcg@10",))["ndcg@10"] >= 0.67
