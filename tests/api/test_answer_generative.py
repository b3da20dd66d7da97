"""Generative answers through the API on a tiny random chat model: per request and per collection,
the response contract (sentences, citations, unsupported), true streaming, diagnose, and 422s."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from toydata import TOY_DOCS, add_toy, make_settings

from api.main import create_app
from generator.citations import clean_answer

A = "/v1/collections/toy/answer"


@pytest.fixture
def gclient(tmp_path, tiny_qa_dir, tiny_chat_gguf):
    s = make_settings(tmp_path / "data", generator=str(tiny_qa_dir), generative=str(tiny_chat_gguf),
                      generator_quant="none", index_save_delay_s=0.2)
    with TestClient(create_app(s)) as c:
        yield c


def check_generative(body: dict) -> None:
    texts = {d["id"]: d["text"] for d in TOY_DOCS}
    kept = {c["chunk_id"]: c for c in body["context"]["kept"]}
    assert body["kind"] == "generative"
    assert body["context"]["tokens"] <= body["context"]["budget"] - body["context"]["answer_reserve"]
    if body["abstained"]:
        assert body["answer"] is None
        return
    assert body["text"] == body["answer"]
    assert body["unsupported"] == (not any(s["supported"] for s in body["sentences"]))
    for s in body["sentences"]:
        assert body["answer"][s["char_start"]:s["char_end"]].strip()
        assert all(cid in kept for cid in s["chunk_ids"]) and len(s["chunk_ids"]) == len(s["sources"])
    for c in body["citations"]:
        assert c["chunk_id"] in kept and 1 <= c["source"] <= len(kept)
        assert kept[c["chunk_id"]]["text"][c["char_start"]:c["char_end"]] == c["quote"]
        assert texts[c["doc_id"]][c["doc_char_start"]:c["doc_char_end"]] == c["quote"]


def test_generator_per_request(gclient):
    add_toy(gclient)
    r = gclient.post(A, json={"question": "why do volcanoes erupt", "k": 3, "budget": 1024, "generator": "generative"})
    assert r.status_code == 200, r.text
    body = r.json()
    check_generative(body)
    assert body["generator"].endswith(".gguf")
    assert "first_token_ms" in body["timings_ms"] and "verify_ms" in body["timings_ms"]
    r = gclient.post(A, json={"question": "why do volcanoes erupt", "k": 3})  # the server default
    assert r.status_code == 200 and r.json()["kind"] == "extractive" and r.json()["sentences"] == []


def test_generator_per_collection_and_request_override(gclient):
    add_toy(gclient, generator="generative")
    assert gclient.get("/v1/collections/toy").json()["settings"]["generator"] == "generative"
    r = gclient.post(A, json={"question": "what do cafés serve", "budget": 1024})
    assert r.status_code == 200 and r.json()["kind"] == "generative"
    r = gclient.post(A, json={"question": "what do cafés serve", "generator": "extractive"})
    assert r.status_code == 200 and r.json()["kind"] == "extractive"


def test_unknown_generator_is_422_and_stores_nothing(gclient):
    add_toy(gclient)
    r = gclient.post(A, json={"question": "why", "generator": "/etc/passwd"})
    assert r.status_code == 422 and "unknown generator" in r.json()["detail"]
    r = gclient.post("/v1/collections", json={"name": "bad", "settings": {"generator": "gpt-9"}})
    assert r.status_code == 422 and "unknown generator" in r.json()["detail"]
    assert gclient.get("/v1/collections/bad").status_code == 404


def test_budget_over_the_window_is_422(gclient):
    add_toy(gclient)
    r = gclient.post(A, json={"question": "why", "generator": "generative", "budget": 4096})
    assert r.status_code == 422 and "context window of 2048" in r.json()["detail"]


def test_stream_sends_tokens_then_the_parsed_answer(gclient):
    add_toy(gclient)
    body = {"question": "why do volcanoes erupt", "k": 3, "budget": 1024, "generator": "generative", "stream": True}
    with gclient.stream("POST", A, json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = "".join(r.iter_text())
    events = [e for e in raw.split("\n\n") if e.strip()]
    kinds = [e.split("\n")[0].removeprefix("event: ") for e in events]
    assert kinds[-1] == "done" and set(kinds[:-1]) <= {"token"}
    tokens = [json.loads(e.split("\n")[1].removeprefix("data: ")) for e in events[:-1]]
    done = json.loads(events[-1].split("\n")[1].removeprefix("data: "))
    check_generative(done)
    assert len(tokens) > 1  # pieces as they were generated, not one block
    if not done["abstained"]:
        assert clean_answer("".join(tokens)) == done["answer"]


def test_diagnose_a_generative_answer(gclient):
    add_toy(gclient)
    r = gclient.post("/v1/collections/toy/diagnose", json={
        "question": "why do volcanoes erupt", "k": 3, "budget": 1024, "generator": "generative",
        "expected_doc_id": "d3", "tokens": True,
    })
    assert r.status_code == 200, r.text
    d = r.json()
    inside = [c for c in d["chunks"] if c["in_context"]]
    assert d["n_layers"] == 2 and d["n_heads"] == 4 and inside
    if d["answer_steps"]:
        assert 0 < sum(c["share"] for c in inside) <= 1.0 + 1e-6
        for c in inside:
            assert len(c["share_by_layer_head"]) == 2 and len(c["share_by_layer_head"][0]) == 4
            assert c["verdict"] in ("used", "ignored")
            assert "".join(c["tokens"]) == c["text"] and len(c["token_attention"]) == len(c["tokens"])
    assert d["verdict"] in ("not_retrieved", "cut", "ignored", "used")


def test_html_report_of_a_generative_diagnosis(tmp_path, tiny_qa_dir, tiny_chat_gguf):
    from engine.engine import Engine
    from eval.diagnose_report import write_html
    from generator.diagnosis import diagnose_answer
    from index.store import Store

    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    engine = Engine(store, data_dir=tmp_path, generator=str(tiny_chat_gguf), generator_quant="none")
    try:
        engine.create_collection("toy")
        engine.upsert_documents("toy", TOY_DOCS)
        name = engine.resolve_generator(None, "toy")
        found, result = engine.answer("toy", "why do volcanoes erupt", k=3, budget=1024, generator=name)
        diag = diagnose_answer(engine.answerer(name), "why do volcanoes erupt", found.hits, result,
                               expected_doc_id="d3")
        page = write_html(diag, tmp_path / "r.html").read_text()
    finally:
        engine.close()
        store.close()
    assert diag.prompt is not None and diag.prompt.causal and diag.n_layers == 2
    for c in diag.in_context:
        assert "".join(piece for _, piece in diag.chunk_pieces(c)) == c.text
    assert "volcano" in page.lower() and "<html" in page.lower()
