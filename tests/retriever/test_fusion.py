"""Fusion of result lists: hand-computed RRF and convex-combination scores, ties, bad input."""

from __future__ import annotations

import copy
import math

import pytest

from common.errors import InvalidInput
from retriever.fusion import convex_combination, fuse, reciprocal_rank_fusion

SPARSE = [(1, 0.9), (2, 0.8), (3, 0.7)]
DENSE = [(3, 5.0), (1, 4.0)]


def _approx(pairs):
    return [(i, pytest.approx(s)) for i, s in pairs]


def test_rrf_by_hand():
    fused = reciprocal_rank_fusion([SPARSE, DENSE], k=60)
    assert fused == _approx([(1, 1 / 61 + 1 / 62), (3, 1 / 63 + 1 / 61), (2, 1 / 62)])
    assert [i for i, _ in reciprocal_rank_fusion([SPARSE, DENSE], k=0)] == [1, 3, 2]
    assert reciprocal_rank_fusion([SPARSE, DENSE], k=0)[0][1] == pytest.approx(1 + 1 / 2)


def test_rrf_weights():
    fused = reciprocal_rank_fusion([SPARSE, DENSE], weights=[1.0, 3.0])
    # 3: 1/63 + 3/61 = 0.0651; 1: 1/61 + 3/62 = 0.0648; 2: 1/62
    assert fused == _approx([(3, 1 / 63 + 3 / 61), (1, 1 / 61 + 3 / 62), (2, 1 / 62)])
    # A zero weight keeps the list's documents but adds no score.
    assert reciprocal_rank_fusion([SPARSE, [(9, 1.0)]], weights=[1, 0])[-1] == (9, 0.0)


def test_rrf_position_is_rank_and_mappings_are_sorted_by_score():
    # Scores inside a sequence are ignored: the position is the rank.
    assert reciprocal_rank_fusion([[(5, 0.1), (6, 0.9)]]) == _approx([(5, 1 / 61), (6, 1 / 62)])
    # A mapping is ranked by score, best first.
    assert reciprocal_rank_fusion([{5: 0.1, 6: 0.9}]) == _approx([(6, 1 / 61), (5, 1 / 62)])


def test_rrf_duplicates_count_once_at_their_best_rank():
    fused = reciprocal_rank_fusion([[(1, 0.9), (1, 0.8), (2, 0.7)]])
    assert fused == _approx([(1, 1 / 61), (2, 1 / 62)])


def test_rrf_ties_keep_first_seen_order():
    assert [i for i, _ in reciprocal_rank_fusion([[(1, 1.0)], [(2, 1.0)]])] == [1, 2]
    assert [i for i, _ in reciprocal_rank_fusion([[(2, 1.0)], [(1, 1.0)]])] == [2, 1]
    # Non-orderable ids still fuse deterministically.
    assert [i for i, _ in reciprocal_rank_fusion([[("a", 1.0)], [(7, 1.0)]])] == ["a", 7]


def test_rrf_empty_and_limit():
    assert reciprocal_rank_fusion([]) == []
    assert reciprocal_rank_fusion([[], {}]) == []
    assert reciprocal_rank_fusion([[], [(4, 0.2)]]) == _approx([(4, 1 / 61)])
    assert [i for i, _ in reciprocal_rank_fusion([SPARSE, DENSE], limit=2)] == [1, 3]
    assert reciprocal_rank_fusion([SPARSE], limit=0) == []


def test_convex_minmax_by_hand():
    a = {1: 10.0, 2: 5.0, 3: 0.0}  # -> 1, 0.5, 0
    b = {2: 3.0, 4: 1.0}  # -> 1, 0; documents missing from b get 0
    fused = convex_combination([a, b], weights=[0.7, 0.3])
    assert fused == _approx([(1, 0.7), (2, 0.35 + 0.3), (3, 0.0), (4, 0.0)])
    assert fused == fuse("convex", [a, b], weights=[0.7, 0.3])


def test_convex_zscore_and_none_by_hand():
    a = {1: 10.0, 2: 5.0, 3: 0.0}  # mean 5, population std sqrt(50/3)
    b = {2: 3.0, 4: 1.0}  # mean 2, std 1
    z = 5 / math.sqrt(50 / 3)
    fused = convex_combination([a, b], weights=[1, 1], normalization="zscore")
    # Missing documents get the list's lowest z-score (-z for a, -1 for b).
    assert fused == _approx([(2, 0.0 + 1.0), (1, z - 1.0), (3, -z - 1.0), (4, -z - 1.0)])
    raw = convex_combination([a, b], normalization="none")
    assert raw == _approx([(1, 10.0 + 1.0), (2, 5.0 + 3.0), (3, 0.0 + 1.0), (4, 0.0 + 1.0)])


def test_convex_constant_list_and_sequences_with_duplicates():
    # One document (or all tied) normalises to 1 under minmax; the missing doc 8 gets 0.
    fused = convex_combination([{7: 2.0}, [(8, 1.0), (7, 0.0), (8, 0.5)]])
    assert fused == _approx([(7, 1.0), (8, 1.0)])
    assert convex_combination([[(1, 3.0), (2, 3.0)]], normalization="zscore") == [
        (1, 0.0),
        (2, 0.0),
    ]


def test_convex_empty_and_limit():
    assert convex_combination([]) == []
    assert convex_combination([[], []], weights=[0.5, 0.5]) == []
    assert convex_combination([[], [(1, 2.0), (2, 1.0)]], limit=1) == [(1, pytest.approx(1.0))]


def test_inputs_are_not_mutated():
    lists = [list(SPARSE), dict(DENSE), [(1, 0.5), (1, 0.4)]]
    before = copy.deepcopy(lists)
    reciprocal_rank_fusion(lists, weights=[1, 2, 3])
    for norm in ("minmax", "zscore", "none"):
        convex_combination(lists, weights=[1, 2, 3], normalization=norm)
    assert lists == before


def test_fuse_selector():
    assert fuse("rrf", [SPARSE, DENSE], k=10) == reciprocal_rank_fusion([SPARSE, DENSE], k=10)
    assert fuse("RRF", [SPARSE]) == fuse("reciprocal_rank_fusion", [SPARSE])
    assert fuse("convex_combination", [SPARSE], limit=1) == convex_combination([SPARSE], limit=1)
    with pytest.raises(ValueError, match="borda"):
        fuse("borda", [SPARSE])


@pytest.mark.parametrize(
    "call",
    [
        lambda: reciprocal_rank_fusion([SPARSE, DENSE], weights=[1.0]),
        lambda: reciprocal_rank_fusion([SPARSE], weights=[-1.0]),
        lambda: reciprocal_rank_fusion([SPARSE], weights=[float("nan")]),
        lambda: reciprocal_rank_fusion([SPARSE], k=-1),
        lambda: reciprocal_rank_fusion([SPARSE], limit=-1),
        lambda: reciprocal_rank_fusion([[(1, 0.5, "extra")]]),
        lambda: reciprocal_rank_fusion([{1: float("nan")}]),
        lambda: reciprocal_rank_fusion(["abc"]),
        lambda: convex_combination([SPARSE], normalization="l2"),
        lambda: convex_combination([[], []], normalization="l2"),
        lambda: convex_combination([{1: float("inf"), 2: 0.0}]),
        lambda: convex_combination([SPARSE, DENSE], weights=[1.0, 2.0, 3.0]),
    ],
)
def test_bad_input_raises_value_error(call):
    with pytest.raises(InvalidInput):
        call()
