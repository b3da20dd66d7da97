from __future__ import annotations

import hashlib

from fastapi.testclient import TestClient
from toydata import TOY_DOCS, make_settings

from api.main import create_app
from attend.cli import main

ADMIN, WRITER, READER = "admin-secret", "writer-secret", "reader-secret"


def _keys() -> list[dict]:
    h = lambda k: hashlib.sha256(k.encode()).hexdigest()  # noqa: E731
    return [
        {"hash": h(ADMIN), "scope": "admin", "collections": ["*"]},
        {"hash": h(WRITER), "scope": "write", "collections": ["toy"]},
        {"hash": h(READER), "scope": "read", "collections": ["*"]},
    ]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_keys_scopes_and_collections(tmp_path, tiny_qa_dir):
    settings = make_settings(tmp_path / "data", generator=str(tiny_qa_dir), api_keys=_keys())
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200
        for path in ("/v1/collections", "/metrics"):
            assert client.get(path).status_code == 401
        r = client.get("/v1/collections", headers=bearer("wrong"))
        assert r.status_code == 401 and r.json()["detail"] == "invalid API key"
        assert client.get("/v1/collections", headers={"Authorization": "Basic abc"}).status_code == 401

        for key in (WRITER, READER):
            assert client.post("/v1/collections", json={"name": "toy"}, headers=bearer(key)).status_code == 403
        for name in ("toy", "other"):
            assert client.post("/v1/collections", json={"name": name}, headers=bearer(ADMIN)).status_code == 201

        docs = {"documents": TOY_DOCS[:3]}
        assert client.post("/v1/collections/toy/documents", json=docs, headers=bearer(READER)).status_code == 403
        assert client.post("/v1/collections/toy/documents", json=docs, headers={"X-API-Key": WRITER}).status_code == 200
        r = client.post("/v1/collections/other/documents", json=docs, headers=bearer(WRITER))
        assert r.status_code == 403 and "other" in r.json()["detail"]
        assert client.delete("/v1/collections/toy", headers=bearer(WRITER)).status_code == 403

        q = {"query": "volcano", "mode": "bm25"}
        assert client.post("/v1/collections/toy/search", json=q, headers=bearer(READER)).status_code == 200
        assert client.post("/v1/collections/toy/search", json=q, headers=bearer(WRITER)).status_code == 200
        assert client.post("/v1/collections/other/search", json=q, headers=bearer(WRITER)).status_code == 403
        assert client.post("/v1/collections/toy/search", json=q).status_code == 401
        assert [c["name"] for c in client.get("/v1/collections", headers=bearer(WRITER)).json()] == ["toy"]
        assert [c["name"] for c in client.get("/v1/collections", headers=bearer(READER)).json()] == ["other", "toy"]
        assert client.get("/metrics", headers=bearer(READER)).status_code == 200
        assert client.delete("/v1/collections/other", headers=bearer(ADMIN)).status_code == 204


def test_public_host_without_keys_refuses(tmp_path, tiny_qa_dir):
    settings = make_settings(tmp_path / "data", generator=str(tiny_qa_dir), host="0.0.0.0")
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/v1/collections").status_code == 401
        assert client.post("/v1/collections", json={"name": "x"}, headers=bearer("anything")).status_code == 401


def test_loopback_without_keys_is_open(client):
    assert client.get("/v1/collections").status_code == 200


def test_keys_hash_cli(capsys):
    assert main(["keys", "hash", "s3cret"]) == 0
    assert capsys.readouterr().out.strip() == hashlib.sha256(b"s3cret").hexdigest()
    assert main(["keys", "new", "--scope", "write", "--collections", "docs"]) == 0
    out = capsys.readouterr().out
    key = out.split("key (shown once): ")[1].split()[0]
    assert hashlib.sha256(key.encode()).hexdigest() in out and '"scope": "write"' in out
