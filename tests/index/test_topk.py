"""index.topk.top_k: the one brute-force top-k of the repository."""

from __future__ import annotations

import numpy as np

from index.topk import top_k


def test_best_first_with_ties_by_id():
    scores = np.array([1.0, 3.0, 2.0, 3.0, 2.0])
    ids = np.array([50, 40, 30, 20, 10])
    assert top_k(scores, 3, ids).tolist() == [3, 1, 4]  # 3.0 (id 20), 3.0 (id 40), 2.0 (id 10)
    assert top_k(scores, 3).tolist() == [1, 3, 2]  # without ids, ties by position


def test_ties_at_the_cut_do_not_depend_on_position():
    scores = np.array([1.0, 1.0, 1.0, 1.0])
    ids = np.array([7, 3, 9, 1])
    assert top_k(scores, 2, ids).tolist() == [3, 1]
    assert top_k(scores[::-1].copy(), 2, ids[::-1].copy()).tolist() == [0, 2]


def test_fewer_items_than_k_and_empty():
    assert top_k(np.array([0.5, 2.0]), 10).tolist() == [1, 0]
    assert top_k(np.zeros(0), 3).tolist() == []
    assert top_k(np.array([1.0]), 0).tolist() == []


def test_rows_rank_independently():
    scores = np.array([[0.1, 0.9, 0.5], [0.7, 0.2, 0.7]])
    out = top_k(scores, 2, np.array([2, 1, 0]))
    assert out.shape == (2, 2)
    assert out.tolist() == [[1, 2], [2, 0]]
    assert top_k(scores, 5).shape == (2, 3)


def test_matches_a_full_sort():
    rng = np.random.default_rng(0)
    for _ in range(50):
        scores = rng.integers(0, 5, size=int(rng.integers(1, 60))).astype(np.float64)
        ids = rng.permutation(len(scores) * 3)[: len(scores)]
        k = int(rng.integers(1, 70))
        expected = np.lexsort((ids, -scores))[:k]
        np.testing.assert_array_equal(top_k(scores, k, ids), expected)
