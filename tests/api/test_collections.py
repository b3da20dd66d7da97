from __future__ import annotations

from toydata import TOY_DOCS, add_toy


def test_create_list_get_delete(client):
    r = client.post("/v1/collections", json={"name": "notes", "settings": {"chunk_tokens": 64, "chunk_overlap": 8, "fusion": "convex"}})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == "notes"
    assert body["settings"]["chunk_tokens"] == 64 and body["settings"]["fusion"] == "convex"
    assert body["stats"]["documents"] == 0
    assert [c["name"] for c in client.get("/v1/collections").json()] == ["notes"]
    add_toy(client, "toy")
    got = client.get("/v1/collections/toy").json()
    assert got["stats"]["documents"] == len(TOY_DOCS)
    assert got["stats"]["chunks"] == got["stats"]["bm25_chunks"] == got["stats"]["dense_chunks"] >= len(TOY_DOCS)
    assert client.delete("/v1/collections/toy").status_code == 204
    assert client.get("/v1/collections/toy").status_code == 404
    assert [c["name"] for c in client.get("/v1/collections").json()] == ["notes"]


def test_duplicate_is_409_and_unknown_is_404(client):
    assert client.post("/v1/collections", json={"name": "a"}).status_code == 201
    r = client.post("/v1/collections", json={"name": "a"})
    assert r.status_code == 409 and "already exists" in r.json()["detail"]
    for method, path in [("get", "/v1/collections/nope"), ("delete", "/v1/collections/nope")]:
        r = getattr(client, method)(path)
        assert r.status_code == 404 and "nope" in r.json()["detail"]


def test_bad_settings_are_422(client):
    for body in (
        {"name": "bad name!"},
        {"name": "x", "settings": {"chunk_tokens": 5}},
        {"name": "x", "settings": {"chunk_tokens": 32, "chunk_overlap": 40}},
        {"name": "x", "settings": {"no_such_setting": 1}},
        {"name": "x", "settings": {"fusion": "max"}},
        {"name": "x", "settings": {"encoder": "no-such-encoder"}},
    ):
        r = client.post("/v1/collections", json=body)
        assert 400 <= r.status_code < 500 and r.status_code != 404, (body, r.status_code, r.text)
        assert isinstance(r.json()["detail"], str)
    assert client.get("/v1/collections").json() == []


def test_openapi_docs_served(client):
    spec = client.get("/openapi.json").json()
    for path in ("/v1/collections", "/v1/collections/{name}/search", "/v1/collections/{name}/answer",
                 "/v1/collections/{name}/documents", "/v1/collections/{name}/documents/upload", "/v1/jobs/{job_id}"):
        assert path in spec["paths"]
    assert client.get("/docs").status_code == 200
