"""``bench qa`` and ``bench rag`` with a generative model (a tiny random chat GGUF): the figures
exist, are in range, and two generators share one retrieval in bench rag."""

from __future__ import annotations

import pytest
from test_bench_qa import _write_v2
from test_rag import write_toy_squad
from toydata import build_tiny_qa

from engine.engine import Engine
from eval.bench_qa import QABenchConfig, run_benchmark
from eval.rag_bench import RagBenchConfig, format_tables, run_rag_bench
from eval.report import markdown_table
from index.store import Store


@pytest.fixture(scope="module")
def qa_model(tmp_path_factory, minilm_dir):
    return build_tiny_qa(tmp_path_factory.mktemp("qa"), minilm_dir)


def test_bench_qa_generative_figures(tmp_path, qa_model, tiny_chat_gguf):
    data = _write_v2(tmp_path / "v2.json")
    r = run_benchmark(QABenchConfig(data=str(data), generator=str(tiny_chat_gguf), reader=str(qa_model),
                                    distractors=1, budget=1024))
    assert r["kind"] == "generative" and r["n"] == 4 and r["verifier"] == "reader+overlap"
    assert 0.0 <= r["f1"] <= 100.0 and 0.0 <= r["answer_rate"] <= 1.0
    assert r["has_ans_total"] == 2 and r["no_ans_total"] == 2
    assert 0.0 <= r["refusal_rate"] <= 1.0 and 0.0 <= r["contains_gold"] <= 1.0
    # turning unsupported answers into abstentions can only raise the unanswerable score
    assert r["no_ans_f1_abstain_unsupported"] >= r["no_ans_f1"]
    assert r["decode_tokens_per_s"] > 0
    overlap_only = run_benchmark(QABenchConfig(data=str(data), generator=str(tiny_chat_gguf), reader=None, budget=1024))
    assert overlap_only["verifier"] == "overlap"


def test_bench_rag_two_generators_share_the_hits(tmp_path, qa_model, tiny_chat_gguf, monkeypatch):
    data = write_toy_squad(tmp_path / "toy-v2.json")
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    engine = Engine(store, data_dir=tmp_path, generator=str(qa_model), generative=str(tiny_chat_gguf),
                    generator_quant="none")
    searches = []
    search = engine.search
    monkeypatch.setattr(engine, "search", lambda *a, **k: searches.append(a) or search(*a, **k))
    try:
        cfg = RagBenchConfig(data=data, budgets=(400, 1024), generator=f"{qa_model},generative", limit=3)
        result = run_rag_bench(cfg, engine=engine, progress=False)
    finally:
        engine.close()
        store.close()
    assert len(searches) == 3  # one retrieval per question, shared by both generators and budgets
    gens = {r["generator"] for r in result["rows"]}
    assert gens == {str(qa_model), "generative"} and len(result["rows"]) == 4
    for row in result["rows"]:
        assert row["n"] == 3 and 0.0 <= row["f1"] <= 1.0
    assert result["config"]["generators"]["generative"]["kind"] == "generative"
    assert "| generator |" in format_tables(result, markdown_table)


def test_bench_qa_scores_citations_against_the_gold_chunk(tmp_path, tiny_chat_gguf, monkeypatch):
    """A scripted model that states each paragraph's answer word without citing: the verifier
    attributes the gold chunk, so every correct answer's citation is the gold one."""
    import torch
    from test_bench_qa import PARAS

    from generator import generative as gen_mod
    from generator.chat_model import load_chat_model
    from generator.generate import GenerationStep

    chat = load_chat_model(str(tiny_chat_gguf))
    answer = {title: ctx.split()[-1].rstrip(".") for title, ctx in PARAS}

    def fake(model, prompts, **kwargs):
        text = chat.decode(list(prompts[0]))
        title = next(t for t in answer if f"What about {t}?" in text or f"Who painted {t}?" in text)
        for t in chat.encode(f"{answer[title]}."):
            yield GenerationStep(tokens=torch.tensor([t]), emitted=torch.tensor([True]))

    monkeypatch.setattr(gen_mod, "stream_generate", fake)
    data = _write_v2(tmp_path / "v2.json")
    r = run_benchmark(QABenchConfig(data=str(data), generator=str(tiny_chat_gguf), reader=None, distractors=1, budget=1024))
    assert r["has_ans_f1"] == 100.0 and r["no_ans_f1"] == 0.0  # states the word for unanswerable ones too
    assert r["citation_accuracy"] == 1.0 and r["model_citation_rate"] == 0.0 and r["contains_gold"] == 1.0
    assert r["supported_rate"] == 1.0 and r["refusal_rate"] == 0.0
