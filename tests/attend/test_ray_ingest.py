"""Distributed ingestion (``engine.distributed.ingest``) on a local Ray cluster: the same store and
search results as the single-process path, idempotent re-runs, a SIGKILLed encoder worker that
loses and duplicates nothing, and the ``attend index --ray`` and ``?ray=true`` front ends.

Uses the real default encoder (all-MiniLM-L6-v2, from its PyPI package). Skips only where Ray is
not installed or cannot start; the two checks of a missing Ray run everywhere."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from toydata import make_settings

from engine import build_engine
from engine.distributed.ingest import RayOptions, ingest_on_ray

SETTINGS = {"chunk_tokens": 64, "chunk_overlap": 16}  # small chunks: several per document, cheap to encode
WORDS = (
    "river mountain glacier volcano desert forest harbor canyon island meadow bridge castle library "
    "engine turbine battery copper silicon protein enzyme neuron galaxy comet planet orbit telescope "
    "violin piano rhythm poem novel theatre painter sculpture museum market harvest wheat barley coffee "
    "tea bread cheese salmon falcon wolf beetle coral algae storm thunder drought monsoon winter summer "
    "ancient modern quiet rapid fragile heavy bright hidden northern coastal rural urban careful "
    "builds carries measures protects studies grows melts flows shapes records crosses feeds"
).split()
QUERIES = ["volcano glacier winter", "violin piano rhythm", "protein enzyme neuron", "harbor bridge castle"]


def _documents(n: int = 40) -> list[dict[str, Any]]:
    """``n`` documents of random sentences over ``WORDS`` (seeded), 1 to 6 chunks each."""
    rng = np.random.default_rng(0)
    docs = []
    for i in range(n):
        sentences = [" ".join(rng.choice(WORDS, size=rng.integers(6, 14))).capitalize() + "."
                     for _ in range(int(rng.integers(2, 30)))]
        docs.append({"id": f"doc-{i:02d}", "title": f"Title {i}", "text": " ".join(sentences),
                     "metadata": {"n": i}})
    return docs


DOCS = _documents()


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster for this module (2 logical CPUs: one per encoder actor; the GPUs
    Ray finds, if any, so a machine with GPUs runs the actors on them)."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()  # another module's cluster is used as it is, and left running
    if started:
        try:
            # "local": a new cluster even where `ray start` ran on this machine (ray.init() would join it)
            ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
        except Exception as exc:  # no shared memory, no ports, ...: the environment, not our code
            pytest.skip(f"Ray cannot start here: {type(exc).__name__}: {exc}")
    yield ray
    if started:
        ray.shutdown()


def _engine(data_dir: Path):
    # fp32 everywhere: "auto" is bf16 on a GPU, where batches of different make-up differ more.
    engine = build_engine(make_settings(data_dir, encoder_precision="fp32"))
    engine.create_collection("c", SETTINGS)
    return engine


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The single-process path: ``Engine.upsert_documents`` of ``DOCS``."""
    engine = _engine(tmp_path_factory.mktemp("single"))
    assert engine.upsert_documents("c", DOCS).counts() == {"inserted": len(DOCS)}
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def on_ray(ray_cluster, tmp_path_factory):
    """``DOCS`` ingested through the Ray pipeline, with the progress it reported."""
    engine = _engine(tmp_path_factory.mktemp("ray"))
    calls: list[int] = []
    report = ingest_on_ray(engine, "c", DOCS, RayOptions(batch_size=6, write_batch_size=8), progress=calls.append)
    yield engine, report, calls
    engine.close()


def store_content(engine) -> dict[str, Any]:
    """Per document: title, text, metadata, its chunks ``(ordinal, text, start, end, tokens)`` and
    their embeddings, read back from the store."""
    vectors = {c.id: c.embedding for c in engine.store.iter_chunks("c")}
    out = {}
    for doc in engine.list_documents("c", limit=1000):
        chunks = engine.store.get_chunks(doc.chunk_ids)
        out[doc.external_id] = (
            doc.title, doc.text, doc.metadata,
            [(c.ordinal, c.text, c.char_start, c.char_end, c.token_count) for c in chunks],
            np.stack([vectors[i] for i in doc.chunk_ids]),
        )
    return out


def assert_same_store(engine, reference) -> None:
    """Same documents, chunks (text and offsets) and embeddings (allclose), each stored once, and
    both indexes holding every chunk."""
    got, want = store_content(engine), store_content(reference)
    assert sorted(got) == sorted(want)
    for doc_id, (title, text, meta, chunks, vecs) in want.items():
        g_title, g_text, g_meta, g_chunks, g_vecs = got[doc_id]
        assert (g_title, g_text, g_meta, g_chunks) == (title, text, meta, chunks), doc_id
        np.testing.assert_allclose(g_vecs, vecs, atol=1e-4, err_msg=doc_id)
    stats, ref_stats = engine.collection_stats("c"), reference.collection_stats("c")
    assert stats["documents"] == len(DOCS)
    assert stats["chunks"] == ref_stats["chunks"] == stats["bm25_chunks"] == stats["dense_chunks"]
    assert stats["chunks"] == sum(len(v[3]) for v in got.values())  # no chunk row twice


def test_chunk_rows_reassemble_into_documents_whatever_the_batching():
    """The actor's rows (one per chunk, a document without chunks included) come back as whole
    documents in any batching, a batch delivered twice (a retried task) changing nothing."""
    from engine.distributed.ingest import ChunkAssembler, chunk_rows
    from index.chunking import Chunk
    from index.records import DocumentInput, PreparedChunks

    docs = {0: DocumentInput("a", "one two three four"), 1: DocumentInput("b", "five"), 2: DocumentInput("c", "six seven")}
    spans = {0: [(0, 7), (4, 13), (8, 18)], 1: [], 2: [(0, 9)]}
    rng = np.random.default_rng(1)
    prepared = {
        slot: PreparedChunks([Chunk(i, docs[slot].text[s:e], s, e, 2) for i, (s, e) in enumerate(sp)],
                             rng.normal(size=(len(sp), 4)).astype(np.float32))
        for slot, sp in spans.items()
    }
    rows = chunk_rows(list(prepared), list(prepared.values()), dim=4)
    assert len(rows["slot"]) == 5 and rows["embedding"].shape == (5, 4)
    order = [4, 0, 3, 2, 1]  # any order, in pieces of any size
    pieces = [{k: v[order[i:j]] for k, v in rows.items()} for i, j in ((0, 1), (1, 3), (3, 5))]
    assembler = ChunkAssembler(docs)
    done = dict(assembler.add(pieces[0]) + assembler.add(pieces[1]) + assembler.add(pieces[1]) + assembler.add(pieces[2]))
    assert sorted(done) == [0, 1, 2] and not assembler.waiting
    assert assembler.add(pieces[2]) == []  # late duplicates are dropped
    for slot, p in done.items():
        assert list(p.chunks) == list(prepared[slot].chunks)
        np.testing.assert_array_equal(p.embeddings, prepared[slot].embeddings)


def test_write_prepared_stores_once_and_checks_embeddings_first(tmp_path):
    from common.errors import InvalidInput
    from engine.ingest import chunker_for, prepare_documents
    from index.records import DocumentInput, PreparedChunks

    engine = _engine(tmp_path / "data")
    try:
        doc = DocumentInput.parse(DOCS[3])
        enc = engine.encoder()
        prepared = prepare_documents([doc], enc, chunker_for(enc.tokenizer, SETTINGS))
        wrong = {doc.external_id: PreparedChunks(prepared[doc.external_id].chunks,
                                                 np.zeros((len(prepared[doc.external_id].chunks), 3), np.float32))}
        with pytest.raises(InvalidInput, match="embeddings"):
            engine.write_prepared("c", [DOCS[3]], wrong)
        assert engine.collection_stats("c")["documents"] == 0  # nothing written
        assert engine.write_prepared("c", [DOCS[3]], prepared).counts() == {"inserted": 1}
        assert engine.write_prepared("c", [DOCS[3]], prepared).counts() == {"unchanged": 1}  # a retried batch
        assert engine.write_prepared("c", [DOCS[4]], {}).counts() == {"inserted": 1}  # prepared here when missing
        stats = engine.collection_stats("c")
        assert stats["chunks"] == stats["bm25_chunks"] == stats["dense_chunks"]
        assert engine.search("c", DOCS[3]["text"][:80], k=1).hits[0].doc_id == DOCS[3]["id"]
    finally:
        engine.close()


def test_ray_ingestion_stores_and_finds_what_the_single_process_path_does(on_ray, reference):
    engine, report, calls = on_ray
    assert report.counts() == {"inserted": len(DOCS)} and report.attempts == 1
    assert [o.doc_id for o in report.outcomes] == [d["id"] for d in DOCS]
    assert sum(calls) == len(DOCS) and max(calls) <= 8  # progress after each store transaction
    assert reference.collection_stats("c")["chunks"] > 2 * len(DOCS)  # many documents have several chunks
    assert_same_store(engine, reference)
    # Stored in input order, as the single-process path stores them.
    assert [d.external_id for d in engine.list_documents("c")] == [d["id"] for d in DOCS]
    for q in QUERIES:
        got, want = engine.search("c", q, k=5), reference.search("c", q, k=5)
        assert [(h.doc_id, h.text) for h in got.hits] == [(h.doc_id, h.text) for h in want.hits], q
        np.testing.assert_allclose([h.score for h in got.hits], [h.score for h in want.hits], rtol=1e-4)


def test_rerun_is_idempotent_and_needs_no_pipeline(on_ray, reference):
    engine, _, _ = on_ray
    chunks = engine.collection_stats("c")["chunks"]
    report = ingest_on_ray(engine, "c", DOCS, RayOptions(batch_size=6, write_batch_size=8))
    assert report.counts() == {"unchanged": len(DOCS)} and report.attempts == 0
    assert engine.collection_stats("c")["chunks"] == chunks
    assert_same_store(engine, reference)


def _recording_hook(path: str, pause_s: float):
    """An actor hook (pickled by value: it is a closure) that appends its worker's pid to
    ``path`` on every batch and pauses ``pause_s`` on the first batch of each worker, so a kill
    lands while that batch is being worked on."""
    seen: list[int] = []

    def hook(ids: list[str]) -> None:
        import os
        import time

        with open(path, "a") as f:
            f.write(f"{os.getpid()}\n")
        if not seen:
            seen.append(os.getpid())
            time.sleep(pause_s)

    return hook


def _ingest_killing_a_worker(tmp_path: Path, options: RayOptions):
    """Run the pipeline on a thread; SIGKILL the first encoder worker as it starts its first
    batch. Returns the engine, the report, the killed pid and every pid that recorded a batch."""
    engine = _engine(tmp_path / "data")
    pids = tmp_path / "pids"
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["report"] = ingest_on_ray(engine, "c", DOCS, options, actor_hook=_recording_hook(str(pids), 0.5))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            result["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 180
    while not (pids.exists() and pids.read_text().strip()):
        assert time.monotonic() < deadline and worker.is_alive(), result.get("error", "no worker started a batch")
        time.sleep(0.05)
    killed = int(pids.read_text().split()[0])
    os.kill(killed, signal.SIGKILL)
    worker.join(300)
    assert not worker.is_alive(), "the ingestion did not finish"
    if "error" in result:
        raise result["error"]
    return engine, result["report"], killed, pids.read_text().split()


def test_a_killed_worker_is_replaced_and_its_batch_redone(ray_cluster, reference, tmp_path):
    engine, report, killed, pids = _ingest_killing_a_worker(tmp_path, RayOptions(batch_size=4, write_batch_size=8))
    try:
        assert report.counts() == {"inserted": len(DOCS)}
        assert report.attempts == 1  # Ray restarted the actor and retried the batch: no second run
        assert set(pids) - {str(killed)}  # other workers did the rest
        assert_same_store(engine, reference)  # every document once, no chunk twice, nothing lost
    finally:
        engine.close()


def test_without_actor_restarts_the_driver_resumes_where_it_stopped(ray_cluster, reference, tmp_path):
    engine, report, killed, _ = _ingest_killing_a_worker(
        tmp_path, RayOptions(actors=1, batch_size=4, write_batch_size=8, actor_retries=0)
    )
    try:
        assert report.attempts == 2 and "ActorDiedError" in report.errors[0]
        assert report.counts() == {"inserted": len(DOCS)}  # written once, whichever attempt wrote it
        assert_same_store(engine, reference)
    finally:
        engine.close()


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    from common.settings import get_settings

    for key in list(os.environ):
        if key.startswith("ATTEND_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no stray .env
    folder = tmp_path / "docs"
    folder.mkdir()
    for d in DOCS[:6]:
        (folder / f"{d['id']}.txt").write_text(d["text"])
    (folder / "bad.txt").write_bytes("Caf\u00e9".encode("latin-1"))

    def use(data_dir: str) -> None:
        monkeypatch.setenv("ATTEND_DATA_DIR", str(tmp_path / data_dir))
        get_settings.cache_clear()

    yield folder, use
    get_settings.cache_clear()


def test_cli_index_with_ray_prints_what_the_single_process_path_prints(ray_cluster, cli_env, capsys):
    from attend.cli import main

    folder, use = cli_env
    args = ["index", str(folder), "--collection", "kb", "--create", "--no-progress"]
    use("single")
    assert main(args) == 0
    single = capsys.readouterr().out
    assert "inserted 6" in single and "failed 1" in single and "bad.txt" in single
    use("ray")
    assert main([*args, "--ray", "--actors", "1", "--ray-batch-size", "2"]) == 0
    assert capsys.readouterr().out == single
    assert main([*args, "--ray"]) == 0  # again: nothing to encode
    assert "kb: failed 1, unchanged 6" in capsys.readouterr().out


def test_api_ray_job_runs_to_done_with_progress(ray_cluster, tmp_path):
    from fastapi.testclient import TestClient

    from api.main import create_app

    settings = make_settings(tmp_path / "data", index_save_delay_s=0.2, ray_actors=1)
    docs = DOCS[:6]
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/collections", json={"name": "c", "settings": SETTINGS}).status_code == 201
        r = client.post("/v1/collections/c/documents?ray=true&background=false", json={"documents": docs})
        assert r.status_code == 422 and "background" in r.json()["detail"]
        r = client.post("/v1/collections/c/documents?ray=true", json={"documents": [*docs, {"id": "empty", "text": " "}]})
        assert r.status_code == 202, r.text
        job_url = r.headers["Location"]
        deadline = time.monotonic() + 120
        while (job := client.get(job_url).json())["status"] not in ("done", "failed"):
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
        assert job["status"] == "done" and job["done"] == job["total"] == 7, job
        assert [e["doc_id"] for e in job["errors"]] == ["empty"]
        assert client.get("/v1/collections/c/documents").json()[0]["id"] == docs[0]["id"]
        hits = client.post("/v1/collections/c/search", json={"query": docs[2]["text"][:80], "k": 1}).json()["hits"]
        assert hits[0]["doc_id"] == docs[2]["id"]


def test_without_ray_installed_the_front_ends_say_what_to_install(tmp_path, monkeypatch, capsys):
    from fastapi.testclient import TestClient

    from api.main import create_app
    from attend.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails, as it does without the extra
    monkeypatch.setenv("ATTEND_DATA_DIR", str(tmp_path / "cli"))
    from common.settings import get_settings

    get_settings.cache_clear()
    try:
        assert main(["index", str(tmp_path), "--collection", "kb", "--create", "--ray"]) == 2
        assert "attend[distributed]" in capsys.readouterr().err
    finally:
        get_settings.cache_clear()
    with TestClient(create_app(make_settings(tmp_path / "data"))) as client:
        assert client.post("/v1/collections", json={"name": "c"}).status_code == 201
        r = client.post("/v1/collections/c/documents?ray=true", json={"documents": DOCS[:2]})
        assert r.status_code == 422 and "attend[distributed]" in r.json()["detail"]
        assert client.get("/v1/collections/c/jobs").json() == []  # no job was recorded


def test_bench_ingest_times_every_config_on_the_same_chunks(ray_cluster, cli_env, toy_beir, capsys, tmp_path):
    import json

    from attend.cli import main

    out = tmp_path / "ingest.json"
    assert main(["bench", "ingest", "--data", str(toy_beir), "--actors", "0,1", "--batch-sizes", "3",
                 "--repeats", "2", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "single process" in printed and "ray 1 actor, batch 3" in printed and "stages alone" in printed
    result = json.loads(out.read_text())
    assert result["documents"] == 8
    rows = {r["config"]: r for r in result["rows"]}
    single, ray_row = rows["single process"], rows["ray 1 actor, batch 3"]
    assert single["chunks"] == ray_row["chunks"] >= 8  # the same documents give the same chunks both ways
    assert single["vs_single_process"] == 1.0
    assert all(len(runs) == 2 and all(r["chunks_per_s"] > 0 for r in runs) for runs in result["runs"].values())
    assert ray_row["vs_single_process"] == pytest.approx(ray_row["chunks_per_s_median"] / single["chunks_per_s_median"])
    assert result["config"]["order"] == ["single process", "ray 1 actor, batch 3"] * 2  # interleaved
    stages = result["stage_chunks_per_s"]
    assert {"chunking", "encode_1_threads", "store_write"} <= set(stages) and min(stages.values()) > 0


def test_bench_ingest_refuses_bad_input(cli_env, toy_beir, tmp_path, capsys):
    from attend.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["bench", "ingest", "--data", str(toy_beir), "--actors", "-1"])
    assert exc.value.code == 2
    assert main(["bench", "ingest", "--data", str(tmp_path / "nowhere"), "--actors", "0"]) == 2
    assert "not a BEIR folder" in capsys.readouterr().err
    assert main(["bench", "ingest", "--data", str(toy_beir), "--actors", "0", "--repeats", "0"]) == 2
    assert "--repeats" in capsys.readouterr().err
