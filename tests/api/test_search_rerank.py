"""The rerank stage over HTTP: ``rerank`` on search and answer requests, a collection's default,
the request that overrides or turns it off, and the names a request may not use."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from toydata import add_toy, make_settings

from api.main import create_app

QUERY = "crust mantle plates volcano lava sunlight"
HIT_KEYS = {"rank", "chunk_id", "doc_id", "title", "text", "char_start", "char_end", "metadata", "scores"}


@pytest.fixture
def client(tmp_path, tiny_qa_dir, tiny_reranker_dir):
    s = make_settings(tmp_path / "data", generator=str(tiny_qa_dir), reranker=str(tiny_reranker_dir),
                      index_save_delay_s=0.2)
    with TestClient(create_app(s)) as c:
        yield c


def _search(client, name="toy", **body):
    r = client.post(f"/v1/collections/{name}/search", json={"query": QUERY, "k": 8, **body})
    assert r.status_code == 200, r.text
    return r.json()


def _without_timings(body):
    return {k: v for k, v in body.items() if k != "timings_ms"}


def test_rerank_orders_hits_by_the_rerankers_score_within_depth(client):
    add_toy(client)
    fused = _search(client)["hits"]
    body = _search(client, rerank={"model": "rr", "depth": 4})
    hits = body["hits"]
    assert [h["rank"] for h in hits] == list(range(1, len(hits) + 1)) and len(hits) == len(fused)
    head, tail = hits[:4], hits[4:]
    scores = [h["rerank_score"] for h in head]
    assert all(isinstance(s, float) for s in scores) and scores == sorted(scores, reverse=True)
    assert len(set(scores)) > 1  # the tiny reranker tells the chunks apart
    assert {h["chunk_id"] for h in head} == {h["chunk_id"] for h in fused[:4]}
    # Past the depth: no rerank score, fused order, first-stage scores kept.
    assert all("rerank_score" not in h for h in tail)
    assert [(h["chunk_id"], h["scores"]) for h in tail] == [(h["chunk_id"], h["scores"]) for h in fused[4:]]
    assert body["timings_ms"]["rerank_ms"] > 0
    # k below the depth: max(k, depth) candidates are re-scored, then the best k are kept.
    top = _search(client, k=2, rerank={"model": "rr", "depth": 4})["hits"]
    assert [h["chunk_id"] for h in top] == [h["chunk_id"] for h in head[:2]]


def test_rerank_weight_blends_with_the_fused_order(client):
    add_toy(client)
    fused = _search(client)["hits"]
    kept = _search(client, rerank={"model": "rr", "depth": 4, "weight": 0})["hits"]
    assert [h["chunk_id"] for h in kept] == [h["chunk_id"] for h in fused]  # weight 0: the fused order ...
    assert all(isinstance(h["rerank_score"], float) for h in kept[:4])  # ... with the reranker's scores shown
    alone = _search(client, rerank={"model": "rr", "depth": 4})["hits"]
    by_score = {h["chunk_id"]: h["rerank_score"] for h in alone[:4]}
    assert {h["chunk_id"]: h["rerank_score"] for h in kept[:4]} == pytest.approx(by_score)


def test_without_rerank_the_response_is_as_before(client):
    add_toy(client)
    plain = _search(client)
    assert all(set(h) == HIT_KEYS for h in plain["hits"]) and "rerank_ms" not in plain["timings_ms"]
    assert set(plain["timings_ms"]) == {"bm25_ms", "encode_ms", "dense_ms", "fusion_ms", "hydrate_ms", "total_ms"}
    for off in (None, {"model": None}, {"model": None, "depth": 10}):
        again = _search(client, rerank=off)
        assert _without_timings(again) == _without_timings(plain)
        assert set(again["timings_ms"]) == set(plain["timings_ms"])


def test_unknown_rerankers_and_bad_settings_are_422(client, tiny_reranker_dir):
    add_toy(client)
    for rerank in ({"model": "nope"}, {"model": str(tiny_reranker_dir.parent)}, {"model": "../rr"}):
        r = client.post("/v1/collections/toy/search", json={"query": QUERY, "rerank": rerank})
        assert r.status_code == 422 and "unknown reranker" in r.json()["detail"], r.text
        assert str(tiny_reranker_dir) not in r.json()["detail"]  # the server's paths stay private
    for rerank in ({"model": "rr", "depth": 0}, {"model": "rr", "depth": 1001}, {"depth": 5}, {"model": "rr", "k": 1},
                   {"model": ""}, "rr", True, {"model": "rr", "weight": 1.5}, {"model": "rr", "weight": -0.1},
                   {"model": "rr", "weight": "half"}):
        r = client.post("/v1/collections/toy/search", json={"query": QUERY, "rerank": rerank})
        assert r.status_code == 422, (rerank, r.text)
    r = client.post("/v1/collections", json={"name": "bad", "settings": {"rerank": {"model": "nope"}}})
    assert r.status_code == 422 and "unknown reranker" in r.json()["detail"]
    r = client.post("/v1/collections/toy/answer", json={"question": QUERY, "rerank": {"model": "nope"}})
    assert r.status_code == 422 and "unknown reranker" in r.json()["detail"]


def test_collection_default_and_request_override(client):
    add_toy(client, "ranked", rerank={"model": "rr", "depth": 3})
    add_toy(client, "plain")
    info = client.get("/v1/collections/ranked").json()
    assert info["settings"]["rerank"] == {"model": "rr", "depth": 3}
    default = _search(client, "ranked")["hits"]
    assert [("rerank_score" in h) for h in default] == [True] * 3 + [False] * (len(default) - 3)
    deeper = _search(client, "ranked", rerank={"model": "rr", "depth": 6})["hits"]
    assert sum("rerank_score" in h for h in deeper) == 6
    off = _search(client, "ranked", rerank={"model": None})
    plain = _search(client, "plain")

    def key(body):
        return [(h["rank"], h["doc_id"], h["text"], h["scores"]) for h in body["hits"]]

    assert key(off) == key(plain) and all(set(h) == HIT_KEYS for h in off["hits"])


def test_answer_packs_the_context_in_rerank_order(client):
    add_toy(client)
    body = {"question": "why do volcanoes erupt", "k": 4}
    plain = client.post("/v1/collections/toy/answer", json=body)
    assert plain.status_code == 200 and not any("rerank" in k for k in plain.json()["timings_ms"])
    search = _search(client, k=4, rerank={"model": "rr", "depth": 8}, query="why do volcanoes erupt")["hits"]
    r = client.post("/v1/collections/toy/answer", json={**body, "rerank": {"model": "rr", "depth": 8}})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["timings_ms"]["retrieval.rerank_ms"] > 0
    ctx = out["context"]["kept"] + out["context"]["cut"]
    by_chunk = {c["chunk_id"]: c for c in ctx}
    for h in search:
        assert by_chunk[h["chunk_id"]]["rank"] == h["rank"]
        assert by_chunk[h["chunk_id"]]["score"] == pytest.approx(h["rerank_score"], rel=1e-5)
    diag = client.post("/v1/collections/toy/diagnose", json={**body, "rerank": {"model": "rr", "depth": 8}})
    assert diag.status_code == 200, diag.text
    assert [c["chunk_id"] for c in sorted(diag.json()["chunks"], key=lambda c: c["rank"])] == [h["chunk_id"] for h in search]
