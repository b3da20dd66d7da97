from __future__ import annotations

import time

from fastapi.testclient import TestClient
from toydata import make_settings

from api.main import create_app
from index.store import Store


def test_unfinished_jobs_are_failed_at_start_and_indexes_saved(tmp_path, tiny_qa_dir):
    settings = make_settings(tmp_path / "data", generator=str(tiny_qa_dir), index_save_delay_s=0.05)
    store = Store(settings.resolved_database_url)
    store.create_collection("c", {"chunk_tokens": 200, "chunk_overlap": 40})
    left = store.create_job("c", total=10)
    store.update_job(left.id, status="running", done=3)
    store.close()
    with TestClient(create_app(settings)) as client:
        job = client.get(f"/v1/jobs/{left.id}").json()
        assert job["status"] == "failed" and job["done"] == 3 and "interrupted" in job["errors"][-1]["reason"]
        r = client.post("/v1/collections/c/documents", json={"documents": [{"id": "a", "text": "Saved soon after ingestion."}]})
        assert r.status_code == 200
        manifest = settings.data_dir / "indexes" / "c" / "manifest.json"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and '"chunks": 1' not in (manifest.read_text() if manifest.exists() else ""):
            time.sleep(0.05)
        assert '"chunks": 1' in manifest.read_text()  # the debounced save ran without a shutdown


def test_a_job_whose_collection_goes_away_fails_with_the_reason_and_no_traceback(tmp_path, tiny_qa_dir, caplog,
                                                                                   monkeypatch):
    import logging

    from common.errors import CollectionNotFound
    from engine import build_engine
    from engine.jobs import JobRunner

    engine = build_engine(make_settings(tmp_path / "data", generator=str(tiny_qa_dir)))
    try:
        engine.create_collection("gone", {})
        runner = JobRunner(engine)

        def deleted(collection, docs, **kw):  # the collection is deleted while the job runs
            raise CollectionNotFound(collection)

        monkeypatch.setattr(engine, "upsert_documents", deleted)
        with caplog.at_level(logging.WARNING, logger="engine.jobs"):
            job = runner.submit("gone", [{"id": "a", "text": "some text"}])
            runner.wait(timeout=30)
        runner.close()
        done = engine.get_job(job.id)
        assert done.status == "failed" and "gone" in done.errors[-1]["reason"]
        records = [r for r in caplog.records if r.name == "engine.jobs" and job.id in r.getMessage()]
        assert records and all(r.exc_info is None and r.levelno == logging.WARNING for r in records)
    finally:
        engine.close()
