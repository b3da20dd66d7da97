"""``attend bench rag`` end to end on a toy SQuAD v2 file with a tiny random generator: the answers
are random, so the checks are on structure and on figures that do not depend on the model (what
reaches the context, what always/never abstaining scores)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from toydata import build_tiny_qa

from attend.cli import main
from common.squad import load_squad
from eval.rag_bench import (
    RagBenchConfig,
    bench_engine,
    collection_name,
    run_rag_bench,
    sample_questions,
    squad_documents,
)

ARTICLES = {
    "Volcanoes": [
        ("A volcano erupts when magma from the mantle rises through the crust and escapes as lava.",
         [("What escapes from a volcano?", "lava"), ("Where does magma come from?", "the mantle"),
          ("Who discovered the first volcano on Mars?", None)]),
        ("The crust is broken into tectonic plates that drift on the mantle and cause earthquakes.",
         [("What do drifting plates cause?", "earthquakes")]),
    ],
    "Plants": [
        ("Plants convert sunlight, water and carbon dioxide into glucose and oxygen in their chloroplasts.",
         [("Where do plants make glucose?", "chloroplasts"), ("What gas do plants release?", "oxygen")]),
        ("Chlorophyll is the green pigment that absorbs red and blue light for photosynthesis.",
         [("What colour is chlorophyll?", "green"), ("How many leaves does an oak grow each year?", None)]),
    ],
    "Cafés": [
        ("Parisian cafés serve espresso, croissants and crème brûlée on busy terraces.",
         [("What pastry do Parisian cafés serve?", "croissants")]),
    ],
}
BUDGETS = (96, 512)


def write_toy_squad(path: Path) -> Path:
    data = []
    n = 0
    for title, paragraphs in ARTICLES.items():
        paras = []
        for context, qas in paragraphs:
            rows = []
            for question, answer in qas:
                n += 1
                answers = [] if answer is None else [{"text": answer, "answer_start": context.index(answer)}]
                rows.append({"id": f"q{n}", "question": question, "answers": answers, "is_impossible": answer is None})
            paras.append({"context": context, "qas": rows})
        data.append({"title": title, "paragraphs": paras})
    path.write_text(json.dumps({"version": "v2.0", "data": data}))
    return path


@pytest.fixture(scope="module")
def toy_squad(tmp_path_factory) -> Path:
    return write_toy_squad(tmp_path_factory.mktemp("squad") / "toy-v2.json")


@pytest.fixture(scope="module")
def tiny_generator(tmp_path_factory, minilm_dir) -> Path:
    return build_tiny_qa(tmp_path_factory.mktemp("tiny_qa"), minilm_dir)


@pytest.fixture(scope="module")
def engine(tmp_path_factory, tiny_generator):
    with bench_engine(tmp_path_factory.mktemp("rag_data"), str(tiny_generator)) as eng:
        yield eng


def test_documents_and_question_order(toy_squad):
    examples = load_squad(toy_squad)
    docs = squad_documents(examples)
    assert [d["id"] for d in docs] == ["0-0", "0-1", "1-0", "1-1", "2-0"]
    assert docs[2]["title"] == "Plants" and docs[2]["text"].startswith("Plants convert")
    order = sample_questions(examples, None, seed=0)
    assert sorted(e.qid for e in order) == sorted(e.qid for e in examples)
    # the first round takes one question from each article, in article order
    assert [e.paragraph_id[0] for e in order[:3]] == ["0", "1", "2"]
    assert sample_questions(examples, 4, seed=0) == order[:4]
    assert [e.qid for e in sample_questions(examples, None, seed=1)] != [e.qid for e in order] or len(order) < 3
    assert collection_name(Path("/x/dev-v2.0.json")) == "squad-dev-v2.0"


def _counting(engine, monkeypatch) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []
    search = engine.search

    def counted(collection, query, **kw):
        calls.append((query, kw.get("mode", "hybrid")))
        return search(collection, query, **kw)

    monkeypatch.setattr(engine, "search", counted)
    return calls


def test_never_abstaining(engine, toy_squad, monkeypatch):
    calls = _counting(engine, monkeypatch)
    cfg = RagBenchConfig(data=toy_squad, budgets=BUDGETS, modes=("bm25", "hybrid"), k=10, abstain_threshold=1.0)
    result = run_rag_bench(cfg, engine=engine, progress=False)
    n = len(load_squad(toy_squad))
    unanswerable = sum(1 for q in ARTICLES.values() for _, qas in q for _, a in qas if a is None)
    # one retrieval per question and mode, shared by the budgets
    assert len(calls) == n * 2 and len(set(calls)) == n * 2
    rows = {(r["mode"], r["budget"]): r for r in result["rows"]}
    assert set(rows) == {(m, b) for m in ("bm25", "hybrid") for b in BUDGETS}
    for r in rows.values():
        assert r["n"] == n
        for key in ("f1", "em", "answer_rate", "hallucination_rate", "wrong_answer_rate", "gold_in_context"):
            assert 0.0 <= r[key] <= 1.0
        assert math.isclose(r["answer_rate"], r["hallucination_rate"] + r["wrong_answer_rate"] + r["correct_answer_rate"])
        assert r["mean_context_tokens"] <= r["budget"]
        assert r["latency_p50_ms"] > 0 and r["retrieval_p50_ms"] > 0
    # 5 short paragraphs, k=10, 512 tokens: in hybrid mode (dense returns every chunk) everything
    # fits, so every gold paragraph and every reference is in the context and only the answers to
    # unanswerable questions hallucinate (BM25 returns only chunks sharing a term with the question).
    big = rows[("hybrid", 512)]
    assert big["gold_in_context"] == 1.0 and big["context_has_answer"] == (n - unanswerable) / n
    assert big["answer_rate"] == 1.0 and big["hallucination_rate"] == unanswerable / n
    assert big["abstain_precision"] is None and big["abstain_recall"] == 0.0
    assert rows[("hybrid", 96)]["mean_context_tokens"] < big["mean_context_tokens"]
    for mode in ("bm25", "hybrid"):
        small, big = rows[(mode, 96)], rows[(mode, 512)]
        assert small["mean_context_tokens"] <= big["mean_context_tokens"]
        assert small["gold_in_context"] <= big["gold_in_context"]
    assert len(result["by_position"]) == 4 * 5
    assert len(result["outcomes"]) == n * 4
    assert result["config"]["collection"] == "squad-toy-v2" and result["config"]["questions"] == n


def test_always_abstaining(engine, toy_squad):
    cfg = RagBenchConfig(data=toy_squad, budgets=(512,), modes=("bm25",), abstain_threshold=0.0, limit=6)
    result = run_rag_bench(cfg, engine=engine, progress=False)
    assert result["config"]["indexed"] is False  # the collection of the previous test is reused
    (row,) = result["rows"]
    questions = sample_questions(load_squad(toy_squad), 6)
    unanswerable = sum(1 for e in questions if not e.answers)
    assert row["n"] == 6 and row["answer_rate"] == 0.0 and row["hallucination_rate"] == 0.0
    assert row["em"] == row["f1"] == unanswerable / 6  # only abstaining on unanswerables scores
    assert row["abstain_recall"] == 1.0 and row["abstain_precision"] == unanswerable / 6


def test_budget_beyond_the_context_window_is_refused(engine, toy_squad):
    from common.errors import InvalidInput

    with pytest.raises(InvalidInput, match="context window"):
        run_rag_bench(RagBenchConfig(data=toy_squad, budgets=(512, 4096)), engine=engine, progress=False)
    with pytest.raises(InvalidInput):
        RagBenchConfig(data=toy_squad, modes=("sparse",))


def test_cli_writes_json_plot_and_markdown(tmp_path, toy_squad, tiny_generator, capsys):
    out = tmp_path / "out"
    argv = ["bench", "rag", "--data", str(toy_squad), "--budgets", "96,256", "--modes", "bm25,hybrid",
            "--limit", "4", "--generator", str(tiny_generator), "--data-dir", str(tmp_path / "data"),
            "--json", str(out / "rag.json"), "--plot", str(out / "rag.png"), "--markdown", str(out / "rag.md"),
            "--no-progress"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "hallucination_rate" in text and "indexed" in text
    body = json.loads((out / "rag.json").read_text())
    assert set(body) >= {"rows", "by_position", "config"}
    assert len(body["rows"]) == 4
    for row in body["rows"]:
        assert set(row) >= {"budget", "mode", "f1", "em", "answer_rate", "hallucination_rate", "wrong_answer_rate",
                            "gold_in_context", "abstain_precision", "abstain_recall", "mean_context_tokens",
                            "latency_p50_ms", "n"}
        assert row["n"] == 4
    md = (out / "rag.md").read_text()
    assert md.count("\n| hybrid |") + md.count("\n| bm25 |") >= 4
    import matplotlib.image as mpimg

    img = mpimg.imread(out / "rag.png")
    assert img.shape[0] > 300 and img.shape[1] > 500
    assert len({tuple(p) for p in img.reshape(-1, img.shape[2])[::7]}) > 20  # lines, not a blank canvas
    # a second run reuses the collection in --data-dir
    assert main(argv) == 0
    assert "reused" in capsys.readouterr().out


def test_help_documents_the_definitions(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "rag", "--help"])
    text = capsys.readouterr().out
    for term in ("hallucination_rate", "wrong_answer_rate", "abstain_precision", "gold_in_context", "F1 < 0.5"):
        assert term in text


def test_rerank_adds_reranked_rows_from_their_own_searches(tmp_path, toy_squad, tiny_generator, tiny_reranker_dir,
                                                            monkeypatch):
    with bench_engine(tmp_path / "data", str(tiny_generator), reranker=str(tiny_reranker_dir)) as eng:
        found: list[tuple[dict | None, list]] = []
        search = eng.search

        def spy(collection, query, **kw):
            res = search(collection, query, **kw)
            found.append((kw.get("rerank"), res.hits))
            return res

        monkeypatch.setattr(eng, "search", spy)
        cfg = RagBenchConfig(data=toy_squad, budgets=(96, 512), modes=("bm25", "hybrid"), limit=5,
                             rerank=str(tiny_reranker_dir), rerank_depth=3)
        result = run_rag_bench(cfg, engine=eng, progress=False)
    labels = ["bm25", "hybrid", "bm25+rerank", "hybrid+rerank"]
    assert [(r["mode"], r["budget"]) for r in result["rows"]] == [(m, b) for m in labels for b in (96, 512)]
    assert all(r["n"] == 5 for r in result["rows"])
    assert len(found) == 5 * 4  # one search per question and row label, shared by the budgets
    plain = [hits for opt, hits in found if opt == {"model": None}]
    reranked = [hits for opt, hits in found if opt == {"model": str(tiny_reranker_dir), "depth": 3}]
    assert len(plain) == len(reranked) == 10
    assert all(h.rerank_score is None for hits in plain for h in hits)
    # the reranker scored the best 3 of each reranked search, and only those
    assert all(sum(h.rerank_score is not None for h in hits) == min(3, len(hits)) for hits in reranked)
    assert result["config"]["rerank"] == str(tiny_reranker_dir) and result["config"]["rerank_depth"] == 3


def test_rerank_options_are_checked(toy_squad, capsys):
    from common.errors import InvalidInput

    with pytest.raises(InvalidInput, match="rerank weight"):
        RagBenchConfig(data=toy_squad, rerank="rr", rerank_weight=1.5)
    with pytest.raises(InvalidInput, match="rerank depth"):
        RagBenchConfig(data=toy_squad, rerank="rr", rerank_depth=0)
    assert [v[0] for v in RagBenchConfig(data=toy_squad, modes=("bm25",), rerank="rr", rerank_weight=0.3).variants()] \
        == ["bm25", "bm25+rerank"]
    assert RagBenchConfig(data=toy_squad, rerank="rr", rerank_weight=0.3).variants()[-1][2] == \
        {"model": "rr", "depth": 50, "weight": 0.3}
