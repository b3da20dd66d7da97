"""The service commands of the CLI, over the same Settings (environment) the server reads."""

from __future__ import annotations

import json

import pytest

from attend.cli import main
from common.settings import get_settings


@pytest.fixture
def env(tmp_path, tiny_qa_dir, monkeypatch):
    for key in list(__import__("os").environ):
        if key.startswith("ATTEND_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("ATTEND_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ATTEND_GENERATOR", str(tiny_qa_dir))
    monkeypatch.chdir(tmp_path)  # no stray .env
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def _corpus(root):
    (root / "docs" / "sub").mkdir(parents=True)
    (root / "docs" / "volcano.txt").write_text("A volcano erupts when magma rises through the crust.")
    (root / "docs" / "sub" / "tea.html").write_text("<html><title>Tea</title><script>x()</script><p>Green tea is steamed.</p></html>")
    (root / "docs" / "kites.md").write_text("# Kites\n\nKites fly on wind.")
    (root / "docs" / "ignored.bin").write_bytes(b"\x00")
    (root / "docs" / "bad.txt").write_bytes("Caf\u00e9".encode("latin-1"))
    beir = root / "beir"
    beir.mkdir()
    rows = [{"_id": "b1", "title": "Tides", "text": "Tides are pulled by the Moon."},
            {"_id": "b2", "title": "Bread", "text": "Yeast makes bread rise."}]
    (beir / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root / "docs", beir


def test_collections_index_search_ask(env, capsys):
    docs, beir = _corpus(env)
    assert main(["index", str(docs), "--collection", "kb"]) == 2  # no such collection without --create
    assert "does not exist" in capsys.readouterr().err
    assert main(["index", str(docs), str(beir), "--collection", "kb", "--create", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "inserted 5" in out and "failed 1" in out and "bad.txt" in out
    assert main(["collections"]) == 0
    assert "kb\t5 documents" in capsys.readouterr().out

    assert main(["search", "--collection", "kb", "why does a volcano erupt", "--k", "2"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("  1. volcano.txt")
    assert main(["search", "-c", "kb", "tea", "--mode", "bm25", "--filter", "format=html", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert [h["doc_id"] for h in hits] == ["sub/tea.html"] and "x()" not in hits[0]["text"]

    assert main(["ask", "-c", "kb", "what makes bread rise", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["abstained"] or body["citations"][0]["quote"] == body["answer"]
    assert main(["ask", "-c", "kb", "what makes bread rise", "--budget", "300"]) == 0
    out = capsys.readouterr().out
    assert "context:" in out and "timings:" in out

    assert main(["collections", "create", "other", "--chunk-tokens", "64", "--setting", "fusion=convex"]) == 0
    assert '"chunk_tokens": 64' in capsys.readouterr().out
    assert main(["collections", "show", "kb"]) == 0
    assert json.loads(capsys.readouterr().out)["stats"]["documents"] == 5
    assert main(["collections", "delete", "other", "--yes"]) == 0
    assert main(["collections", "delete", "other", "--yes"]) == 2
    assert main(["search", "-c", "kb", "   "]) == 2  # domain error -> exit code 2


def test_sample_collection_and_try_command(env):
    from attend.commands.serve import try_command
    from engine import engine_session
    from engine.sample import (
        SAMPLE_ANSWER_DOC,
        SAMPLE_COLLECTION,
        SAMPLE_DOCUMENTS,
        SAMPLE_QUESTION,
        ensure_sample,
    )

    assert 10 <= len(SAMPLE_DOCUMENTS) <= 20
    with engine_session(get_settings()) as engine:
        assert ensure_sample(engine).counts() == {"inserted": len(SAMPLE_DOCUMENTS)}
        assert ensure_sample(engine).counts() == {"unchanged": len(SAMPLE_DOCUMENTS)}
        hits = engine.search(SAMPLE_COLLECTION, SAMPLE_QUESTION, k=1).hits
        assert hits[0].doc_id == SAMPLE_ANSWER_DOC
    cmd = try_command("0.0.0.0", 8123, auth=True)
    assert "http://127.0.0.1:8123/v1/collections/sample/answer" in cmd and "$ATTEND_KEY" in cmd
    assert SAMPLE_QUESTION in cmd


def test_shipped_generator_answers_the_sample_question_with_a_citation(env):
    """What `make serve` promises: the shipped weights answer the printed question from the sample
    collection, citing the document that holds the answer, and abstain on an unrelated one."""
    from engine import engine_session
    from engine.sample import (
        SAMPLE_ANSWER_DOC,
        SAMPLE_COLLECTION,
        SAMPLE_DOCUMENTS,
        SAMPLE_QUESTION,
        ensure_sample,
    )

    settings = get_settings().model_copy(update={"generator": "attend-qa"})
    with engine_session(settings) as engine:
        ensure_sample(engine)
        _, result = engine.answer(SAMPLE_COLLECTION, SAMPLE_QUESTION, k=4)
        assert not result.abstained and "Gutenberg" in result.answer
        cite = result.citations[0]
        assert cite.doc_id == SAMPLE_ANSWER_DOC
        text = next(d["text"] for d in SAMPLE_DOCUMENTS if d["id"] == SAMPLE_ANSWER_DOC)
        assert text[cite.doc_char_start:cite.doc_char_end] == result.answer == cite.quote
        _, off_topic = engine.answer(SAMPLE_COLLECTION, "What is the capital of France?", k=4)
        assert off_topic.abstained and not off_topic.citations
