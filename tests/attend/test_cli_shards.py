"""``attend bench retrieval --shards`` and ``attend collections reshard``: a sharded collection
gives the single index's figures."""

from __future__ import annotations

import json
import os

import pytest

from attend.cli import main
from common.settings import get_settings


@pytest.fixture
def env(tmp_path, tiny_qa_dir, monkeypatch):
    for key in list(os.environ):
        if key.startswith("ATTEND_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("ATTEND_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ATTEND_GENERATOR", str(tiny_qa_dir))
    monkeypatch.setenv("ATTEND_SHARD_BACKEND", "local")
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_bench_retrieval_sharded_rows_equal_the_single_index(env, toy_beir, tiny_reranker_dir, capsys):
    out = env / "bench.json"
    encoder = tiny_reranker_dir.parent / "enc"  # a tiny encoder checkpoint
    assert main(["bench", "retrieval", "--data", str(toy_beir), "--encoder", str(encoder), "--chunk-tokens", "32",
                 "--chunk-overlap", "4", "--shards", "1,2,3", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "hybrid /3 shards" in printed and "index MiB per shard" in printed
    result = json.loads(out.read_text())
    assert len(result["rows"]) == 3 * 4
    for row in result["rows"][3:]:
        base = result["modes"][row["mode"].split(" ")[0]]
        for key in ("ndcg@10", "recall@100", "mrr@10"):
            assert row[key] == base[key], row
    three = result["sharded"]["3"]
    assert sum(three["chunks_per_shard"]) == result["chunks"] and len(three["bytes_per_shard"]) == 3
    assert all((b > 0) == (c > 0) for b, c in zip(three["bytes_per_shard"], three["chunks_per_shard"], strict=True))


def test_collections_reshard(env, toy_beir, capsys):
    assert main(["collections", "create", "toy"]) == 0
    assert main(["index", str(toy_beir / "corpus.jsonl"), "-c", "toy", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["search", "-c", "toy", "volcano lava", "--json"]) == 0
    before = [h["doc_id"] for h in json.loads(capsys.readouterr().out)["hits"]]
    assert main(["collections", "reshard", "toy", "3"]) == 0
    assert "3 shards" in capsys.readouterr().out
    assert main(["collections", "show", "toy"]) == 0
    assert '"shards": 3' in capsys.readouterr().out
    assert main(["search", "-c", "toy", "volcano lava", "--json"]) == 0
    assert [h["doc_id"] for h in json.loads(capsys.readouterr().out)["hits"]] == before
    assert main(["collections", "reshard", "toy", "none"]) == 0
    assert "one index" in capsys.readouterr().out
    assert main(["collections", "reshard", "toy", "0"]) == 2
    assert "shards" in capsys.readouterr().err
