"""TREC run files: a round trip and clear errors."""

from __future__ import annotations

import json

import pytest

from common.errors import InvalidInput, NotFound
from eval.trec_run import read_run, write_run


def test_run_round_trip_in_trec_format(tmp_path):
    run = {"q2": {"b": 0.5, "a": 0.5, "c": 2.0}, "q1": {"x": -1.25}}
    before = json.dumps(run)
    path = write_run(run, tmp_path / "runs" / "bm25.trec", tag="bm25")
    assert json.dumps(run) == before
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines == [
        "q1 Q0 x 1 -1.25 bm25",
        "q2 Q0 c 1 2.0 bm25",
        "q2 Q0 b 2 0.5 bm25",
        "q2 Q0 a 3 0.5 bm25",
    ]
    assert read_run(path) == run
    write_run(run, path, depth=1)
    assert read_run(path) == {"q1": {"x": -1.25}, "q2": {"c": 2.0}}


def test_run_errors(tmp_path):
    with pytest.raises(InvalidInput):
        write_run({"q 1": {"a": 1.0}}, tmp_path / "r.trec")
    assert not (tmp_path / "r.trec").exists()
    with pytest.raises(NotFound):
        read_run(tmp_path / "absent.trec")
    bad = tmp_path / "bad.trec"
    bad.write_text("q1 Q0 a 1 0.5 t\nq1 Q0 a 2 0.4 t\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match="bad.trec:2"):
        read_run(bad)
    bad.write_text("q1 Q0 a 1 high t\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match="bad.trec:1"):
        read_run(bad)
