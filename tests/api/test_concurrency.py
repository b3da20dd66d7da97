"""Searches keep working while a background ingestion job writes (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading

from toydata import TOY_DOCS, add_toy


def test_searches_during_background_ingestion(db_client):
    client = db_client
    client.app.state.settings.ingest_batch_size = 8  # many small transactions
    client.app.state.jobs.batch_size = 8
    add_toy(client)
    docs = [{"id": f"bg-{i}", "text": f"Rivers carry sediment number {i} to the delta where it settles.",
             "metadata": {"topic": "geo"}} for i in range(120)]
    job_done = threading.Event()
    results: list[tuple[int, bool, str]] = []  # (status, job finished when the search ended, detail)
    lock = threading.Lock()

    def searcher(mode: str) -> None:
        while not job_done.is_set():
            r = client.post("/v1/collections/toy/search", json={"query": "volcano erupts lava sediment delta", "k": 5, "mode": mode})
            with lock:
                results.append((r.status_code, job_done.is_set(), r.text[:200]))

    threads = [threading.Thread(target=searcher, args=(m,)) for m in ("bm25", "dense", "hybrid")]
    for t in threads:
        t.start()
    try:
        r = client.post("/v1/collections/toy/documents", json={"documents": docs}, params={"background": "true"})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        client.app.state.jobs.wait(timeout=300)
    finally:
        job_done.set()
        for t in threads:
            t.join()
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "done" and job["done"] == len(docs) and job["errors"] == []
    bad = [x for x in results if x[0] != 200]
    assert not bad, bad[:3]
    assert any(not finished for _, finished, _ in results), "no search overlapped the ingestion"
    stats = client.get("/v1/collections/toy").json()["stats"]
    assert stats["documents"] == len(TOY_DOCS) + len(docs)
    assert stats["chunks"] == stats["bm25_chunks"] == stats["dense_chunks"]
    hits = client.post("/v1/collections/toy/search", json={"query": "sediment number 77", "mode": "bm25"}).json()["hits"]
    assert hits[0]["doc_id"] == "bg-77"
