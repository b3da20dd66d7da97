"""The encoder benchmark and the ``attend embed`` / ``attend bench encoder`` commands on the toy corpus."""

from __future__ import annotations

import json

import numpy as np
import pytest

from attend.cli import main
from eval.bench_encoder import (
    EncoderBenchConfig,
    cosines,
    format_report,
    run_encoder_bench,
)

pytest.importorskip("sentence_transformers")


def test_cosines_row_wise():
    a = np.array([[1.0, 0.0], [1.0, 1.0]])
    np.testing.assert_allclose(cosines(a, np.array([[2.0, 0.0], [-1.0, -1.0]])), [1.0, -1.0])


def test_bench_on_toy_corpus_reports_speed_agreement_and_ndcg(toy_beir):
    result = run_encoder_bench(EncoderBenchConfig(data=toy_beir, runs=2, batch_size=4, chunk_size=3, precisions=("fp32", "bf16")))
    assert result["docs"] == 8 and result["precision"] == "fp32"
    for key in ("ours_docs_per_s", "reference_docs_per_s", "speedup"):
        assert result[key] > 0
    assert len(result["ours_seconds"]) == 2
    assert result["min_cosine"] >= 0.9999 and result["mean_cosine"] >= result["min_cosine"]
    assert result["by_precision"]["bf16"]["min_cosine"] >= 0.999
    assert abs(result["ndcg@10_ours"] - result["ndcg@10_reference"]) <= 0.002
    assert result["ndcg@10_reference"] > 0.5  # the toy queries are easy for MiniLM
    assert "ours (bf16)" in format_report(result)


def test_limit_embeds_a_prefix_and_skips_ndcg(toy_beir):
    result = run_encoder_bench(EncoderBenchConfig(data=toy_beir, limit=3, runs=1, precisions=("fp32",)))
    assert result["docs"] == 3
    assert "ndcg@10_ours" not in result and "ndcg@10_reference" not in result


def test_bench_command_writes_json(toy_beir, tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(["bench", "encoder", "--data", str(toy_beir), "--limit", "4", "--runs", "1", "--precision", "fp32", "--json", str(out)])
    assert rc == 0
    figures = json.loads(out.read_text())
    assert {"ours_docs_per_s", "reference_docs_per_s", "speedup", "min_cosine", "mean_cosine"} <= set(figures)
    assert "sentence-transformers" in capsys.readouterr().out


def test_embed_command_prints_summary_and_full_vectors(capsys):
    assert main(["embed", "hello world", "", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and "dim=384" in lines[0] and "norm=1.0000" in lines[1]
    assert main(["embed", "hello world", "--full", "--device", "cpu"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data) == 1 and len(data[0]["vector"]) == 384
    assert np.linalg.norm(data[0]["vector"]) == pytest.approx(1.0, abs=1e-5)


def test_bench_rejects_bad_options(toy_beir):
    from common.errors import InvalidInput

    with pytest.raises(InvalidInput):
        run_encoder_bench(EncoderBenchConfig(data=toy_beir, runs=0))
    with pytest.raises(InvalidInput):
        run_encoder_bench(EncoderBenchConfig(data=toy_beir, precisions=("fp16",)))
