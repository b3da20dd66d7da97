"""``--rerank`` on the CLI: ``attend search``, ``ask`` and ``bench retrieval``; a collection's
default rerank and ``--no-rerank``."""

from __future__ import annotations

import json
import os

import pytest

from attend.cli import main
from common.settings import get_settings

QUERY = "why does a volcano erupt"


@pytest.fixture
def env(tmp_path, tiny_qa_dir, monkeypatch):
    for key in list(os.environ):
        if key.startswith("ATTEND_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("ATTEND_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ATTEND_GENERATOR", str(tiny_qa_dir))
    monkeypatch.chdir(tmp_path)  # no stray .env
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in {
        "volcano.txt": "A volcano erupts when magma rises through the crust.",
        "plates.txt": "The crust is broken into plates that drift on the mantle.",
        "tea.txt": "Green tea is steamed; black tea is oxidised before drying.",
        "bread.txt": "Yeast makes bread rise by releasing carbon dioxide.",
    }.items():
        (docs / name).write_text(text)
    get_settings.cache_clear()
    assert main(["index", str(docs), "--collection", "kb", "--create", "--no-progress"]) == 0
    yield tmp_path
    get_settings.cache_clear()


def _json(capsys):
    return json.loads(capsys.readouterr().out)


def test_search_and_ask_with_rerank(env, capsys, tiny_reranker_dir):
    capsys.readouterr()
    assert main(["search", "-c", "kb", QUERY, "--json"]) == 0
    plain = _json(capsys)["hits"]
    assert all("rerank_score" not in h for h in plain)
    # A local user may name any reranker directory.
    assert main(["search", "-c", "kb", QUERY, "--rerank", str(tiny_reranker_dir), "--rerank-depth", "3", "--json"]) == 0
    hits = _json(capsys)["hits"]
    assert [("rerank_score" in h) for h in hits] == [True] * 3 + [False] * (len(hits) - 3)
    scores = [h["rerank_score"] for h in hits[:3]]
    assert scores == sorted(scores, reverse=True)
    assert main(["search", "-c", "kb", QUERY, "--rerank", str(tiny_reranker_dir)]) == 0
    assert "rerank=" in capsys.readouterr().out
    assert main(["ask", "-c", "kb", QUERY, "--rerank", str(tiny_reranker_dir), "--json"]) == 0
    assert _json(capsys)["timings_ms"]["retrieval.rerank_ms"] > 0
    assert main(["search", "-c", "kb", QUERY, "--rerank-depth", "3"]) == 2
    assert "--rerank-depth and --rerank-weight need --rerank" in capsys.readouterr().err
    assert main(["search", "-c", "kb", QUERY, "--rerank-weight", "0.5"]) == 2
    assert "need --rerank MODEL" in capsys.readouterr().err
    assert main(["search", "-c", "kb", QUERY, "--rerank", "rr", "--no-rerank"]) == 2
    assert main(["search", "-c", "kb", QUERY, "--rerank", str(env / "missing")]) == 2
    with pytest.raises(SystemExit):
        main(["search", "-c", "kb", QUERY, "--rerank", "rr", "--rerank-depth", "0"])


def test_collection_default_rerank_and_no_rerank(env, capsys, tiny_reranker_dir, monkeypatch):
    monkeypatch.setenv("ATTEND_RERANKER", str(tiny_reranker_dir))
    get_settings.cache_clear()
    assert main(["collections", "create", "ranked", "--setting", 'rerank={"model": "rr", "depth": 2}']) == 0
    assert main(["collections", "create", "bad", "--setting", 'rerank={"model": "nope"}']) == 2
    assert main(["index", str(env / "docs"), "--collection", "ranked", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["search", "-c", "ranked", QUERY, "--json"]) == 0
    assert sum("rerank_score" in h for h in _json(capsys)["hits"]) == 2
    assert main(["search", "-c", "ranked", QUERY, "--no-rerank", "--json"]) == 0
    assert all("rerank_score" not in h for h in _json(capsys)["hits"])


def test_bench_retrieval_adds_a_rerank_row(toy_beir, tiny_reranker_dir, tmp_path, capsys):
    out = tmp_path / "bench.json"
    encoder = tiny_reranker_dir.parent / "enc"  # the tiny encoder the reranker started from
    args = ["bench", "retrieval", "--data", str(toy_beir), "--modes", "bm25,hybrid", "--encoder", str(encoder),
            "--chunk-tokens", "32", "--chunk-overlap", "4"]
    assert main([*args, "--rerank", str(tiny_reranker_dir), "--rerank-depth", "5", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "hybrid+rerank" in printed and "rerank_p99_ms" in printed
    result = json.loads(out.read_text())
    assert [r["mode"] for r in result["rows"]] == ["bm25", "hybrid", "hybrid+rerank"]
    row = result["modes"]["hybrid+rerank"]
    assert {"ndcg@10", "recall@100", "mrr@10", "qps", "latency_p50_ms", "rerank_p50_ms", "rerank_p99_ms"} <= set(row)
    assert 0 < row["rerank_p50_ms"] <= row["rerank_p99_ms"]
    assert set(result["modes"]["hybrid"]) == {"mode", "ndcg@10", "recall@100", "mrr@10", "qps", "latency_p50_ms",
                                                 "latency_p99_ms"}
    assert result["reranker"] == str(tiny_reranker_dir) and result["rerank_depth"] == 5
    # Without --rerank: the rows and keys of before.
    assert main([*args, "--json", str(out)]) == 0
    plain = json.loads(out.read_text())
    assert [r["mode"] for r in plain["rows"]] == ["bm25", "hybrid"]
    assert "reranker" not in plain and "rerank_depth" not in plain
    assert plain["modes"]["hybrid"]["ndcg@10"] == result["modes"]["hybrid"]["ndcg@10"]


def test_bench_retrieval_rerank_weights_reblend_one_scoring(toy_beir, tiny_reranker_dir, tmp_path, capsys):
    out = tmp_path / "bench.json"
    encoder = tiny_reranker_dir.parent / "enc"
    args = ["bench", "retrieval", "--data", str(toy_beir), "--modes", "hybrid", "--encoder", str(encoder),
            "--chunk-tokens", "32", "--chunk-overlap", "4", "--rerank", str(tiny_reranker_dir), "--rerank-depth", "8"]
    assert main([*args, "--rerank-weights", "1,0,0.5", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["mode"] for r in result["rows"]] == ["hybrid", "hybrid+rerank", "hybrid+rerank w=0", "hybrid+rerank w=0.5"]
    modes = result["modes"]
    # weight 0 keeps the fused order: the hybrid row's figures, from the reranked results
    assert all(modes["hybrid+rerank w=0"][m] == modes["hybrid"][m] for m in ("ndcg@10", "recall@100", "mrr@10"))
    assert "latency_p50_ms" not in modes["hybrid+rerank w=0.5"]  # not timed: the first row's scores re-blended
    assert result["rerank_weights"] == [1.0, 0.0, 0.5]
    # timed at weight 0 and re-blended at 1: the same figures the other way round
    assert main([*args, "--rerank-weights", "0,1", "--json", str(out)]) == 0
    again = json.loads(out.read_text())["modes"]
    for m in ("ndcg@10", "recall@100", "mrr@10"):
        assert again["hybrid+rerank w=0"][m] == modes["hybrid"][m]
        assert again["hybrid+rerank w=1"][m] == modes["hybrid+rerank"][m]


def test_bench_retrieval_takes_the_rerankers_own_weight_by_default(toy_beir, tiny_reranker_dir, tmp_path):
    import shutil

    own = tmp_path / "rr-half"
    shutil.copytree(tiny_reranker_dir, own)
    cfg = json.loads((own / "config.json").read_text())
    cfg["attend_reranker"]["weight"] = 0.5
    (own / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "bench.json"
    encoder = tiny_reranker_dir.parent / "enc"
    args = ["bench", "retrieval", "--data", str(toy_beir), "--modes", "hybrid", "--encoder", str(encoder),
            "--chunk-tokens", "32", "--chunk-overlap", "4", "--rerank-depth", "8", "--json", str(out)]
    assert main([*args, "--rerank", str(own)]) == 0
    result = json.loads(out.read_text())
    assert [r["mode"] for r in result["rows"]] == ["hybrid", "hybrid+rerank w=0.5"] and result["rerank_weights"] == [0.5]
    # the same figures as asking for 0.5 from the reranker without a weight of its own
    assert main([*args, "--rerank", str(tiny_reranker_dir), "--rerank-weights", "0.5"]) == 0
    explicit = json.loads(out.read_text())["modes"]["hybrid+rerank w=0.5"]
    for m in ("ndcg@10", "recall@100", "mrr@10"):
        assert explicit[m] == result["modes"]["hybrid+rerank w=0.5"][m]
