"""Answers from a tiny random generator: random, but structurally right (an exact span of a cited
chunk that was in the context, or an explicit abstention)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from toydata import TOY_DOCS, add_toy, make_settings

from api.main import create_app
from generator.answer import ABSTAIN_MESSAGE

A = "/v1/collections/toy/answer"
QUESTIONS = ["why do volcanoes erupt", "how do plants make glucose", "what do Parisian cafés serve"]


def check_structure(body: dict) -> None:
    texts = {d["id"]: d["text"] for d in TOY_DOCS}
    kept = {c["chunk_id"]: c for c in body["context"]["kept"]}
    assert body["context"]["tokens"] <= body["context"]["budget"] - body["context"]["answer_reserve"]
    for key in ("retrieval_ms", "filter_ms", "generate_ms", "total_ms"):
        assert key in body["timings_ms"]
    if body["abstained"]:
        assert body["answer"] is None and body["text"] == ABSTAIN_MESSAGE and body["citations"] == []
        return
    assert body["answer"] and body["text"] == body["answer"]
    assert len(body["citations"]) == 1
    c = body["citations"][0]
    assert c["chunk_id"] in kept and c["quote"] == body["answer"]
    assert kept[c["chunk_id"]]["text"][c["char_start"] : c["char_end"]] == c["quote"]
    assert texts[c["doc_id"]][c["doc_char_start"] : c["doc_char_end"]] == c["quote"]


@pytest.mark.parametrize("mode", ["bm25", "dense", "hybrid"])
def test_answers_are_spans_of_cited_context(client, mode):
    add_toy(client)
    for q in QUESTIONS:
        r = client.post(A, json={"question": q, "k": 4, "mode": mode, "abstain_threshold": 1.0})
        assert r.status_code == 200, r.text
        body = r.json()
        assert not body["abstained"]  # threshold 1.0: the model never abstains by itself
        check_structure(body)


def test_budget_cuts_and_reasons(client):
    add_toy(client)
    r = client.post(A, json={"question": "volcano crust mantle plates", "k": 8, "budget": 70, "mode": "hybrid"})
    assert r.status_code == 200, r.text
    body = r.json()
    check_structure(body)
    ctx = body["context"]
    assert ctx["budget"] == 70 and ctx["cut"] and {c["reason"] for c in ctx["cut"]} == {"budget"}
    assert len(ctx["kept"]) + len(ctx["cut"]) == 8
    # a score floor above every score cuts everything: an explicit abstention
    r = client.post(A, json={"question": "why do volcanoes erupt", "k": 3, "score_floor": 10.0})
    body = r.json()
    assert r.status_code == 200 and body["abstained"] and body["text"] == ABSTAIN_MESSAGE
    assert {c["reason"] for c in body["context"]["cut"]} == {"score_floor"} and body["context"]["kept"] == []
    check_structure(body)
    # filters reach retrieval: only food chunks can be kept
    body = client.post(A, json={"question": "espresso", "filters": {"topic": "food"}, "abstain_threshold": 1.0}).json()
    assert {c["doc_id"] for c in body["context"]["kept"]} == {"d7"}
    check_structure(body)
    # abstain_threshold 0: the model always abstains
    body = client.post(A, json={"question": "why do volcanoes erupt", "abstain_threshold": 0.0}).json()
    assert body["abstained"] and body["context"]["kept"]


def parse_sse(text: str) -> list[tuple[str, str]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], fields["data"]))
    return events


@pytest.mark.parametrize("abstain", [False, True])
def test_streaming_sse(client, abstain):
    add_toy(client)
    req = {"question": "why do volcanoes erupt", "k": 3, "abstain_threshold": 0.0 if abstain else 1.0}
    plain = client.post(A, json=req).json()
    with client.stream("POST", A, json={**req, "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(r.read().decode())
    assert [e for e, _ in events[:-1]] == ["token"] * (len(events) - 1) and events[-1][0] == "done"
    pieces = [json.loads(d) for _, d in events[:-1]]
    done = json.loads(events[-1][1])
    check_structure(done)
    assert "".join(pieces) == done["text"]
    assert len(pieces) >= 1
    strip = lambda b: {k: v for k, v in b.items() if k != "timings_ms"}  # noqa: E731
    assert strip(done) == strip(plain)  # same seedless model, same retrieval: same answer


def test_stream_errors_are_plain_json(client):
    add_toy(client)
    r = client.post(A, json={"question": "why", "budget": 3, "stream": True})
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/json")


def test_missing_generator_is_503_and_search_still_works(tmp_path):
    settings = make_settings(tmp_path / "data", generator=str(tmp_path / "no-such-model"))
    with TestClient(create_app(settings)) as client:
        add_toy(client)
        r = client.post(A, json={"question": "why do volcanoes erupt"})
        assert r.status_code == 503 and "no-such-model" in r.json()["detail"]
        assert client.post("/v1/collections/toy/search", json={"query": "volcano"}).status_code == 200
