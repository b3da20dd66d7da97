"""``attend train distill`` with a tiny random teacher: text loading in every format (chunked as the
index chunks), the loss falling, a student that loads as a drop-in encoder, the cached teacher
vectors reused on resume, and clear errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from toydata import TOY_CORPUS, TOY_QUERIES, build_tiny_encoder, write_beir

from attend.cli import main
from common.errors import InvalidInput, NotFound
from common.training import load_run_state
from index.chunking import Chunker
from retriever import distill as ds
from retriever.distill import DistillConfig, distill, load_texts, read_texts
from retriever.embedder import SentenceEncoder
from retriever.tokenizer import Tokenizer

LONG = " ".join(f"Sentence number {i} talks about volcanoes, lava and the mantle." for i in range(60))
SQUAD = {"data": [{"title": "Geo", "paragraphs": [
    {"context": "Lava is molten rock.", "qas": [{"id": "a", "question": "What is lava?", "answers": [{"text": "molten rock", "answer_start": 8}]},
                                               {"id": "b", "question": "Is lava rock?", "answers": [{"text": "molten rock", "answer_start": 8}]}]},
    {"context": "Tides follow the Moon.", "qas": [{"id": "c", "question": "What do tides follow?", "answers": [{"text": "the Moon", "answer_start": 13}]}]},
]}]}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, minilm_dir) -> Path:
    return build_tiny_encoder(tmp_path_factory.mktemp("teacher"), minilm_dir)


@pytest.fixture(scope="module")
def text_files(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("texts")
    beir = write_beir(root / "beir", {**TOY_CORPUS, "long": ("Volcanoes", LONG)})
    (root / "squad.json").write_text(json.dumps(SQUAD))
    (root / "lines.txt").write_text("first line of text\n\n  second line  \n")
    return [str(beir / "corpus.jsonl"), str(beir / "queries.jsonl"), str(root / "squad.json"), str(root / "lines.txt")]


def _cfg(texts: list[str], teacher: Path, out: Path, **kw) -> DistillConfig:
    opts = dict(texts=texts, teacher=str(teacher), out=str(out), layers=1, heads=4, batch_size=8, lr=2e-3, steps=30,
                threads=1, max_seq_len=64, val_fraction=0.1, save_every=10, encode_batch_size=16)
    return DistillConfig(**{**opts, **kw})


def test_read_texts_in_every_format(text_files):
    corpus, queries, squad, lines = (read_texts(p) for p in text_files)
    assert ("Photosynthesis", TOY_CORPUS["d1"][1]) in corpus
    assert ("", TOY_QUERIES["q2"]) in queries
    assert squad == [("", "Lava is molten rock."), ("", "Tides follow the Moon.")]  # distinct paragraphs
    assert lines == [("", "first line of text"), ("", "second line")]


def test_a_beir_folder_gives_its_corpus_and_only_its_train_queries(tmp_path):
    root = write_beir(tmp_path / "b", qrels={"q2": {"d3": 1}}, split="train")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    records = read_texts(root)
    assert records[: len(TOY_CORPUS)] == list(TOY_CORPUS.values())
    assert records[len(TOY_CORPUS) :] == [("", TOY_QUERIES["q2"])]  # q1 is a test query: never a training text
    with pytest.raises(NotFound, match="split 'train' not found"):
        read_texts(write_beir(tmp_path / "only-test"))


def test_sentences_join_the_chunks_as_texts_of_their_own(text_files, minilm_dir):
    tok = Tokenizer.from_dir(minilm_dir)
    plain = load_texts(text_files[:2], tok, chunk_tokens=64, chunk_overlap=8)
    texts = load_texts(text_files[:2], tok, chunk_tokens=64, chunk_overlap=8, sentences=True)
    assert set(plain) < set(texts)
    assert "Sentence number 7 talks about volcanoes, lava and the mantle." in texts
    assert "Python is a programming language with dynamic typing and garbage collection." in texts
    added = set(texts) - set(plain)
    assert all(len(t.split()) >= ds.MIN_SENTENCE_WORDS for t in added)
    assert TOY_QUERIES["q3"] not in added and len(texts) == len(set(texts))  # a one-sentence query is there once


def test_unknown_or_missing_files_are_clear_errors(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(InvalidInput, match="unknown text format"):
        read_texts(tmp_path / "x.csv")
    with pytest.raises(NotFound, match="not found"):
        read_texts(tmp_path / "nope.txt")


def test_long_texts_are_chunked_like_the_index_with_the_title_in_front(text_files, minilm_dir):
    tok = Tokenizer.from_dir(minilm_dir)
    texts = load_texts(text_files[:1], tok, chunk_tokens=64, chunk_overlap=8)
    expected = [f"Volcanoes {c.text}" for c in Chunker(tok, max_tokens=64, overlap=8).chunk(LONG)]
    assert len(expected) > 3
    start = texts.index(expected[0])
    assert texts[start : start + len(expected)] == expected
    assert f"Photosynthesis {TOY_CORPUS['d1'][1]}" in texts
    assert len(texts) == len(set(texts))


def test_distillation_lowers_the_loss_and_saves_a_drop_in_student(text_files, teacher, tmp_path):
    out = tmp_path / "run"
    path = distill(_cfg(text_files, teacher, out))
    state = load_run_state(out)
    assert state["step"] == 30 and np.mean(state["losses"][-5:]) < 0.5 * np.mean(state["losses"][:5])
    student = SentenceEncoder.from_pretrained(path, device="cpu")
    t = SentenceEncoder.from_pretrained(teacher, device="cpu")
    assert student.dim == t.dim == 32 and len(student.model.layers) == 1 and len(t.model.layers) == 2
    assert student.max_length == t.max_length and student.tokenizer.vocab_size == t.tokenizer.vocab_size
    vecs = student.encode(["volcano lava", "plants", ""])
    assert vecs.shape == (3, 32)
    card = (path / "README.md").read_text()
    assert "random initialisation" in card and "30 of 30" in card and "training time" in card
    assert "val_cosine" in json.loads((out / "history.json").read_text())[-1]


def test_teacher_vectors_are_cached_and_a_resume_continues(text_files, teacher, tmp_path, monkeypatch):
    out = tmp_path / "run"
    calls = []
    real = ds.encode_teacher
    monkeypatch.setattr(ds, "encode_teacher", lambda *a, **k: calls.append(1) or real(*a, **k))
    distill(_cfg(text_files, teacher, out, steps=6, max_minutes=0))  # stops after one step
    assert calls == [1] and load_run_state(out)["step"] == 1
    mtime = (out / "teacher.npy").stat().st_mtime_ns
    distill(_cfg(text_files, teacher, out, steps=6))
    assert calls == [1] and (out / "teacher.npy").stat().st_mtime_ns == mtime
    state = load_run_state(out)
    assert state["step"] == 6 and len(state["losses"]) == 6
    distill(_cfg(text_files[2:], teacher, out, steps=7))  # other texts: the cache no longer fits
    assert calls == [1, 1]


def test_contrastive_term_and_mse_objective_run(text_files, teacher, tmp_path):
    distill(_cfg(text_files, teacher, tmp_path / "run", steps=2, objective="mse", contrastive=0.5, precision="bf16"))
    assert load_run_state(tmp_path / "run")["step"] == 2


def test_student_wider_or_narrower_than_the_teacher_is_refused(text_files, teacher, tmp_path):
    with pytest.raises(InvalidInput, match="projection head"):
        distill(_cfg(text_files, teacher, tmp_path / "run", dim=16))
    with pytest.raises(InvalidInput, match="run scorer"):
        distill(_cfg(text_files, teacher, tmp_path / "run", eval_data=str(tmp_path)))


def test_cli_errors_are_clear(text_files, teacher, tmp_path, capsys):
    base = ["train", "distill", "--teacher", str(teacher), "--out", str(tmp_path / "o"), "--threads", "1", "--heads", "4"]
    assert main([*base, "--texts", str(tmp_path / "missing.jsonl")]) == 2
    assert "texts file not found" in capsys.readouterr().err
    (tmp_path / "t.parquet").write_text("")
    assert main([*base, "--texts", str(tmp_path / "t.parquet")]) == 2
    assert "unknown text format" in capsys.readouterr().err
    assert main([*base, "--texts", text_files[3], "--heads", "5"]) == 2
    assert "not a multiple of num_attention_heads" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--texts", text_files[3], "--precision", "int8"])
    assert "invalid choice: 'int8'" in capsys.readouterr().err


def test_cli_distils(text_files, teacher, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["train", "distill", "--teacher", str(teacher), "--texts", *text_files, "--out", str(out), "--steps", "2",
               "--layers", "1", "--heads", "4", "--batch-size", "8", "--threads", "1", "--max-seq-len", "64"])
    assert rc == 0 and f"student saved to {out / 'model'}" in capsys.readouterr().out
    assert "attend" in (out / "model" / "README.md").read_text()


@pytest.mark.slow  # imports sentence-transformers for the reference row (about 5 s)
def test_bench_encoder_compares_the_student_with_ours(toy_beir, text_files, teacher, tmp_path, capsys):
    pytest.importorskip("sentence_transformers")
    from eval.bench_encoder import EncoderBenchConfig, format_report, run_encoder_bench

    student = distill(_cfg(text_files, teacher, tmp_path / "run", steps=2))
    result = run_encoder_bench(EncoderBenchConfig(data=toy_beir, encoder=str(teacher), compare=str(student), runs=1,
                                                  batch_size=4, chunk_size=4, precisions=("fp32",)))
    c = result["compare"]
    assert c["encoder"] == str(student) and c["docs_per_s"] > 0
    assert c["speedup_vs_ours"] == pytest.approx(c["docs_per_s"] / result["ours_docs_per_s"])
    assert -1.0 <= c["min_cosine_vs_ours"] <= c["mean_cosine_vs_ours"] <= 1.0
    assert 0.0 <= c["ndcg@10"] <= 1.0
    assert "compare (fp32)" in format_report(result) and "x ours" in format_report(result)
    assert main(["bench", "encoder", "--data", str(toy_beir), "--encoder", str(teacher), "--compare", str(student),
                 "--runs", "1", "--precision", "fp32", "--limit", "4"]) == 0
    assert "compare" in capsys.readouterr().out


def test_shipped_attend_small_loads_by_name_and_stands_in_for_its_teacher(minilm_dir):
    """The distilled encoder that ships (models/attend-small): selected by name, half the teacher's
    layers, the teacher's tokenizer and width, vectors close to the teacher's on scientific claims
    (its training domain) and the same top document as the teacher for each toy query."""
    from common.paths import resolve_encoder

    path = resolve_encoder("attend-small")
    assert path.name == "attend-small" and "random initialisation" in (path / "README.md").read_text()
    student = SentenceEncoder.from_pretrained(path, device="cpu", precision="fp32")
    t = SentenceEncoder.from_pretrained(minilm_dir, device="cpu", precision="fp32")
    assert len(student.model.layers) * 2 == len(t.model.layers) and student.dim == t.dim == 384
    assert student.tokenizer.vocab_size == t.tokenizer.vocab_size and student.max_length == t.max_length
    claims = ["Vitamin D deficiency is associated with an increased risk of multiple sclerosis.",
              "Aspirin reduces the risk of colorectal cancer in adults."]
    assert ((student.encode(claims) * t.encode(claims)).sum(1) > 0.9).all()  # a random 3-layer encoder: about 0
    docs = [f"{title} {text}" for title, text in TOY_CORPUS.values()]
    queries = list(TOY_QUERIES.values())
    s_docs, t_docs = student.encode(docs), t.encode(docs)
    assert np.allclose(np.linalg.norm(s_docs, axis=1), 1.0, atol=1e-4)
    assert (s_docs * t_docs).sum(1).mean() > 0.3  # off its domain it is further from the teacher (model card)
    s_top = (student.encode(queries) @ s_docs.T).argmax(1)
    t_top = (t.encode(queries) @ t_docs.T).argmax(1)
    assert (s_top == t_top).all()
