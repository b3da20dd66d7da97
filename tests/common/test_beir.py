"""BEIR loading (toy folder written by the project, plus malformed variants)."""

from __future__ import annotations

import json
import os

import pytest
from toydata import TOY_CORPUS, TOY_QRELS, TOY_QUERIES, write_beir

from common.beir import (
    BeirDataset,
    iter_corpus,
    load_beir,
    load_retrieval_set,
    read_qrels,
    squad_as_beir,
)
from common.errors import InvalidInput, NotFound


def test_load_toy_beir(toy_beir):
    ds = load_beir(toy_beir)
    assert isinstance(ds, BeirDataset)
    assert ds.split == "test"
    assert ds.name == toy_beir.name
    assert set(ds.corpus) == set(TOY_CORPUS)
    assert ds.corpus["d7"] == {
        "title": "Café culture",
        "text": TOY_CORPUS["d7"][1],
        "metadata": {},
    }
    assert ds.queries == TOY_QUERIES
    assert ds.qrels == TOY_QRELS
    assert "docs=8" in repr(ds)


def test_only_judged_queries_and_zero_judgments_kept(tmp_path):
    queries = {**TOY_QUERIES, "q_unjudged": "nobody judged this"}
    qrels = {"q1": {"d1": 2, "d3": 0}, "q2": {"d3": 1}}
    root = write_beir(tmp_path / "ds", queries=queries, qrels=qrels, split="dev")
    ds = load_beir(root, "dev", name="toy")
    assert ds.name == "toy"
    assert list(ds.queries) == ["q1", "q2"]
    assert ds.qrels == {"q1": {"d1": 2, "d3": 0}, "q2": {"d3": 1}}


def test_metadata_numeric_ids_and_missing_title(tmp_path):
    root = write_beir(tmp_path / "ds")
    with open(root / "corpus.jsonl", "a", encoding="utf-8") as f:
        f.write("\n")  # blank lines are skipped
        f.write(json.dumps({"_id": 42, "text": "no title here", "metadata": {"year": 2001}}) + "\n")
    ds = load_beir(root)
    assert ds.corpus["42"] == {"title": "", "text": "no title here", "metadata": {"year": 2001}}


def test_missing_folder_file_and_split(tmp_path, toy_beir):
    with pytest.raises(NotFound, match="nowhere"):
        load_beir(tmp_path / "nowhere")
    with pytest.raises(NotFound, match="'train'.*available: \\['test'\\]"):
        load_beir(toy_beir, split="train")
    root = write_beir(tmp_path / "no_corpus")
    os.remove(root / "corpus.jsonl")
    with pytest.raises(NotFound, match="corpus.jsonl"):
        load_beir(root)


def test_malformed_lines_name_file_and_line(tmp_path):
    root = write_beir(tmp_path / "bad_json")
    with open(root / "corpus.jsonl", "a", encoding="utf-8") as f:
        f.write('{"_id": "d9", "text": \n')
    with pytest.raises(InvalidInput, match=r"corpus\.jsonl:9"):
        load_beir(root)

    root = write_beir(tmp_path / "no_id")
    with open(root / "queries.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"text": "id-less"}) + "\n")
    with pytest.raises(InvalidInput, match=r"queries\.jsonl:5.*_id"):
        load_beir(root)

    root = write_beir(tmp_path / "bad_qrels")
    with open(root / "qrels" / "test.tsv", "a", encoding="utf-8") as f:
        f.write("q1\td2\thigh\n")
    with pytest.raises(InvalidInput, match=r"test\.tsv:8.*'high'"):
        load_beir(root)

    root = write_beir(tmp_path / "short_qrels")
    with open(root / "qrels" / "test.tsv", "a", encoding="utf-8") as f:
        f.write("q1\n")
    with pytest.raises(InvalidInput, match=r"test\.tsv:8"):
        load_beir(root)


def test_judged_query_missing_from_queries_file(tmp_path):
    root = write_beir(tmp_path / "ds", qrels={**TOY_QRELS, "q_ghost": {"d1": 1}})
    with pytest.raises(InvalidInput, match="q_ghost"):
        load_beir(root)


def test_read_qrels_without_header_and_trec_format(tmp_path):
    p = tmp_path / "plain.tsv"
    p.write_text("q1\td1\t1\nq1\td2\t0\n", encoding="utf-8")
    assert read_qrels(p) == {"q1": {"d1": 1, "d2": 0}}
    t = tmp_path / "trec.txt"
    t.write_text("q1 0 d1 2\nq2 0 d5 1\n", encoding="utf-8")
    assert read_qrels(t) == {"q1": {"d1": 2}, "q2": {"d5": 1}}


def test_iter_corpus_streams_records_in_file_order(toy_beir):
    records = list(iter_corpus(toy_beir / "corpus.jsonl"))
    assert [d for d, _ in records] == list(TOY_CORPUS)
    assert records[0][1] == {"title": TOY_CORPUS["d1"][0], "text": TOY_CORPUS["d1"][1], "metadata": {}}


def test_iter_corpus_can_report_bad_lines_and_go_on(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text(
        '{"_id": "a", "title": "A", "text": "first"}\n'
        "{not json\n"
        '["a", "list"]\n'
        '{"title": "no id", "text": "x"}\n'
        '{"_id": "b", "text": 5}\n'
        '{"_id": "c", "text": "last", "metadata": {"k": 1}}\n'
    )
    bad: list[tuple[int, InvalidInput]] = []
    records = list(iter_corpus(path, on_error=lambda lineno, exc: bad.append((lineno, exc))))
    assert [doc_id for doc_id, _ in records] == ["a", "c"]
    assert records[1][1] == {"title": "", "text": "last", "metadata": {"k": 1}}
    assert [lineno for lineno, _ in bad] == [2, 3, 4, 5]
    assert all(f"{path}:{lineno}:" in str(exc) for lineno, exc in bad)
    with pytest.raises(InvalidInput, match=":2: malformed JSON"):
        list(iter_corpus(path))


def _squad(path, articles):
    data = [{"title": title, "paragraphs": [
        {"context": context, "qas": [
            {"id": qid, "question": q, "is_impossible": a is None,
             "answers": [] if a is None else [{"text": a, "answer_start": context.index(a)}]}
            for qid, q, a in qas]}
        for context, qas in paragraphs]} for title, paragraphs in articles.items()]
    path.write_text(json.dumps({"version": "v2.0", "data": data}))
    return path


def test_squad_file_as_a_beir_split(tmp_path):
    path = _squad(tmp_path / "dev-toy.json", {
        "Tea": [("Green tea is steamed.", [("t1", "How is green tea made?", "steamed"), ("t2", "Who grows tea?", None)]),
                ("Black tea is oxidised.", [("t3", "What happens to black tea?", "oxidised")])],
        "Bread": [("Yeast makes bread rise.", [("b1", "What makes bread rise?", "Yeast")])],
    })
    ds = load_retrieval_set(path, split="ignored")
    assert ds == squad_as_beir(path)
    assert ds.name == "squad-dev-toy" and ds.split == "squad"
    assert ds.corpus == {"0-0": {"title": "Tea", "text": "Green tea is steamed.", "metadata": {}},
                         "0-1": {"title": "Tea", "text": "Black tea is oxidised.", "metadata": {}},
                         "1-0": {"title": "Bread", "text": "Yeast makes bread rise.", "metadata": {}}}
    # unanswerable questions are not queries; each question is judged relevant to its own paragraph only
    assert ds.qrels == {"t1": {"0-0": 1}, "t3": {"0-1": 1}, "b1": {"1-0": 1}}
    assert set(ds.queries) == set(ds.qrels) and ds.queries["b1"] == "What makes bread rise?"
    # the order takes one question per article in turn, so the first N spread over the file
    assert {list(ds.queries)[0][0], list(ds.queries)[1][0]} == {"t", "b"}


def test_squad_file_errors(tmp_path, toy_beir):
    with pytest.raises(NotFound, match="SQuAD file not found"):
        squad_as_beir(tmp_path / "missing.json")
    only_unanswerable = _squad(tmp_path / "none.json", {"Tea": [("Green tea.", [("t", "Who grows tea?", None)])]})
    with pytest.raises(InvalidInput, match="no answerable question"):
        load_retrieval_set(only_unanswerable)
    assert load_retrieval_set(toy_beir, "test") == load_beir(toy_beir, "test")  # a folder is read as BEIR
