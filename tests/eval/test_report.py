"""Report helpers: markdown and console tables, atomic JSON writes."""

from __future__ import annotations

import json
import math
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from eval.report import console_table, markdown_table, write_json

ROWS = [
    {"model": "bm25", "ndcg@10": 0.66471, "queries": 300},
    {"model": "dense|mini", "ndcg@10": 0.6455, "queries": 300, "note": "cpu"},
]


def test_markdown_table():
    assert markdown_table(ROWS).splitlines() == [
        "| model | ndcg@10 | queries | note |",
        "| --- | ---: | ---: | --- |",
        "| bm25 | 0.665 | 300 |  |",
        "| dense\\|mini | 0.645 | 300 | cpu |",
    ]


def test_markdown_table_columns_and_floatfmt():
    out = markdown_table(ROWS, columns=["ndcg@10", "model"], floatfmt=".1%")
    assert out.splitlines()[0] == "| ndcg@10 | model |"
    assert out.splitlines()[2] == "| 66.5% | bm25 |"
    assert markdown_table([]) == ""


def test_console_table_aligns_columns():
    out = console_table(ROWS, columns=["model", "ndcg@10", "queries"])
    assert out.splitlines() == [
        "model       ndcg@10  queries",
        "----------  -------  -------",
        "bm25          0.665      300",
        "dense|mini    0.645      300",
    ]


def test_cells_none_nan_bool_and_numpy():
    rows = [{"a": None, "b": float("nan"), "c": True, "d": np.float32(0.5), "e": np.int64(3)}]
    assert markdown_table(rows).splitlines()[2] == "|  | nan | True | 0.500 | 3 |"


@dataclass
class _Result:
    name: str
    score: float


def test_write_json_atomic_creates_parents(tmp_path):
    path = tmp_path / "results" / "scifact" / "bm25.json"
    obj = {
        "scores": {"ndcg@10": np.float64(0.665)},
        "ids": np.arange(3),
        "path": Path("/x"),
        "result": _Result("bm25", 0.5),
        "name": "Café",
    }
    assert write_json(obj, path) == path
    text = path.read_text(encoding="utf-8")
    assert text.endswith("}\n") and '\n  "scores": {\n    "ndcg@10": 0.665' in text
    assert "Café" in text
    assert json.loads(text)["ids"] == [0, 1, 2]
    assert json.loads(text)["result"] == {"name": "bm25", "score": 0.5}
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["bm25.json"]  # no temporary left over


def test_write_json_failure_keeps_old_file(tmp_path):
    path = tmp_path / "out.json"
    write_json({"ok": 1}, path)
    with pytest.raises(TypeError):
        write_json({"bad": object()}, path)
    assert json.loads(path.read_text(encoding="utf-8")) == {"ok": 1}
    assert math.isclose(json.loads(write_json([1.5], path).read_text())[0], 1.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
