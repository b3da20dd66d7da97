"""A sweep of bad inputs: each gets a 4xx with a JSON ``detail`` message, none a 500, and the
collection's content is exactly what it was before."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from toydata import add_toy, make_settings

from api.main import create_app

S, A, D = "/v1/collections/toy/search", "/v1/collections/toy/answer", "/v1/collections/toy/documents"
BIG = "x " * 20_000  # 40 kB, over the 16 kB limit below

BAD_REQUESTS = [
    # (method, path, kwargs, expected status or None for any 4xx)
    ("post", "/v1/collections/nope/search", {"json": {"query": "volcano"}}, 404),
    ("post", "/v1/collections/nope/answer", {"json": {"question": "volcano"}}, 404),
    ("post", "/v1/collections/nope/documents", {"json": {"documents": [{"id": "a", "text": "b"}]}}, 404),
    ("get", "/v1/collections/toy/documents/nope", {}, 404),
    ("delete", "/v1/collections/toy/documents/nope", {}, 404),
    ("get", "/v1/jobs/nope", {}, 404),
    ("post", S, {"content": b'{"query": "volcano", ', "headers": {"content-type": "application/json"}}, 422),
    ("post", S, {"content": b"[1, 2]", "headers": {"content-type": "application/json"}}, 422),
    ("post", S, {"content": b"query=volcano", "headers": {"content-type": "text/plain"}}, None),
    ("post", S, {"content": b'{"query": "volcano", "k": NaN}', "headers": {"content-type": "application/json"}}, 422),
    ("post", S, {"json": {}}, 422),
    ("post", S, {"json": {"query": 123}}, 422),
    ("post", S, {"json": {"query": ""}}, 422),
    ("post", S, {"json": {"query": "   "}}, 422),
    ("post", S, {"json": {"query": "volcano", "k": "many"}}, 422),
    ("post", S, {"json": {"query": "volcano", "k": 0}}, 422),
    ("post", S, {"json": {"query": "volcano", "k": 1_000_000}}, 422),
    ("post", S, {"json": {"query": "volcano", "mode": "semantic"}}, 422),
    ("post", S, {"json": {"query": "volcano", "filters": "topic=geo"}}, 422),
    ("post", S, {"json": {"query": "volcano", "filters": {"topic": {"$regex": "g"}}}}, 422),
    ("post", S, {"json": {"query": "volcano", "kk": 3}}, 422),
    ("post", S, {"content": json.dumps({"query": BIG}).encode(), "headers": {"content-type": "application/json"}}, 413),
    ("post", A, {"json": {"question": ""}}, 422),
    ("post", A, {"json": {"question": "why do volcanoes erupt", "budget": 5}}, 422),
    ("post", A, {"json": {"question": "why do volcanoes erupt", "budget": 0}}, 422),
    ("post", A, {"json": {"question": "why do volcanoes erupt", "budget": 100_000}}, 422),
    ("post", A, {"json": {"question": "why do volcanoes erupt", "k": 0}}, 422),
    ("post", A, {"json": {"question": "why do volcanoes erupt", "k": 5000}}, 422),
    ("post", A, {"json": {"question": "why do volcanoes erupt", "score_floor": "high"}}, 422),
    ("post", A, {"content": b'{"question": "why", "score_floor": Infinity}', "headers": {"content-type": "application/json"}}, 422),
    ("post", A, {"json": {"question": "why do volcanoes erupt", "stream": "maybe"}}, 422),
    ("post", D, {"json": {"documents": []}}, 422),
    ("post", D, {"json": {"documents": "d1"}}, 422),
    ("post", D, {"json": {"documents": [1, 2]}}, 422),
    ("post", D, {"json": {"documents": [{"id": "d1", "text": ""}]}}, 422),  # would blank d1: refused
    ("post", D, {"json": {"documents": [{"id": "d1", "text": 5}]}}, 422),
    ("post", D, {"json": {"documents": [{"id": "x" * 600, "text": "long id"}]}}, 422),
    ("post", D, {"json": {"documents": [{"id": "d1", "text": BIG}]}}, 413),
    ("post", D + "/upload", {"data": {"metadata": "{}"}}, 422),
    ("post", D + "/upload", {"files": [("files", ("d1.bin", b"\x00\x01", "application/octet-stream"))]}, 422),
    ("post", "/v1/collections", {"json": {"name": "toy"}}, 409),
    ("post", "/v1/collections", {"json": {"name": "x", "settings": {"chunk_tokens": "big"}}}, 422),
    ("get", "/v1/collections/toy/documents", {"params": {"limit": 0}}, 422),
]


def _snapshot(client: TestClient) -> dict:
    docs = client.get(D, params={"limit": 1000}).json()
    full = {d["id"]: client.get(f"{D}/{d['id']}").json() for d in docs}
    hits = client.post(S, json={"query": "volcano crust plates", "k": 8}).json()["hits"]
    return {
        "stats": client.get("/v1/collections/toy").json()["stats"],
        "docs": {k: (v["text"], v["title"], v["metadata"], v["chunk_ids"], v["content_hash"]) for k, v in full.items()},
        "hits": [(h["doc_id"], h["chunk_id"]) for h in hits],
        "collections": [c["name"] for c in client.get("/v1/collections").json()],
    }


@pytest.fixture
def small_client(tmp_path, tiny_qa_dir):
    settings = make_settings(tmp_path / "data", generator=str(tiny_qa_dir), max_request_bytes=16_000)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def test_bad_inputs_get_4xx_and_change_nothing(small_client):
    client = small_client
    add_toy(client)
    before = _snapshot(client)
    failures = []
    for method, path, kwargs, expected in BAD_REQUESTS:
        r = getattr(client, method)(path, **kwargs) if method != "post" else client.post(path, **kwargs)
        ok = 400 <= r.status_code < 500 and (expected is None or r.status_code == expected)
        try:
            detail = r.json().get("detail")
        except ValueError:
            detail = None
        if not ok or not isinstance(detail, str) or not detail:
            failures.append((method, path, str(kwargs)[:120], r.status_code, r.text[:200]))
    assert not failures, "\n".join(map(str, failures))
    assert _snapshot(client) == before


def test_chunked_oversize_body_is_413(small_client):
    client = small_client
    add_toy(client)
    before = _snapshot(client)

    def body():
        yield b'{"documents": [{"id": "huge", "text": "'
        for _ in range(100):
            yield b"y" * 1000
        yield b'"}]}'

    r = client.post(D, content=body(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    assert _snapshot(client) == before
