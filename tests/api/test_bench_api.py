"""The pieces of ``attend bench api`` that need no server (the tool itself is run by hand:
``attend bench api --seconds 5 --chunks 500``)."""

from __future__ import annotations

import pytest

from attend.cli import build_parser
from eval.bench_api import percentiles, synthetic_documents, synthetic_queries


def test_percentiles():
    assert percentiles([]) == {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    p = percentiles([float(i) for i in range(1, 101)])
    assert p["p50_ms"] == pytest.approx(50.5) and p["p95_ms"] == pytest.approx(95.05) and p["p99_ms"] == pytest.approx(99.01)


def test_synthetic_data_is_reproducible():
    a, b = list(synthetic_documents(5, seed=3)), list(synthetic_documents(5, seed=3))
    assert a == b and len({d["id"] for d in a}) == 5 and all(d["text"] for d in a)
    assert [d["id"] for d in synthetic_documents(2, start=10)] == ["syn-10", "syn-11"]
    assert len(synthetic_queries(7)) == 7


def test_cli_registered():
    args = build_parser().parse_args(["bench", "api", "--seconds", "5", "--chunks", "500", "--json", "x.json"])
    assert (args.seconds, args.clients, args.chunks, args.json) == (5.0, 16, 500, "x.json")
