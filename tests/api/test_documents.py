from __future__ import annotations

import pytest
from toydata import TOY_DOCS, add_toy


def test_upsert_outcomes_get_list_delete(db_client):
    client = db_client
    add_toy(client)
    docs = [
        {"id": "d1", "title": "Photosynthesis", "text": TOY_DOCS[0]["text"], "metadata": TOY_DOCS[0]["metadata"]},  # same
        {"id": "d2", "title": "Chlorophyll", "text": "Chlorophyll reflects green light.", "metadata": {"topic": "bio"}},  # changed
        {"id": "new", "text": "A brand new document about glaciers carving valleys."},
        {"id": "empty", "text": "   "},
        {"id": "nul", "text": "bad \x00 text"},
        {"id": 7, "text": "numeric ids are accepted as strings"},
        {"text": "no id"},
        {"id": "bad-meta", "text": "metadata must be an object", "metadata": [1, 2]},
    ]
    r = client.post("/v1/collections/toy/documents", json={"documents": docs})
    assert r.status_code == 200, r.text
    out = r.json()
    status = {o["id"]: o["status"] for o in out["outcomes"]}
    assert status["d1"] == "unchanged" and status["d2"] == "updated" and status["new"] == "inserted"
    assert status["7"] == "inserted"
    assert status["empty"] == status["nul"] == status["bad-meta"] == "failed"
    assert sum(o["status"] == "failed" for o in out["outcomes"]) == 4
    assert all(o["error"] for o in out["outcomes"] if o["status"] == "failed")
    assert out["counts"] == {"unchanged": 1, "updated": 1, "inserted": 2, "failed": 4}

    d = client.get("/v1/collections/toy/documents/d2").json()
    assert d["text"] == "Chlorophyll reflects green light." and d["metadata"] == {"topic": "bio"} and d["chunk_ids"]
    listed = client.get("/v1/collections/toy/documents", params={"limit": 100}).json()
    assert [x["id"] for x in listed] == [x["id"] for x in TOY_DOCS] + ["new", "7"]
    assert client.get("/v1/collections/toy").json()["stats"]["documents"] == len(TOY_DOCS) + 2

    r = client.delete("/v1/collections/toy/documents/new")
    assert r.status_code == 200 and r.json()["chunks_removed"] >= 1
    assert client.get("/v1/collections/toy/documents/new").status_code == 404
    assert client.delete("/v1/collections/toy/documents/new").status_code == 404
    hits = client.post("/v1/collections/toy/search", json={"query": "glaciers carving valleys", "mode": "bm25"}).json()["hits"]
    assert all(h["doc_id"] != "new" for h in hits)
    stats = client.get("/v1/collections/toy").json()["stats"]
    assert stats["chunks"] == stats["bm25_chunks"] == stats["dense_chunks"]


def test_all_failed_batch_is_422_and_stores_nothing(client):
    add_toy(client)
    r = client.post("/v1/collections/toy/documents", json={"documents": [{"id": "e", "text": ""}, {"id": "f", "text": 3}]})
    assert r.status_code == 422
    body = r.json()
    assert "no document was stored" in body["detail"] and [o["status"] for o in body["outcomes"]] == ["failed", "failed"]
    assert client.get("/v1/collections/toy").json()["stats"]["documents"] == len(TOY_DOCS)


def test_upload_files(client):
    client.post("/v1/collections", json={"name": "files"})
    html = b"""<html><head><title>Tea</title><style>p{color:red}</style><script>var x = 'hidden';</script></head>
    <body><h1>Green tea</h1><p>Green tea leaves are steamed &amp; dried.</p></body></html>"""
    files = [
        ("files", ("notes/tea.html", html, "text/html")),
        ("files", ("readme.md", b"# Kites\n\nKites fly on **wind**.", "text/markdown")),
        ("files", ("plain.txt", "Caf\u00e9 au lait.".encode(), "text/plain")),
        ("files", ("latin1.txt", "Caf\u00e9".encode("latin-1"), "text/plain")),
        ("files", ("image.png", b"\x89PNG\r\n", "image/png")),
        ("files", ("empty.txt", b"   ", "text/plain")),
    ]
    r = client.post("/v1/collections/files/documents/upload", files=files, data={"metadata": '{"batch": 1}'})
    assert r.status_code == 200, r.text
    status = {o["id"]: (o["status"], o["error"]) for o in r.json()["outcomes"]}
    assert "notes/tea.html" not in status  # ids of uploads are base names (issue 18)
    assert status["tea.html"][0] == status["readme.md"][0] == status["plain.txt"][0] == "inserted"
    assert status["latin1.txt"][0] == "failed" and "UTF-8" in status["latin1.txt"][1]
    assert status["image.png"][0] == "failed" and "unsupported" in status["image.png"][1]
    assert status["empty.txt"][0] == "failed"
    tea = client.get("/v1/collections/files/documents/tea.html").json()
    assert tea["title"] == "Tea"
    assert "Green tea leaves are steamed & dried." in tea["text"]
    assert "hidden" not in tea["text"] and "color" not in tea["text"] and "<" not in tea["text"]
    assert tea["metadata"] == {"batch": 1, "source": "tea.html", "format": "html"}
    md = client.get("/v1/collections/files/documents/readme.md").json()
    assert md["title"] == "Kites" and md["text"] == "# Kites\n\nKites fly on **wind**."
    r = client.post("/v1/collections/files/documents/upload", files=files[:1], data={"metadata": "[1]"})
    assert r.status_code == 422


@pytest.mark.parametrize("forced", [True, False])
def test_large_batch_runs_as_a_job(db_client, forced):
    client = db_client
    client.app.state.settings.background_threshold = 4
    client.post("/v1/collections", json={"name": "big"})
    docs = [{"id": f"doc-{i}", "text": f"Background document number {i} about rivers and lakes."} for i in range(6)]
    docs.insert(2, {"id": "bad", "text": ""})
    params = {"background": "true"} if forced else {}
    r = client.post("/v1/collections/big/documents", json={"documents": docs}, params=params)
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["total"] == 7 and job["status"] in ("queued", "running", "done")
    client.app.state.jobs.wait(timeout=120)
    job = client.get(f"/v1/jobs/{job['id']}").json()
    assert job["status"] == "done" and job["done"] == 7 and job["progress"] == 1.0
    assert [e["doc_id"] for e in job["errors"]] == ["bad"] and job["errors"][0]["reason"]
    assert client.get("/v1/collections/big").json()["stats"]["documents"] == 6
    assert [j["id"] for j in client.get("/v1/collections/big/jobs").json()] == [job["id"]]
    # small batches stay synchronous unless asked
    r = client.post("/v1/collections/big/documents", json={"documents": docs[:2]})
    assert r.status_code == 200
    assert client.get("/v1/jobs/no-such-job").status_code == 404
