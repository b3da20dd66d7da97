from __future__ import annotations

import pytest
from toydata import TOY_DOCS, add_toy


@pytest.mark.parametrize("mode", ["bm25", "dense", "hybrid"])
def test_search_modes_return_hits_with_scores_and_offsets(client, mode):
    add_toy(client)
    r = client.post("/v1/collections/toy/search", json={"query": "why do volcanoes erupt lava", "k": 3, "mode": mode})
    assert r.status_code == 200, r.text
    body = r.json()
    hits = body["hits"]
    assert 1 <= len(hits) <= 3 and hits[0]["doc_id"] == "d3"
    assert [h["rank"] for h in hits] == list(range(1, len(hits) + 1))
    texts = {d["id"]: d["text"] for d in TOY_DOCS}
    for h in hits:
        assert h["text"] == texts[h["doc_id"]][h["char_start"] : h["char_end"]]
        assert h["scores"]["fused"] is not None
        if mode == "bm25":
            assert h["scores"]["dense"] is None and h["scores"]["bm25"] == h["scores"]["fused"]
        if mode == "dense":
            assert h["scores"]["bm25"] is None and h["scores"]["dense"] == h["scores"]["fused"]
    if mode == "hybrid":
        assert hits[0]["scores"]["bm25"] is not None and hits[0]["scores"]["dense"] is not None
    assert body["timings_ms"]["total_ms"] > 0


def test_search_filters(client):
    add_toy(client)
    q = {"query": "crust mantle plates sunlight", "k": 10, "mode": "hybrid"}
    geo = client.post("/v1/collections/toy/search", json={**q, "filters": {"topic": "geo"}}).json()["hits"]
    assert geo and {h["metadata"]["topic"] for h in geo} == {"geo"}
    either = client.post("/v1/collections/toy/search", json={**q, "filters": {"topic": {"$in": ["bio", "food"]}}}).json()["hits"]
    assert either and {h["metadata"]["topic"] for h in either} <= {"bio", "food"}
    none = client.post("/v1/collections/toy/search", json={**q, "filters": {"topic": "nothing"}}).json()
    assert none["hits"] == []
    r = client.post("/v1/collections/toy/search", json={**q, "filters": {"topic": {"$gt": 1}}})
    assert r.status_code == 422 and "$gt" in r.json()["detail"]
