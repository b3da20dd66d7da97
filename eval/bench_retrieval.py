"""``attend bench retrieval``: retrieval quality of BM25, dense and hybrid search on a BEIR folder
(or a SQuAD file read as one: ``common.beir.squad_as_beir``), through the same code path a user's
collection takes.

The corpus is ingested into a collection with :class:`engine.Engine` (chunking by encoder
tokens, embedding, SQL store, BM25 and FAISS), the queries run through ``Engine.search``, chunk
hits map to their documents (best chunk per document), and the document-level run is scored with
:mod:`eval.metrics` (a query id equal to a corpus id is never a hit for itself, as in BEIR).

With ``shards`` (say ``(1, 2, 4)``) the collection is split into that many shards in turn
(``Engine.reshard``: from the stored embeddings, nothing re-encoded; Ray actors where Ray is
installed) and every mode runs again: the rows must show the single index's figures, and their
latency is the cost of the scatter-gather. Each shard's index memory is reported.

With a reranker (``rerank``) a ``hybrid+rerank`` row is added: hybrid search whose best
``rerank_depth`` chunks the cross-encoder re-scores, with the latency the rerank stage adds per
query (``rerank_p50_ms``, ``rerank_p99_ms``). Each further weight of ``rerank_weights`` adds a
``hybrid+rerank w=W`` row: the same hits ordered by ``retriever.rerank.blend`` with that weight
(the reranker's scores of the first row are reused, so these rows carry no latency of their own).
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.beir import BeirDataset, load_retrieval_set
from eval.bench_api import percentiles
from eval.metrics import evaluate
from eval.report import console_table, write_json

logger = logging.getLogger(__name__)

METRICS = ("ndcg@10", "recall@100", "mrr@10")
RERANK_ROW = "hybrid+rerank"


@dataclass
class RetrievalBenchConfig:
    data: str
    split: str = "test"
    modes: tuple[str, ...] = ("bm25", "dense", "hybrid")
    encoder: str = "all-MiniLM-L6-v2"
    data_dir: str | None = None  # reuse an indexed collection across runs
    collection: str | None = None
    depth_docs: int = 100
    chunk_tokens: int | None = None
    chunk_overlap: int | None = None
    fusion: str = "rrf"
    rrf_k: float = 60.0
    limit_queries: int | None = None
    rerank: str | None = None  # a reranker (a folder under models/ or a directory): adds RERANK_ROW
    rerank_depth: int = 50
    # the first is timed (None: the reranker's own); the others re-blend its scores
    rerank_weights: tuple[float | None, ...] = (None,)
    shards: tuple[int, ...] = ()  # also run every mode on the collection split into each count


def docs_from_hits(hits: list[Any]) -> dict[str, float]:
    """Best chunk per document: ``{doc_id: best score}`` in rank order (scores strictly
    decreasing with rank so ties between documents keep the fused order)."""
    out: dict[str, float] = {}
    n = len(hits)
    for h in hits:
        if h.doc_id not in out:
            out[h.doc_id] = float(n - h.rank + 1)  # rank-preserving score
    return out


def build_collection(engine, name: str, ds: BeirDataset, settings: dict[str, Any]) -> float | None:
    """Create and fill the collection unless it already holds the whole corpus indexed with the same
    settings (encoder, chunking); returns the seconds spent indexing, None when it was reused."""
    from common.errors import NotFound

    try:
        stats = engine.collection_stats(name)
        stored = engine.get_collection(name).settings
        if stats["documents"] == len(ds.corpus) and all(stored.get(k) == v for k, v in settings.items()):
            logger.info("reusing collection %s (%d documents)", name, stats["documents"])
            return None
        logger.info("collection %s holds other documents or settings (%s); indexing again", name, stored)
        engine.delete_collection(name)
    except NotFound:
        pass
    from tqdm.auto import tqdm

    engine.create_collection(name, settings)
    docs = [
        {"id": did, "title": d.get("title", ""), "text": d.get("text", "") or d.get("title", "") or "-", "metadata": d.get("metadata") or {}}
        for did, d in ds.corpus.items()
    ]
    t = time.perf_counter()
    with tqdm(total=len(docs), desc=f"index {name}", unit="doc") as bar:
        report = engine.upsert_documents(name, docs, batch_size=256, progress=bar.update)
    if report.failed:
        logger.warning("%d documents failed to index, e.g. %s", len(report.failed), report.failed[:3])
    engine.save(name)
    return time.perf_counter() - t


def score_mode(
    engine, name: str, queries: dict[str, str], qrels: dict[str, dict[str, int]], cfg: RetrievalBenchConfig,
    mode: str, *, settings: Any, rerank: dict[str, Any] | None = None, shards: int | None = None,
    keep: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run every query in ``mode`` (reranked when ``rerank`` is given: the ``RERANK_ROW`` row, with
    the rerank stage's own latency) and score the document-level run: one row of the table.
    ``keep``, when given, receives each query's result (qid -> SearchResult)."""
    from tqdm.auto import tqdm

    label = RERANK_ROW if rerank else mode
    if rerank and rerank.get("weight", 1.0) != 1.0:
        label = f"{label} w={rerank['weight']:g}"
    if shards:
        label = f"{label} /{shards} shards"
    run: dict[str, dict[str, float]] = {}
    latencies, rerank_ms = [], []
    t0 = time.perf_counter()
    for qid, text in tqdm(queries.items(), desc=f"search {label}", unit="q"):
        t = time.perf_counter()
        # chunk hits deep enough that ``depth_docs`` distinct documents usually survive
        res = engine.search(name, text, k=cfg.depth_docs * 3, mode=mode, settings=settings, rerank=rerank)
        latencies.append(time.perf_counter() - t)
        if rerank:
            rerank_ms.append(res.timings_ms["rerank_ms"])
        if keep is not None:
            keep[qid] = res
        run[qid] = dict(list(docs_from_hits(res.hits).items())[: cfg.depth_docs])
    wall = time.perf_counter() - t0
    scores = evaluate(run, qrels, METRICS, ignore_identical_ids=True)
    row = {
        "mode": label,
        **{m: round(v, 4) for m, v in scores.items()},
        "qps": round(len(queries) / wall, 1),
        "latency_p50_ms": round(statistics.median(latencies) * 1e3, 2),
        "latency_p99_ms": round(percentiles([x * 1e3 for x in latencies])["p99_ms"] or 0.0, 2),
    }
    if shards:
        row["shards"] = shards
    if rerank:
        p = percentiles(rerank_ms)
        row.update(rerank_p50_ms=round(p["p50_ms"] or 0.0, 2), rerank_p99_ms=round(p["p99_ms"] or 0.0, 2))
    return row


def reblend_row(
    reranked: dict[str, Any], queries: dict[str, str], qrels: dict[str, dict[str, int]], cfg: RetrievalBenchConfig,
    weight: float,
) -> dict[str, Any]:
    """The ``hybrid+rerank w=W`` row: each query's re-scored hits (the ones carrying a
    ``rerank_score``) ordered again by ``blend`` with ``weight``, the hits after them unchanged."""
    import numpy as np

    from retriever.rerank import blend

    run: dict[str, dict[str, float]] = {}
    for qid, res in reranked.items():
        head = [h for h in res.hits if h.rerank_score is not None]
        tail = [h for h in res.hits if h.rerank_score is None]
        # the fused order of the head first: ties of the blend keep it, as rerank_hits does
        head.sort(key=lambda h: -float(h.scores.get("fused") or 0.0))
        key = blend(np.array([h.rerank_score for h in head]), np.array([float(h.scores.get("fused") or 0.0) for h in head]), weight)
        ordered = [head[i] for i in np.argsort(-key, kind="stable")] + tail
        for rank, hit in enumerate(ordered, 1):
            hit.rank = rank
        run[qid] = dict(list(docs_from_hits(ordered).items())[: cfg.depth_docs])
    scores = evaluate(run, qrels, METRICS, ignore_identical_ids=True)
    return {"mode": f"{RERANK_ROW} w={weight:g}", **{m: round(v, 4) for m, v in scores.items()}}


def run_benchmark(cfg: RetrievalBenchConfig) -> dict[str, Any]:
    from common.settings import Settings
    from engine import build_engine
    from engine.types import SearchSettings
    from retriever.rerank import scorer_weight

    ds = load_retrieval_set(cfg.data, split=cfg.split)
    queries = dict(list(ds.queries.items())[: cfg.limit_queries]) if cfg.limit_queries else ds.queries
    tmp = None
    if cfg.data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="attend-bench-")
        data_dir = Path(tmp.name)
    else:
        data_dir = Path(cfg.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
    name = cfg.collection or f"beir-{ds.name}".replace("/", "-")[:64]
    settings: dict[str, Any] = {"encoder": cfg.encoder}
    if cfg.chunk_tokens:
        settings["chunk_tokens"] = cfg.chunk_tokens
    if cfg.chunk_overlap is not None:
        settings["chunk_overlap"] = cfg.chunk_overlap
    engine = build_engine(Settings(_env_file=None, data_dir=data_dir, database_url=None, encoder=cfg.encoder,
                                   generator="", reranker=cfg.rerank))
    try:
        index_s = build_collection(engine, name, ds, settings)
        stats = engine.collection_stats(name)
        qrels = {q: ds.qrels[q] for q in queries}
        search_settings = SearchSettings(fusion=cfg.fusion, rrf_k=cfg.rrf_k, depth=max(300, cfg.depth_docs * 3))
        rows = [score_mode(engine, name, queries, qrels, cfg, mode, settings=search_settings) for mode in cfg.modes]
        if cfg.rerank:
            first, *others = cfg.rerank_weights
            if first is None:  # the reranker's own weight, named in the row and the JSON
                first = scorer_weight(engine.rerankers.get(cfg.rerank))
            weights = [first, *others]
            rerank = {"model": cfg.rerank, "depth": cfg.rerank_depth, "weight": first}
            reranked: dict[str, Any] = {}
            rows.append(score_mode(engine, name, queries, qrels, cfg, "hybrid", settings=search_settings, rerank=rerank,
                                   keep=reranked))
            rows += [reblend_row(reranked, queries, qrels, cfg, w) for w in others]
        extra: dict[str, Any] = ({"reranker": cfg.rerank, "rerank_depth": cfg.rerank_depth,
                                  "rerank_weights": weights} if cfg.rerank else {})
        if cfg.shards:
            extra["sharded"] = {}
            try:
                for n in cfg.shards:
                    t = time.perf_counter()
                    engine.reshard(name, n)
                    st = engine.collection_stats(name)
                    extra["sharded"][n] = {"reshard_seconds": round(time.perf_counter() - t, 1),
                                           "chunks_per_shard": st["shard_chunks"], "bytes_per_shard": st["shard_bytes"]}
                    rows += [score_mode(engine, name, queries, qrels, cfg, mode, settings=search_settings, shards=n)
                             for mode in cfg.modes]
            finally:
                engine.reshard(name, None)  # a reused collection stays one index
        return {
            "dataset": ds.name,
            "split": ds.split,
            "queries": len(queries),
            "documents": stats["documents"],
            "chunks": stats["chunks"],
            "encoder": cfg.encoder,
            "fusion": cfg.fusion,
            "rrf_k": cfg.rrf_k,
            **extra,
            "index_seconds": round(index_s or 0.0, 1),
            "index_reused": index_s is None,
            "modes": {r["mode"]: r for r in rows},
            "rows": rows,
        }
    finally:
        engine.close()
        if tmp is not None:
            tmp.cleanup()


def main(cfg: RetrievalBenchConfig, json_path: str | None = None) -> dict[str, Any]:
    result = run_benchmark(cfg)
    print(f"{result['dataset']} ({result['split']}): {result['queries']} queries, {result['documents']} documents, "
          f"{result['chunks']} chunks, indexed in {result['index_seconds']} s (encoder {cfg.encoder})")
    columns = ["mode", *METRICS, "qps", "latency_p50_ms", "latency_p99_ms"]
    if cfg.rerank:
        columns += ["rerank_p50_ms", "rerank_p99_ms"]
    print(console_table(result["rows"], columns=columns))
    for n, info in result.get("sharded", {}).items():
        mib = ", ".join(f"{b / 2**20:.1f}" for b in info["bytes_per_shard"])
        print(f"{n} shards: chunks per shard {info['chunks_per_shard']}, index MiB per shard [{mib}], "
              f"resharded in {info['reshard_seconds']} s")
    if json_path:
        write_json(result, json_path)
    return result
