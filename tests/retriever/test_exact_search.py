"""Exact cosine retrieval as a run, on hand-made vectors."""

from __future__ import annotations

import numpy as np
import pytest

from retriever.exact_search import dense_run


def test_dense_run_is_brute_force_cosine_top_k():
    q = np.array([[1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    d = np.array([[3.0, 0.1], [0.1, 1.0], [1.0, 1.0]], dtype=np.float32)
    run = dense_run(q, d, ["q1", "q2"], ["a", "b", "c"], k=2)
    assert set(run["q1"]) == {"a", "c"} and set(run["q2"]) == {"b", "c"}
    assert run["q1"]["a"] == pytest.approx(3.0 / np.hypot(3.0, 0.1))
    assert max(run["q2"], key=run["q2"].get) == "b"
    assert set(dense_run(q, d, ["q1", "q2"], ["a", "b", "c"], k=10)["q1"]) == {"a", "b", "c"}
