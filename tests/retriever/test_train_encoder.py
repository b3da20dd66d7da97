"""``attend train encoder`` on a toy BEIR split and a tiny random encoder: hard-negative mining,
the masked InfoNCE loss, resumable batch order, the loss falling, the saved directory loading,
resume from the checkpoint's step, and clear errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from toydata import TOY_CORPUS, TOY_QUERIES, build_tiny_encoder, write_beir

from attend.cli import main
from common.errors import InvalidInput
from common.training import load_run_state
from eval.metrics import evaluate
from retriever import train_encoder as te
from retriever.embedder import SentenceEncoder
from retriever.train_encoder import (
    EncoderTrainConfig,
    load_pairs,
    mine_hard_negatives,
    train_encoder,
)

QUERIES = {
    **TOY_QUERIES,
    "q5": "green pigment that absorbs light",
    "q6": "magma rises through the crust",
    "q7": "dynamic typing and garbage collection",
    "q8": "espresso and croissants in Paris",
}
QRELS = {
    "q1": {"d1": 2, "d2": 1}, "q2": {"d3": 1}, "q3": {"d5": 1, "d6": 1}, "q4": {"d4": 1},
    "q5": {"d2": 1}, "q6": {"d3": 1}, "q7": {"d5": 1}, "q8": {"d7": 1, "d8": 0},
}
VAL_FRACTION = 0.15  # holds out q1 and q5 (crc32 of the id)


@pytest.fixture(scope="module")
def train_beir(tmp_path_factory) -> Path:
    return write_beir(tmp_path_factory.mktemp("train_beir"), TOY_CORPUS, QUERIES, QRELS, split="train")


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory, minilm_dir) -> Path:
    return build_tiny_encoder(tmp_path_factory.mktemp("tiny_base"), minilm_dir)


def _cfg(data: Path, base: Path, out: Path, **kw) -> EncoderTrainConfig:
    opts = dict(data=str(data), base=str(base), out=str(out), batch_size=4, lr=1e-3, steps=30, threads=1,
                val_fraction=VAL_FRACTION, save_every=10, encode_batch_size=8, max_seq_len=32)
    return EncoderTrainConfig(**{**opts, **kw})


def test_load_pairs_holds_out_whole_queries_and_skips_zero_judgments(train_beir):
    data = load_pairs(train_beir, "train", VAL_FRACTION)
    assert sorted(data.val_qids) == ["q1", "q5"]
    assert {q for q, _ in data.train_pairs}.isdisjoint(data.val_qids)
    assert ("q8", "d8") not in data.train_pairs and ("q8", "d7") in data.train_pairs
    assert len(data.train_pairs) == 7


def test_mining_skips_positives_and_drops_near_positives():
    doc_ids = ["a", "b", "c", "d"]
    texts = ["volcano lava magma", "volcano ash", "volcano eruption lava", "python code"]
    q_vecs = np.array([[1.0, 0.0]], dtype=np.float32)
    # cosines to the query: a (positive) 0.8, b 0.79 (> 0.95 x 0.8: dropped), c 0.5, d 0.1
    d_vecs = np.array([[0.8, 0.6], [0.79, 0.613], [0.5, 0.866], [0.1, 0.995]], dtype=np.float32)
    out = mine_hard_negatives({"q": "volcano lava"}, {"q": {"a"}}, doc_ids, texts, depth=4, margin=0.95,
                              query_vecs=q_vecs, doc_vecs=d_vecs)
    assert "a" not in out["q"] and "b" not in out["q"]
    assert out["q"][0] == "c" and set(out["q"]) == {"c", "d"}
    bm25_only = mine_hard_negatives({"q": "volcano lava"}, {"q": {"a"}}, doc_ids, texts, depth=4)
    assert "a" not in bm25_only["q"] and "d" not in bm25_only["q"]  # BM25 never matches "python code"


def test_training_lowers_the_loss_and_saves_a_loadable_encoder(train_beir, tiny_base, tmp_path):
    out = tmp_path / "run"
    path = train_encoder(_cfg(train_beir, tiny_base, out, steps=24, hard_negatives=1), score_run=evaluate)
    state = load_run_state(out)
    losses = state["losses"]
    assert state["step"] == 24 and len(losses) == 24
    assert np.mean(losses[-4:]) < np.mean(losses[:4])
    history = json.loads((out / "history.json").read_text())
    assert history[0]["step"] == 0 and {"ndcg@10", "recall@100", "mrr@10"} <= set(history[0])
    assert history[-1]["step"] == 24
    assert json.loads((out / "negatives.json").read_text())["negatives"]
    enc = SentenceEncoder.from_pretrained(path, device="cpu")
    vecs = enc.encode(["volcano lava", "plants"])
    assert vecs.shape == (2, 32) and np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert enc.max_length == 64  # the base's inference length, not the training --max-seq-len
    assert (out / "best" / "model.safetensors").is_file() and "Validation" in (path / "README.md").read_text()


def test_resume_continues_from_the_checkpoint_step(train_beir, tiny_base, tmp_path, monkeypatch):
    out = tmp_path / "run"
    train_encoder(_cfg(train_beir, tiny_base, out, steps=6, max_minutes=0), score_run=evaluate)  # stops after one step
    assert load_run_state(out)["step"] == 1
    monkeypatch.setattr(te, "mine_hard_negatives", lambda *a, **k: pytest.fail("negatives were mined again"))
    train_encoder(_cfg(train_beir, tiny_base, out, steps=6), score_run=evaluate)
    state = load_run_state(out)
    assert state["step"] == 6 and len(state["losses"]) == 6
    assert [r["step"] for r in state["history"]].count(0) == 1  # the base model was validated once


def test_cli_trains_and_reports_the_model_dir(train_beir, tiny_base, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["train", "encoder", "--data", str(train_beir), "--base", str(tiny_base), "--out", str(out),
               "--steps", "2", "--batch-size", "4", "--threads", "1", "--max-seq-len", "32",
               "--val-fraction", str(VAL_FRACTION), "--hard-negatives", "0", "--precision", "bf16"])
    assert rc == 0
    assert f"encoder saved to {out / 'model'}" in capsys.readouterr().out
    assert SentenceEncoder.from_pretrained(out / "model", device="cpu").dim == 32


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing_dir", "not found"),
        ("missing_split", "split 'train' not found"),
        ("no_pairs", "no training pairs"),
    ],
)
def test_cli_bad_data_is_a_clear_error(setup, message, tiny_base, tmp_path, capsys):
    data = tmp_path / "beir"
    if setup == "missing_split":
        write_beir(data, split="test")
    elif setup == "no_pairs":
        write_beir(data, qrels={"q1": {"d1": 0}, "q2": {"nope": 1}}, split="train")
    rc = main(["train", "encoder", "--data", str(data), "--base", str(tiny_base), "--out", str(tmp_path / "o"), "--threads", "1"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "attend: error:" in err and message in err and "Traceback" not in err


def test_cli_unknown_precision_is_a_usage_error(train_beir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "encoder", "--data", str(train_beir), "--out", str(tmp_path), "--precision", "fp16"])
    assert exc.value.code == 2 and "invalid choice: 'fp16'" in capsys.readouterr().err
    with pytest.raises(InvalidInput, match="precision"):
        train_encoder(_cfg(train_beir, tmp_path, tmp_path / "o", precision="fp16"))


def test_bench_retrieval_embeds_with_the_given_encoder_even_in_a_reused_data_dir(toy_beir, tiny_base, train_beir, tmp_path):
    from eval.bench_retrieval import RetrievalBenchConfig, run_benchmark

    tuned = train_encoder(_cfg(train_beir, tiny_base, tmp_path / "run", steps=2, hard_negatives=0, val_fraction=0.0))
    common = dict(data=str(toy_beir), modes=("dense",), data_dir=str(tmp_path / "bench"), chunk_tokens=32, chunk_overlap=4)
    first = run_benchmark(RetrievalBenchConfig(encoder=str(tiny_base), **common))
    again = run_benchmark(RetrievalBenchConfig(encoder=str(tiny_base), **common))
    other = run_benchmark(RetrievalBenchConfig(encoder=str(tuned), **common))
    assert not first["index_reused"]
    assert again["index_reused"]  # same encoder: the indexed collection is reused
    assert not other["index_reused"] and other["encoder"] == str(tuned)  # another encoder: indexed again
    assert first["modes"]["dense"]["ndcg@10"] == again["modes"]["dense"]["ndcg@10"]
