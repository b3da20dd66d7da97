"""``POST /v1/collections/{name}/diagnose`` on a tiny model with sharpened attention: every
retrieved chunk reported, the verdicts (cut, not retrieved, abstention) and the API's errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from toydata import TOY_DOCS, add_toy, build_tiny_qa, make_settings, sharpen_attention


@pytest.fixture(scope="module")
def tiny_qa(tmp_path_factory, minilm_dir) -> Path:
    """The API tests' tiny random model with sharpened attention, so shares differ from uniform."""
    from generator.qa_model import GroundedQA
    from retriever.tokenizer import Tokenizer

    path = build_tiny_qa(tmp_path_factory.mktemp("tiny_qa"), minilm_dir)
    model, _ = GroundedQA.load(path)
    sharpen_attention(model)
    return model.save(path, Tokenizer.from_dir(path))


@pytest.fixture
def client(tmp_path, tiny_qa):
    from fastapi.testclient import TestClient

    from api.main import create_app

    with TestClient(create_app(make_settings(tmp_path / "data", generator=str(tiny_qa), index_save_delay_s=0.2))) as c:
        add_toy(c)
        yield c


D = "/v1/collections/toy/diagnose"


def test_route_reports_every_chunk(client):
    r = client.post(D, json={"question": "why do volcanoes erupt", "k": 5, "budget": 512, "mode": "hybrid",
                             "expected_doc_id": "d3", "abstain_threshold": 1.0, "tokens": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert not body["abstained"] and body["answer"]
    chunks = body["chunks"]
    assert [c["rank"] for c in chunks] == [1, 2, 3, 4, 5]
    kept = [c for c in chunks if c["in_context"]]
    assert len(kept) == 5 and sorted(c["context_index"] for c in kept) == list(range(5))
    texts = {d["id"]: d["text"] for d in TOY_DOCS}
    for c in kept:
        assert c["verdict"] == ("used" if c["share"] >= c["uniform_share"] else "ignored")
        assert len(c["share_by_layer_head"]) == body["n_layers"] and len(c["share_by_layer_head"][0]) == body["n_heads"]
        assert np.isclose(np.mean(c["share_by_layer_head"][-1]), c["share"], atol=1e-3)  # last layer
        assert np.isclose(np.mean(c["share_by_layer_head"]), c["share_all_layers"], atol=1e-3)
        assert "".join(c["tokens"]) == texts[c["doc_id"]] == c["text"]
        assert len(c["token_attention"]) == c["n_tokens"]
        assert np.isclose(sum(c["token_attention"]), c["share"], atol=1e-3)
        assert c["uniform_share"] == pytest.approx(c["n_tokens"] / body["prompt_tokens"], abs=1e-4)
    assert 0.0 < sum(c["share"] for c in kept) <= 1.0 + 1e-6  # the question and markers take the rest
    assert body["answer_steps"] >= 2  # [ANS] + at least one copied token
    (expected,) = [c for c in chunks if c["expected"]]
    assert expected["doc_id"] == "d3" and body["expected_chunk_id"] == expected["chunk_id"]
    assert body["verdict"] == expected["verdict"] in ("used", "ignored") and body["cut_reason"] is None
    (top,) = [c for c in chunks if c["most_attended"]]
    assert top["share"] == max(c["share"] for c in kept) and body["most_attended_chunk_id"] == top["chunk_id"]


def test_route_verdicts_cut_not_retrieved_and_abstention(client):
    # a budget holding one chunk: the others are cut for the budget, and so is an expected one of them
    ask = {"question": "volcano crust mantle plates", "k": 4, "budget": 70, "mode": "bm25"}
    body = client.post(D, json=ask).json()
    assert body["verdict"] is None and sum(c["in_context"] for c in body["chunks"]) == 1
    cut = {c["doc_id"]: c["cut_reason"] for c in body["chunks"] if not c["in_context"]}
    assert len(cut) >= 1 and set(cut.values()) == {"budget"}
    kept_doc = next(c["doc_id"] for c in body["chunks"] if c["in_context"])
    body = client.post(D, json={**ask, "expected_doc_id": next(iter(cut))}).json()
    assert body["verdict"] == "cut" and body["cut_reason"] == "budget"
    body = client.post(D, json={**ask, "expected_doc_id": kept_doc}).json()
    assert body["verdict"] in ("used", "ignored") and body["cut_reason"] is None
    # a score floor above every score: everything cut for the floor, nothing attended
    body = client.post(D, json={"question": "why do volcanoes erupt", "k": 3, "score_floor": 10.0,
                                "expected_answer": "MAGMA"}).json()
    assert body["abstained"] and body["verdict"] == "cut" and body["cut_reason"] == "score_floor"
    assert all(c["share"] is None and c["verdict"] == "cut" for c in body["chunks"])
    assert body["most_attended_chunk_id"] is None and body["answer_steps"] == 0
    # a document outside the top k
    body = client.post(D, json={"question": "why do volcanoes erupt", "k": 1, "mode": "bm25",
                                "expected_doc_id": "d7"}).json()
    assert body["verdict"] == "not_retrieved" and body["expected_chunk_id"] is None
    # an abstention is diagnosed from the [ANS] step alone
    body = client.post(D, json={"question": "why do volcanoes erupt", "k": 3, "abstain_threshold": 0.0}).json()
    assert body["abstained"] and body["answer_steps"] == 1 and body["verdict"] is None
    assert sum(c["most_attended"] for c in body["chunks"]) == 1
    assert all(c["verdict"] in ("used", "ignored") for c in body["chunks"])
    # errors are the API's: unknown collection, unknown field
    assert client.post("/v1/collections/nope/diagnose", json={"question": "x"}).status_code == 404
    assert client.post(D, json={"question": "x", "expected": "d1"}).status_code == 422
