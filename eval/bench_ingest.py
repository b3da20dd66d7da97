"""``attend bench ingest``: ingestion throughput (chunks per second) of the single-process path
against the Ray pipeline with 1, 2, ... encoding actors, on the same documents.

Each run indexes the first ``limit_docs`` documents of a BEIR corpus into a fresh collection of a
fresh store (SQLite in a temporary data directory, or ``database_url`` with a collection made and
deleted per run) and times the whole ingestion: validation, chunking, encoding, store writes and
index updates, as ``attend index`` does it. Ray runs include starting the actor pool and loading
one encoder per actor (what every ingestion pays); joining the cluster is done once beforehand and
not timed (a service holds its connection).

Beside the end-to-end runs, ``stage_rates`` times each stage alone over the same documents
(chunking; encoding with 1 torch thread, what an actor given one CPU gets, and with all threads;
the driver's store write and index update of chunks encoded beforehand). These tell how far a run
is bound by the cores rather than by the pipeline, and where k faster encoders would stop helping.
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.beir import iter_corpus
from common.errors import InvalidInput
from eval.report import console_table, write_json

logger = logging.getLogger(__name__)

LOCAL = 0  # "actors" value of the single-process path


@dataclass
class IngestBenchConfig:
    data: str  # a BEIR folder (its corpus.jsonl) or a corpus.jsonl file
    limit_docs: int = 600
    actors: tuple[int, ...] = (LOCAL, 1, 2)  # 0: the single-process path
    batch_sizes: tuple[int, ...] = (256,)  # documents per actor call (Ray runs)
    repeats: int = 3
    encoder: str = "all-MiniLM-L6-v2"
    database_url: str | None = None
    ray_address: str | None = None
    stage_rates: bool = True
    order: list[str] = field(default_factory=list)  # filled by the run: the order configs ran in

    def validate(self) -> None:
        if self.limit_docs < 1:
            raise InvalidInput("--limit-docs must be >= 1")
        if self.repeats < 1:
            raise InvalidInput("--repeats must be >= 1")
        if not self.actors or any(a < 0 for a in self.actors):
            raise InvalidInput("--actors takes counts >= 0 (0: the single-process path)")
        if any(b < 1 for b in self.batch_sizes):
            raise InvalidInput("--batch-sizes must be >= 1")
        path = Path(self.data)
        if not (path / "corpus.jsonl").is_file() and not (path.is_file() and path.suffix == ".jsonl"):
            raise InvalidInput(f"{self.data}: not a BEIR folder (no corpus.jsonl) nor a .jsonl corpus")


def load_documents(data: str, limit: int) -> list[dict[str, Any]]:
    path = Path(data)
    corpus = path / "corpus.jsonl" if path.is_dir() else path
    docs = []
    for doc_id, doc in iter_corpus(corpus):
        docs.append({"id": doc_id, "title": doc.get("title", ""),
                     "text": doc.get("text", "") or doc.get("title", "") or "-"})
        if len(docs) >= limit:
            break
    return docs


def config_name(actors: int, batch_size: int | None) -> str:
    return "single process" if actors == LOCAL else f"ray {actors} actor{'s' if actors > 1 else ''}, batch {batch_size}"


def run_once(cfg: IngestBenchConfig, docs: list[dict[str, Any]], actors: int, batch_size: int | None) -> dict[str, Any]:
    """One timed ingestion into a fresh collection; returns seconds, chunks and chunks/s."""
    from common.settings import Settings
    from engine import build_engine

    with tempfile.TemporaryDirectory(prefix="attend-bench-ingest-") as tmp:
        engine = build_engine(Settings(_env_file=None, data_dir=Path(tmp), database_url=cfg.database_url,
                                       encoder=cfg.encoder, generator="", reranker=None))
        name = f"bench-ingest-{uuid.uuid4().hex[:8]}"
        try:
            engine.create_collection(name, {"encoder": cfg.encoder})
            if actors == LOCAL:
                engine.encoder(cfg.encoder)  # loaded outside the clock, as a server has it
            t = time.perf_counter()
            if actors == LOCAL:
                report = engine.upsert_documents(name, docs, batch_size=64)
            else:
                from engine.distributed.ingest import RayOptions, ingest_on_ray

                opts = RayOptions(address=cfg.ray_address, actors=actors, batch_size=batch_size or 256)
                report = ingest_on_ray(engine, name, docs, opts)
            seconds = time.perf_counter() - t
            if report.failed:
                raise RuntimeError(f"{len(report.failed)} documents failed, e.g. {report.failed[0]}")
            chunks = int(engine.collection_stats(name)["chunks"])
        finally:
            try:
                engine.delete_collection(name)
            finally:
                engine.close()
    return {"seconds": seconds, "chunks": chunks, "chunks_per_s": chunks / seconds}


def stage_rates(cfg: IngestBenchConfig, docs: list[dict[str, Any]]) -> dict[str, float]:
    """Chunks/s of each stage alone, in this process: chunking; the encoder with 1 torch thread
    (an actor given one CPU) and with all of them (one process given the machine); and the
    driver's side of a Ray ingestion, ``Engine.write_prepared`` of chunks and embeddings made
    beforehand (store transaction and index update: the ceiling however many actors encode)."""
    import torch

    from common.settings import Settings
    from engine import build_engine
    from engine.ingest import chunk_texts, chunker_for, prepare_documents
    from index.records import DocumentInput

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="attend-bench-ingest-") as tmp:
        engine = build_engine(Settings(_env_file=None, data_dir=Path(tmp), database_url=cfg.database_url,
                                       encoder=cfg.encoder, generator="", reranker=None))
        name, created = f"bench-ingest-{uuid.uuid4().hex[:8]}", False
        try:
            encoder = engine.encoder(cfg.encoder)
            chunker = chunker_for(encoder.tokenizer, {"encoder": cfg.encoder})
            t = time.perf_counter()
            lists = chunker.chunk_batch([d["text"] for d in docs])
            n = sum(len(cl) for cl in lists)
            out["chunking"] = n / (time.perf_counter() - t)
            texts = [t for d, cl in zip(docs, lists, strict=True) for t in chunk_texts(d["title"], cl)]
            before = torch.get_num_threads()
            try:
                for threads in sorted({1, before}):
                    torch.set_num_threads(threads)
                    encoder.encode(texts[:64])  # warm
                    t = time.perf_counter()
                    encoder.encode(texts)
                    out[f"encode_{threads}_threads"] = n / (time.perf_counter() - t)
            finally:
                torch.set_num_threads(before)
            parsed = [DocumentInput.parse(d) for d in docs]
            prepared = prepare_documents(parsed, encoder, chunker)
            engine.create_collection(name, {"encoder": cfg.encoder})
            created = True
            t = time.perf_counter()
            for i in range(0, len(parsed), 64):
                group = parsed[i : i + 64]
                engine.write_prepared(name, group, {d.external_id: prepared[d.external_id] for d in group})
            out["store_write"] = n / (time.perf_counter() - t)
        finally:
            try:
                if created:
                    engine.delete_collection(name)
            finally:
                engine.close()
    return out


def run_benchmark(cfg: IngestBenchConfig) -> dict[str, Any]:
    cfg.validate()
    docs = load_documents(cfg.data, cfg.limit_docs)
    configs = [(a, None) if a == LOCAL else (a, b) for a in cfg.actors for b in (cfg.batch_sizes if a != LOCAL else (None,))]
    if any(a != LOCAL for a, _ in configs):
        from engine.distributed.cluster import connect

        connect(cfg.ray_address)  # once, untimed
    runs: dict[str, list[dict[str, Any]]] = {config_name(a, b): [] for a, b in configs}
    for r in range(cfg.repeats):  # interleaved, so drift in the machine hits every config alike
        for a, b in configs:
            name = config_name(a, b)
            cfg.order.append(name)
            res = run_once(cfg, docs, a, b)
            logger.info("run %d %s: %.1f s, %d chunks, %.1f chunks/s", r + 1, name, res["seconds"], res["chunks"], res["chunks_per_s"])
            runs[name].append(res)
    base = statistics.median(x["chunks_per_s"] for x in runs[config_name(LOCAL, None)]) if LOCAL in cfg.actors else None
    rows = []
    for a, b in configs:
        name = config_name(a, b)
        rates = [x["chunks_per_s"] for x in runs[name]]
        med = statistics.median(rates)
        rows.append({"config": name, "actors": a, "batch_size": b, "chunks": runs[name][0]["chunks"],
                     "seconds_median": statistics.median(x["seconds"] for x in runs[name]),
                     "chunks_per_s_median": med, "chunks_per_s_min": min(rates), "chunks_per_s_max": max(rates),
                     "vs_single_process": med / base if base else None})
    result: dict[str, Any] = {"documents": len(docs), "cpus": os.cpu_count(), "config": asdict(cfg), "rows": rows, "runs": runs}
    if cfg.stage_rates:
        result["stage_chunks_per_s"] = stage_rates(cfg, docs)
    return result


def main(cfg: IngestBenchConfig, json_path: str | None = None) -> dict[str, Any]:
    result = run_benchmark(cfg)
    print(f"{result['documents']} documents, {result['rows'][0]['chunks']} chunks, {result['cpus']} CPUs, "
          f"{cfg.repeats} runs per config (median)")
    print(console_table(result["rows"], columns=["config", "seconds_median", "chunks_per_s_median",
                                                 "chunks_per_s_min", "chunks_per_s_max", "vs_single_process"], floatfmt=".2f"))
    if stages := result.get("stage_chunks_per_s"):
        print("stages alone (chunks/s): " + ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in stages.items()))
    if json_path:
        write_json(result, json_path)
    return result
