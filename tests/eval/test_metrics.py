"""Retrieval metrics: hand-computed cases for each measure and convention, and agreement with ranx."""

from __future__ import annotations

import copy
import math
import random

import pytest

from common.errors import InvalidInput
from eval.metrics import (
    evaluate,
    evaluate_per_query,
    map_at_k,
    mean_score,
    mrr_at_k,
    ndcg_at_k,
    parse_metric,
    precision_at_k,
    rank_docs,
    recall_at_k,
)

L2 = math.log2

# One query, ranking d1 > d2 > d3 > d4 > d5; d2 (rel 2) and d4 (rel 1) are relevant, d3 judged 0,
# d9 (rel 1) relevant but never retrieved.
RUN = {"q": {"d1": 0.9, "d2": 0.8, "d3": 0.7, "d4": 0.6, "d5": 0.5}}
QRELS = {"q": {"d2": 2, "d3": 0, "d4": 1, "d9": 1}}


def test_rank_docs_orders_by_score_then_doc_id_descending():
    assert rank_docs({"a": 1.0, "c": 2.0, "b": 1.0, "d": 0.5}) == ["c", "b", "a", "d"]
    with pytest.raises(InvalidInput):
        rank_docs({"a": float("nan")})


def test_ndcg_uses_linear_gains_and_ideal_from_qrels():
    # DCG@5 = 2/log2(3) + 1/log2(5); ideal gains 2, 1, 1 -> 2/log2(2) + 1/log2(3) + 1/log2(4)
    dcg = 2 / L2(3) + 1 / L2(5)
    ideal = 2 + 1 / L2(3) + 1 / L2(4)
    assert ndcg_at_k(RUN, QRELS, 5)["q"] == pytest.approx(dcg / ideal)
    # At k=2 the ideal is cut too: 2 + 1/log2(3); only d2 is in the top 2.
    assert ndcg_at_k(RUN, QRELS, 2)["q"] == pytest.approx((2 / L2(3)) / (2 + 1 / L2(3)))
    assert ndcg_at_k(RUN, QRELS, 1)["q"] == 0.0
    assert ndcg_at_k(RUN, QRELS, None)["q"] == pytest.approx(dcg / ideal)


def test_perfect_ranking_scores_one():
    run = {"q": {"d2": 3.0, "d4": 2.0, "d9": 1.0, "d3": 0.5}}
    assert ndcg_at_k(run, QRELS, 10)["q"] == pytest.approx(1.0)
    assert map_at_k(run, QRELS, 10)["q"] == pytest.approx(1.0)
    assert recall_at_k(run, QRELS, 3)["q"] == pytest.approx(1.0)


def test_recall_precision_mrr_map_by_hand():
    assert recall_at_k(RUN, QRELS, 1)["q"] == 0.0
    assert recall_at_k(RUN, QRELS, 2)["q"] == pytest.approx(1 / 3)
    assert recall_at_k(RUN, QRELS, 100)["q"] == pytest.approx(2 / 3)

    assert precision_at_k(RUN, QRELS, 2)["q"] == pytest.approx(1 / 2)
    assert precision_at_k(RUN, QRELS, 4)["q"] == pytest.approx(2 / 4)
    # Divides by k even though only 5 documents were retrieved (trec_eval P_10).
    assert precision_at_k(RUN, QRELS, 10)["q"] == pytest.approx(2 / 10)

    assert mrr_at_k(RUN, QRELS, 10)["q"] == pytest.approx(1 / 2)
    assert mrr_at_k(RUN, QRELS, 1)["q"] == 0.0

    # Hits at ranks 2 and 4: (1/2 + 2/4) / 3 relevant documents (the unretrieved d9 counts).
    assert map_at_k(RUN, QRELS, 100)["q"] == pytest.approx((1 / 2 + 2 / 4) / 3)
    assert map_at_k(RUN, QRELS, 3)["q"] == pytest.approx((1 / 2) / 3)
    assert map_at_k(RUN, QRELS, None)["q"] == pytest.approx((1 / 2 + 2 / 4) / 3)


def test_zero_judgments_are_not_relevant():
    run = {"q": {"d3": 1.0}}
    for fn in (ndcg_at_k, recall_at_k, mrr_at_k, map_at_k, precision_at_k):
        assert fn(run, QRELS, 10)["q"] == 0.0
    # A query whose judgments are all 0 scores 0 everywhere (and is still counted).
    only_zero = {"q": {"d1": 0}}
    assert evaluate({"q": {"d1": 1.0}}, only_zero, ["ndcg@10", "recall@10", "mrr@10", "map"]) == {
        "ndcg@10": 0.0,
        "recall@10": 0.0,
        "mrr@10": 0.0,
        "map": 0.0,
    }


def test_ties_are_broken_by_doc_id_descending():
    # All three tie; trec_eval order is c, b, a, so the relevant "a" sits at rank 3.
    run = {"q": {"a": 1.0, "b": 1.0, "c": 1.0}}
    qrels = {"q": {"a": 1}}
    assert mrr_at_k(run, qrels, 10)["q"] == pytest.approx(1 / 3)
    assert ndcg_at_k(run, qrels, 10)["q"] == pytest.approx(1 / L2(4))
    # The same regardless of dict insertion order.
    reordered = {"q": {"c": 1.0, "a": 1.0, "b": 1.0}}
    assert mrr_at_k(reordered, qrels, 10) == mrr_at_k(run, qrels, 10)


def test_queries_missing_from_run_score_zero_and_are_averaged_in():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    run = {"q1": {"a": 1.0}, "q_unjudged": {"x": 1.0}}
    assert ndcg_at_k(run, qrels, 10) == {"q1": 1.0, "q2": 0.0}
    assert evaluate(run, qrels, ["ndcg@10", "recall@100", "mrr@10"]) == {
        "ndcg@10": 0.5,
        "recall@100": 0.5,
        "mrr@10": 0.5,
    }


def test_ignore_identical_ids():
    run = {"q": {"q": 5.0, "a": 1.0}}
    qrels = {"q": {"a": 1}}
    assert mrr_at_k(run, qrels, 10)["q"] == 1.0
    assert mrr_at_k(run, qrels, 10, ignore_identical_ids=False)["q"] == 0.5
    assert evaluate(run, qrels, ["mrr@10"], ignore_identical_ids=False) == {"mrr@10": 0.5}


def test_inputs_are_not_mutated():
    run = {"q": {"q": 5.0, "a": 1.0, "b": 1.0}, "other": {"z": 1.0}}
    qrels = {"q": {"a": 1, "b": 0, "c": 2}, "missing": {"x": 1}}
    run_before, qrels_before = copy.deepcopy(run), copy.deepcopy(qrels)
    evaluate(run, qrels, ["ndcg@10", "recall@100", "mrr@10", "map@100", "p@5", "map"])
    for fn in (ndcg_at_k, recall_at_k, mrr_at_k, map_at_k, precision_at_k):
        fn(run, qrels, 3)
    assert run == run_before
    assert list(run["q"]) == list(run_before["q"])
    assert qrels == qrels_before


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("ndcg@10", ("ndcg", 10)),
        ("NDCG@10", ("ndcg", 10)),
        ("recall@100", ("recall", 100)),
        ("mrr@10", ("mrr", 10)),
        ("map@100", ("map", 100)),
        ("map", ("map", None)),
        ("p@10", ("precision", 10)),
        ("precision@5", ("precision", 5)),
        ("ndcg_cut_10", ("ndcg", 10)),
        ("ndcg", ("ndcg", None)),
    ],
)
def test_parse_metric(name, parsed):
    assert parse_metric(name) == parsed


@pytest.mark.parametrize("name", ["bleu@4", "ndcg@0", "ndcg@", "@10", "ndcg@ten", "", "f1"])
def test_unknown_metric_names_raise_value_error(name):
    with pytest.raises(ValueError):
        evaluate(RUN, QRELS, [name])


def test_bad_arguments():
    with pytest.raises(ValueError):
        ndcg_at_k(RUN, QRELS, 0)
    with pytest.raises(ValueError):
        recall_at_k(RUN, QRELS, -3)
    with pytest.raises(InvalidInput):
        evaluate(RUN, {})
    with pytest.raises(InvalidInput):
        mean_score({})


def test_evaluate_default_metrics_and_string_metric():
    assert set(evaluate(RUN, QRELS)) == {"ndcg@10", "recall@100", "mrr@10"}
    assert evaluate_per_query(RUN, QRELS, "mrr@10") == {"mrr@10": {"q": 0.5}}


# Agreement with ranx -------------------------------------------------------------------------


def _random_benchmark(seed: int, n_queries: int = 50, n_docs: int = 400):
    """Graded qrels (0-3, zeros kept), runs of 0-150 docs with distinct scores, one judged query
    absent from the run, one with only zero judgments, one run query without judgments."""
    rng = random.Random(seed)
    docs = [f"doc{i}" for i in range(n_docs)]
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    for q in range(n_queries):
        qid = f"q{q}"
        judged = rng.sample(docs, rng.randint(1, 12))
        qrels[qid] = {d: rng.choice([0, 1, 1, 2, 3]) for d in judged}
        retrieved = rng.sample(docs, rng.randint(0, 150))
        # Mix judged documents in so that scores are not all near zero.
        retrieved = list(dict.fromkeys(retrieved + [d for d in judged if rng.random() < 0.6]))
        scores = rng.sample(
            range(10**6), len(retrieved)
        )  # distinct: ranx breaks ties by dict order
        run[qid] = {d: s / 10**6 for d, s in zip(retrieved, scores, strict=True)}
    qrels["q0"] = {d: 0 for d in qrels["q0"]}
    del run["q1"]
    run["unjudged"] = {"doc1": 1.0}
    return run, qrels


RANX_METRICS = ["ndcg@10", "recall@100", "mrr@10", "map@100", "precision@10", "ndcg@3", "map"]


def _ranx_scores(run, qrels):
    ranx = pytest.importorskip("ranx")
    return ranx.evaluate(
        ranx.Qrels(copy.deepcopy(qrels)),
        ranx.Run(copy.deepcopy(run)),
        RANX_METRICS,
        make_comparable=True,
    )


@pytest.mark.slow  # ranx JIT-compiles with numba on first use (about a minute when the cache is cold)
@pytest.mark.filterwarnings("ignore::Warning")
def test_matches_ranx_on_random_run():
    run, qrels = _random_benchmark(seed=7)
    ours = evaluate(run, qrels, RANX_METRICS)
    theirs = _ranx_scores(run, qrels)
    for name in RANX_METRICS:
        assert ours[name] == pytest.approx(float(theirs[name]), abs=1e-6), name
    assert 0.05 < ours["ndcg@10"] < 0.95  # the comparison is not between two trivial scores


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::Warning")
def test_ties_match_ranx_once_the_tie_order_is_explicit():
    # ranx orders equal scores by dict order; ours by doc id descending. Re-scoring each query by
    # our order (strictly decreasing) must give ranx the same figures as our tied run.
    rng = random.Random(3)
    run, qrels = _random_benchmark(seed=11)
    tied = {q: {d: round(s * 5) / 5 for d, s in docs.items()} for q, docs in run.items()}
    tied = {q: dict(rng.sample(list(docs.items()), len(docs))) for q, docs in tied.items()}
    explicit = {
        q: {d: -float(r) for r, d in enumerate(rank_docs(docs))} for q, docs in tied.items()
    }
    ours = evaluate(tied, qrels, RANX_METRICS)
    theirs = _ranx_scores(explicit, qrels)
    for name in RANX_METRICS:
        assert ours[name] == pytest.approx(float(theirs[name]), abs=1e-6), name
