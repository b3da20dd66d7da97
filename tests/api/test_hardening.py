"""Regressions of issue 18's findings: settings that poison a collection, a lone surrogate in a
document, an upload named with a path, the 405 Allow header, and the error responses the spec
declares."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from toydata import add_toy

from api.main import create_app
from common.errors import InvalidInput
from index.bm25 import VARIANTS
from index.collection import BM25_VARIANTS, DENSE_KINDS, IndexSettings
from index.dense import KINDS


@pytest.mark.parametrize(
    "bad, named",
    [
        ({"bm25_variant": "-"}, "bm25_variant"),
        ({"dense_kind": ""}, "dense_kind"),
        ({"dense_kind": "annoy"}, "dense_kind"),
        ({"bm25_k1": 2.2e307}, "bm25_k1"),
        ({"weights": [-1.0, 1.0]}, "weights"),
        ({"chunk_tokens": 64, "chunk_overlap": 64}, "chunk_overlap"),
    ],
)
def test_bad_settings_are_refused_at_creation(client, bad, named):
    r = client.post("/v1/collections", json={"name": "bad", "settings": bad})
    assert r.status_code == 422, r.text
    assert named in r.json()["detail"]
    assert client.get("/v1/collections/bad").status_code == 404


def test_settings_tables_are_the_index_codes_own():
    assert set(BM25_VARIANTS) == set(VARIANTS) and tuple(DENSE_KINDS) == tuple(KINDS)
    for bad in ({"bm25_variant": "-"}, {"dense_kind": ""}, {"bm25_b": 1.5}, {"bm25_k1": 0.0}):
        with pytest.raises(InvalidInput):
            IndexSettings.from_settings(bad)
    assert IndexSettings.from_settings({"bm25_variant": "Okapi", "dense_kind": "flat"}).dense_kind == "flat"


def test_a_stored_collection_that_cannot_open_is_409_and_deletable(settings):
    with TestClient(create_app(settings)) as client:
        add_toy(client)
        # Written past the API's validation, as rows from before it (or edited by hand) are.
        client.app.state.engine.store.create_collection(
            "poisoned", {"bm25_variant": "-", "chunk_tokens": 200, "chunk_overlap": 40}
        )
    with TestClient(create_app(settings)) as client:  # the server still starts
        for method, path, kw in [
            ("get", "/v1/collections/poisoned", {}),
            ("post", "/v1/collections/poisoned/search", {"json": {"query": "volcano"}}),
            ("post", "/v1/collections/poisoned/documents", {"json": {"documents": [{"id": "a", "text": "b"}]}}),
            ("delete", "/v1/collections/poisoned/documents/a", {}),
        ]:
            r = client.request(method, path, **kw)
            assert r.status_code == 409, (path, r.text)
            assert "bm25_variant" in r.json()["detail"] and "poisoned" in r.json()["detail"]
        assert client.post("/v1/collections/toy/search", json={"query": "volcano"}).status_code == 200
        assert "poisoned" in [c["name"] for c in client.get("/v1/collections").json()]
        assert client.delete("/v1/collections/poisoned").status_code == 204
        assert client.get("/v1/collections/poisoned").status_code == 404
        assert client.get("/v1/collections/toy").json()["stats"]["documents"] > 0


def _post_raw(client, path, body: str):
    return client.post(path, content=body.encode("ascii"), headers={"content-type": "application/json"})


def test_lone_surrogate_fails_its_document_only(client):
    client.post("/v1/collections", json={"name": "u"})
    body = '{"documents": [{"id": "sur", "text": "a\\udc00b"}, {"id": "ok", "text": "fine text"}]}'
    r = _post_raw(client, "/v1/collections/u/documents", body)
    assert r.status_code == 200, r.text
    by_id = {o["id"]: o for o in r.json()["outcomes"]}
    assert by_id["ok"]["status"] == "inserted"
    assert by_id["sur"]["status"] == "failed"
    assert "text" in by_id["sur"]["error"] and "'sur'" in by_id["sur"]["error"] and "surrogate" in by_id["sur"]["error"]
    assert client.get("/v1/collections/u/documents/ok").status_code == 200
    assert client.get("/v1/collections/u/documents/sur").status_code == 404


@pytest.mark.parametrize(
    "doc",
    [
        '{"id": "t", "text": "ok", "title": "\\ud800"}',
        '{"id": "m", "text": "ok", "metadata": {"k": "\\udfff"}}',
        '{"id": "\\udc00", "text": "ok"}',
    ],
)
def test_lone_surrogates_elsewhere_are_422_not_500(client, doc):
    client.post("/v1/collections", json={"name": "u"})
    for background in ("false",):  # a background batch reports it in its job errors instead
        r = _post_raw(client, f"/v1/collections/u/documents?background={background}", f'{{"documents": [{doc}]}}')
        assert r.status_code == 422, r.text
        assert "surrogate" in r.json()["outcomes"][0]["error"]
        json.dumps(r.json(), ensure_ascii=False).encode("utf-8")  # the reply itself is valid UTF-8


def test_upload_id_is_the_base_name(client, tmp_path):
    client.post("/v1/collections", json={"name": "f"})
    r = client.post(
        "/v1/collections/f/documents/upload",
        files=[("files", ("../../../tmp/evil-attend-test.txt", b"an uploaded note about volcanoes", "text/plain")),
               ("files", ("C:\\docs\\win.md", b"# Title\n\nwindows path", "text/markdown"))],
    )
    assert r.status_code == 200, r.text
    assert [o["id"] for o in r.json()["outcomes"]] == ["evil-attend-test.txt", "win.md"]
    assert client.get("/v1/collections/f/documents/evil-attend-test.txt").json()["metadata"]["source"] == "evil-attend-test.txt"


def test_405_allow_names_every_method_of_the_resource(client):
    for path, allow in [
        ("/v1/collections", "GET, POST"),
        ("/v1/collections/x", "GET, DELETE"),
        ("/v1/collections/x/documents", "GET, POST"),
        ("/v1/collections/x/documents/a/b", "GET, DELETE"),
        ("/v1/collections/x/documents/upload", "POST"),
    ]:
        r = client.options(path)
        assert r.status_code == 405 and r.headers["allow"] == allow, (path, r.headers.get("allow"))


def test_spec_declares_the_error_bodies_really_sent(client):
    spec = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if not path.startswith("/v1/"):
                continue
            for code in ("401", "403", "413", "422", "503"):
                ref = op["responses"][code]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorOut"), (method, path, code)
            if "{" in path:
                assert "404" in op["responses"], (method, path)
    r = client.get("/v1/collections/x/documents?offset=-1")
    assert r.status_code == 422 and isinstance(r.json()["detail"], str) and r.json()["errors"][0]["loc"]
