"""``attend train reranker`` on a toy BEIR split and a tiny random encoder: hybrid candidates, the
listwise loss, the loss falling, the saved reranker loading, resume, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from toydata import TOY_CORPUS, TOY_QUERIES, build_tiny_encoder, write_beir

from attend.cli import main
from common.errors import InvalidInput
from common.training import load_run_state
from eval.metrics import evaluate
from retriever.cross_encoder import load_reranker
from retriever.train_reranker import (
    RerankerTrainConfig,
    best_weight,
    candidate_lists,
    group_loss,
    train_reranker,
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


@pytest.fixture(scope="module")
def train_beir(tmp_path_factory) -> Path:
    return write_beir(tmp_path_factory.mktemp("rr_beir"), TOY_CORPUS, QUERIES, QRELS, split="train")


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory, minilm_dir) -> Path:
    return build_tiny_encoder(tmp_path_factory.mktemp("rr_base"), minilm_dir)


def _cfg(data: Path, base: Path, out: Path, **kw) -> RerankerTrainConfig:
    opts = dict(data=str(data), base=str(base), out=str(out), batch_size=2, negatives=3, lr=1e-3, steps=20, threads=1,
                val_fraction=0.15, save_every=10, encode_batch_size=8, max_seq_len=48, max_query_tokens=8, val_depth=4)
    return RerankerTrainConfig(**{**opts, **kw})


def test_candidates_interleave_both_sides_once():
    texts = ["volcano lava magma", "volcano ash", "python code", "lava lamp"]
    q = np.array([[0.0, 1.0]], dtype=np.float32)
    d = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.8, 0.6]], dtype=np.float32)
    (merged,) = candidate_lists(["volcano lava"], texts, 2, q, d)
    # BM25 ranks 0 then 3 (or 1); dense ranks 2 then 1: interleaved by rank, each once
    assert merged[0] == 0 and merged[1] == 2 and len(merged) == len(set(merged)) <= 4


def test_group_loss_prefers_the_positive_first():
    good = torch.tensor([5.0, 0.0, 0.0, 4.0, 1.0, 0.0])
    bad = torch.tensor([0.0, 5.0, 0.0, 1.0, 4.0, 0.0])
    assert group_loss(good, 3) < group_loss(bad, 3)
    assert float(group_loss(torch.zeros(6), 3)) == pytest.approx(np.log(3), rel=1e-5)


def test_training_lowers_the_loss_and_saves_a_loadable_reranker(train_beir, tiny_base, tmp_path):
    out = tmp_path / "run"
    path = train_reranker(_cfg(train_beir, tiny_base, out), score_run=evaluate)
    state = load_run_state(out)
    losses = state["losses"]
    assert state["step"] == 20 and np.mean(losses[-4:]) < np.mean(losses[:4])
    assert set(state["extra"]["candidates"]) == {"ndcg@10", "mrr@10"}
    history = json.loads((out / "history.json").read_text())
    assert history and {"ndcg@10", "mrr@10"} <= set(history[-1])
    reranker = load_reranker(path, device="cpu", precision="fp32")
    scores = reranker.score("volcano lava", ["A volcano erupts lava.", "Python is a language."])
    assert scores.shape == (2,) and np.isfinite(scores).all()
    assert (out / "best" / "config.json").is_file() and "Validation" in (path / "README.md").read_text()
    # the saved reranker recommends the weight its last validation scored best
    last = history[-1]
    scored = {1.0: last["ndcg@10"], 0.3: last["ndcg@10_w0.3"], 0.5: last["ndcg@10_w0.5"], 0.7: last["ndcg@10_w0.7"]}
    assert reranker.weight == best_weight(last) and scored[reranker.weight] == max(scored.values())
    reranker.weight = 0.25  # a saved copy keeps the weight its reranker recommends
    assert load_reranker(reranker.save_pretrained(tmp_path / "copy"), device="cpu").weight == 0.25


def test_best_weight_prefers_the_higher_figure_then_the_reranker():
    assert best_weight({"ndcg@10": 0.6, "ndcg@10_w0.3": 0.7, "ndcg@10_w0.5": 0.65, "ndcg@10_w0.7": 0.6}) == 0.3
    assert best_weight({"ndcg@10": 0.7, "ndcg@10_w0.3": 0.7, "ndcg@10_w0.5": 0.7, "ndcg@10_w0.7": 0.7}) == 1.0
    assert best_weight({"step": 3, "loss": 1.0}) is None
    # mixed sources: the mean over sources, not the pooled figure (source 1 has more queries)
    mixed = {"ndcg@10": 0.80, "ndcg@10_w0.3": 0.85, "ndcg@10_w0.5": 0.84, "ndcg@10_w0.7": 0.83,
             "ndcg@10_source0": 0.70, "ndcg@10_source1": 0.80, "ndcg@10_w0.3_source0": 0.70,
             "ndcg@10_w0.3_source1": 0.90, "ndcg@10_w0.5_source0": 0.76, "ndcg@10_w0.5_source1": 0.88,
             "ndcg@10_w0.7_source0": 0.74, "ndcg@10_w0.7_source1": 0.86}
    assert best_weight(mixed) == 0.5


def test_resume_continues_from_the_checkpoint_step(train_beir, tiny_base, tmp_path, monkeypatch):
    import retriever.train_reranker as tr

    out = tmp_path / "run"
    train_reranker(_cfg(train_beir, tiny_base, out, steps=5, max_minutes=0), score_run=evaluate)
    assert load_run_state(out)["step"] == 1
    # the resume reads the negatives and the validation candidates back (no corpus encoding)
    monkeypatch.setattr(tr, "_validation_candidates", lambda *a, **k: pytest.fail("validation candidates recomputed"))
    train_reranker(_cfg(train_beir, tiny_base, out, steps=5), score_run=evaluate)
    assert load_run_state(out)["step"] == 5


def test_bad_options_are_clear_errors(train_beir, tiny_base, tmp_path):
    with pytest.raises(InvalidInput):
        train_reranker(_cfg(train_beir, tiny_base, tmp_path / "x", negatives=0))
    with pytest.raises(InvalidInput):
        train_reranker(_cfg(train_beir, tiny_base, tmp_path / "y", max_seq_len=16, max_query_tokens=16))


def test_cli_trains_and_reports_the_model_dir(train_beir, tiny_base, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["train", "reranker", "--data", str(train_beir), "--base", str(tiny_base), "--out", str(out),
               "--steps", "3", "--batch-size", "2", "--negatives", "2", "--max-seq-len", "48", "--max-query-tokens", "8",
               "--val-depth", "4", "--threads", "1"])
    assert rc == 0 and f"reranker saved to {out / 'model'}" in capsys.readouterr().out


def _squad(path: Path) -> Path:
    """A two-article SQuAD v1.1 file (train format: no ids)."""
    def para(ctx: str, qs: list[str]) -> dict:
        return {"context": ctx, "qas": [{"question": q, "answers": [{"text": ctx.split()[0], "answer_start": 0}]} for q in qs]}
    data = {"version": "1.1", "data": [
        {"title": "Volcanoes", "paragraphs": [
            para("Magma rises through the crust and erupts as lava.", ["what erupts as lava", "where does magma rise"]),
            para("Ash clouds from eruptions ground aircraft.", ["what grounds aircraft after an eruption"]),
            para("Volcanic soil is rich in minerals.", ["why is volcanic soil fertile"])]},
        {"title": "Coffee", "paragraphs": [
            para("Espresso is brewed by forcing hot water through coffee.", ["how is espresso brewed"]),
            para("Arabica beans grow at high altitude.", ["where do arabica beans grow", "which beans grow high up"])]},
    ]}
    path.write_text(json.dumps(data))
    return path


def test_squad_pairs_use_own_paragraph_and_same_article_negatives(tmp_path):
    from retriever.train_reranker import load_squad_pairs

    data, same = load_squad_pairs(_squad(tmp_path / "train-v1.1.json"), 0.0, None, 0)
    assert len(data.doc_ids) == 5 and len(data.train_pairs) == 7
    for q, d in data.train_pairs:
        assert data.positives[q] == {d} and d not in same[q]
        assert {p.split("-")[0] for p in same[q]} == {d.split("-")[0]}  # the other paragraphs of its article
    assert any(t.startswith("Volcanoes ") for t in data.doc_texts)  # titled like a BEIR document
    few, _ = load_squad_pairs(tmp_path / "train-v1.1.json", 0.0, 2, 0)  # whole articles, cut at 2 questions
    assert len(few.train_pairs) == 2 and len({d.split("-")[0] for d in few.doc_ids}) == 1
    (tmp_path / "dev-v1.1.json").write_text((tmp_path / "train-v1.1.json").read_text())
    with pytest.raises(InvalidInput, match="dev"):
        load_squad_pairs(tmp_path / "dev-v1.1.json", 0.0, None, 0)


def test_training_on_squad_then_continuing_from_the_reranker(tmp_path, tiny_base):
    squad = _squad(tmp_path / "train-v1.1.json")
    first = train_reranker(_cfg(squad, tiny_base, tmp_path / "a", steps=4, val_fraction=0.0, negatives=2))
    start = load_reranker(first, device="cpu", precision="fp32")
    second = train_reranker(_cfg(squad, tiny_base, tmp_path / "b", steps=1, lr=1e-12, head_lr_scale=1.0,
                                 val_fraction=0.0, negatives=2, init=str(first)))
    again = load_reranker(second, device="cpu", precision="fp32")
    pair = ("what erupts as lava", ["Magma rises through the crust and erupts as lava.", "Arabica beans grow high."])
    np.testing.assert_allclose(again.score(*pair), start.score(*pair), rtol=1e-5, atol=1e-5)  # head and encoder carried over


def test_mixed_sources_keep_ids_apart_and_validate_each(train_beir, tiny_base, tmp_path):
    squad = _squad(tmp_path / "train-v1.1.json")
    out = tmp_path / "mix"
    train_reranker(_cfg(train_beir, tiny_base, out, steps=4, val_fraction=0.3, negatives=2, mix=(str(squad),)),
                   score_run=evaluate)
    assert (out / "negatives.json").is_file() and (out / "negatives-1.json").is_file()  # mined per source
    last = json.loads((out / "history.json").read_text())[-1]
    assert {"ndcg@10_source0", "ndcg@10_source1", "ndcg@10_w0.3_source0", "ndcg@10_w0.7_source1"} <= set(last)
    assert {"ndcg@10_source0", "ndcg@10_source1"} <= set(load_run_state(out)["extra"]["candidates"])
    assert "train-v1.1.json" in (out / "model" / "README.md").read_text()  # the card names every source


def test_merge_sources_prefixes_ids_per_source():
    from retriever.train_encoder import PairData
    from retriever.train_reranker import merge_sources

    a = PairData(["d1"], ["alpha"], {"q1": "a?"}, {"q1": {"d1": 1}}, {"q1": {"d1"}}, [("q1", "d1")], [])
    b = PairData(["d1", "d2"], ["beta", "gamma"], {"q1": "b?"}, {"q1": {"d2": 1}}, {"q1": {"d2"}}, [], ["q1"])
    data, negs, val, source_of = merge_sources([(a, {"q1": ["d1"]}, {}), (b, {}, {"q1": ["d2", "d1"]})])
    assert data.doc_ids == ["0:d1", "1:d1", "1:d2"] and data.doc_texts == ["alpha", "beta", "gamma"]
    assert data.train_pairs == [("0:q1", "0:d1")] and data.val_qids == ["1:q1"]
    assert data.queries == {"0:q1": "a?", "1:q1": "b?"} and data.positives["1:q1"] == {"1:d2"}
    assert negs == {"0:q1": ["0:d1"]} and val == {"1:q1": ["1:d2", "1:d1"]}
    assert source_of == {"0:q1": 0, "1:q1": 1}
    single = merge_sources([(a, {"q1": ["d1"]}, {})])
    assert single[0] is a and single[3] == {"q1": 0}
