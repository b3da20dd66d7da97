"""BM25 benchmark: our incremental index against bm25s and rank_bm25 on a BEIR dataset.

Each system indexes the corpus (one chunk per document, ``title + " " + text``) and answers every
judged query one at a time, the way a server does; queries/s cover the full path from the query
string to the top-k ids (analysis included). Figures are medians over ``runs`` repetitions, and
every ratio compares systems measured in the same process.

Token streams are the same for everyone:

- ours: :class:`index.analyzer.Analyzer` (bm25s's English stopwords, PyStemmer "english");
- bm25s: its own ``bm25s.tokenize(..., stopwords="en", stemmer=Stemmer.Stemmer("english"))``,
  which yields the same terms (``method="lucene"``, same k1 and b as ours);
- rank_bm25: ``BM25Okapi`` over our analyzer's tokens (it has no tokenizer of its own), top-k by
  ``argsort`` of ``get_scores``. It is slow (a Python loop over every document per query term),
  so it answers only the first ``peer_queries`` queries; its queries/s come from those.

bm25s and rank_bm25 are dev dependencies; a missing one is skipped with a warning.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.beir import load_beir
from eval.metrics import evaluate
from index.analyzer import Analyzer
from index.bm25 import DEFAULT_B, DEFAULT_K1, BM25Index
from index.collection import index_text
from index.topk import top_k

logger = logging.getLogger(__name__)

# Searcher: query text -> row numbers of the top k documents, best first (and their scores).
Searcher = Callable[[str, int], tuple[np.ndarray, np.ndarray]]


@dataclass
class BM25BenchConfig:
    data: Path
    split: str = "test"
    runs: int = 3
    k: int = 10
    k1: float = DEFAULT_K1
    b: float = DEFAULT_B
    peer_queries: int = 100  # rank_bm25 answers this many queries per run (0 = all)
    systems: tuple[str, ...] = ("ours", "bm25s", "rank_bm25")


def _median_time(fn: Callable[[], Any], runs: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _answer_all(
    search: Searcher, queries: Sequence[str], k: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    return [search(q, k) for q in queries]


def _build_ours(texts: list[str], cfg: BM25BenchConfig) -> tuple[Searcher, Callable]:
    index = BM25Index(analyzer=Analyzer(), variant="lucene", k1=cfg.k1, b=cfg.b)
    index.add(np.arange(len(texts), dtype=np.int64), texts)

    def batch(queries: Sequence[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        return index.search_batch(queries, k)

    return index.search, batch


def _build_bm25s(texts: list[str], cfg: BM25BenchConfig) -> tuple[Searcher, Callable]:
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    tokens = bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False)
    model = bm25s.BM25(method="lucene", k1=cfg.k1, b=cfg.b)
    model.index(tokens, show_progress=False)

    def search(query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = bm25s.tokenize([query], stopwords="en", stemmer=stemmer, show_progress=False)
        docs, scores = model.retrieve(q, k=min(k, len(texts)), show_progress=False)
        return docs[0], scores[0]

    def batch(queries: Sequence[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        q = bm25s.tokenize(list(queries), stopwords="en", stemmer=stemmer, show_progress=False)
        docs, scores = model.retrieve(q, k=min(k, len(texts)), show_progress=False)
        return list(zip(docs, scores, strict=True))

    return search, batch


def _build_rank_bm25(texts: list[str], cfg: BM25BenchConfig) -> tuple[Searcher, None]:
    from rank_bm25 import BM25Okapi

    analyzer = Analyzer()
    model = BM25Okapi(analyzer.analyze_many(texts), k1=cfg.k1, b=cfg.b)

    def search(query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = model.get_scores(analyzer(query))
        top = top_k(scores, k)
        return top, scores[top]

    return search, None


_BUILDERS = {"ours": _build_ours, "bm25s": _build_bm25s, "rank_bm25": _build_rank_bm25}


def run_bm25_bench(cfg: BM25BenchConfig) -> dict[str, Any]:
    """Index, query and score each system; returns a flat dict of figures (``<system>_qps``,
    ``<system>_index_s``, ``<system>_ndcg@10``, ratios ``ours_vs_<peer>_qps``, ...)."""
    data = load_beir(cfg.data, cfg.split)
    doc_ids = list(data.corpus)
    texts = [index_text(data.corpus[d]["title"], data.corpus[d]["text"]) for d in doc_ids]
    qids = list(data.queries)
    queries = [data.queries[q] for q in qids]
    result: dict[str, Any] = {
        "dataset": data.name,
        "split": cfg.split,
        "docs": len(texts),
        "queries": len(queries),
        "k": cfg.k,
        "k1": cfg.k1,
        "b": cfg.b,
        "runs": cfg.runs,
    }
    for name in cfg.systems:
        try:
            index_s, (search, batch) = _median_time(
                lambda n=name: _BUILDERS[n](texts, cfg), cfg.runs
            )
        except ImportError as exc:
            logger.warning("skipping %s: %s", name, exc)
            continue
        qs = queries
        if name == "rank_bm25" and cfg.peer_queries:
            qs = queries[: cfg.peer_queries]
            result["rank_bm25_queries"] = len(qs)
        search(qs[0], cfg.k)  # warm-up (lazy caches, first-call imports)
        query_s, answers = _median_time(lambda s=search, qs=qs: _answer_all(s, qs, cfg.k), cfg.runs)
        result[f"{name}_index_s"] = index_s
        result[f"{name}_qps"] = len(qs) / query_s
        run = {
            qid: {doc_ids[int(i)]: float(s) for i, s in zip(*ans, strict=True)}
            for qid, ans in zip(qids[: len(qs)], answers, strict=True)
        }
        sub_qrels = {q: data.qrels[q] for q in qids[: len(qs)]}
        result[f"{name}_ndcg@10"] = evaluate(run, sub_qrels, ("ndcg@10",))["ndcg@10"]
        if batch is not None:
            batch_s, _ = _median_time(lambda b=batch: b(queries, cfg.k), cfg.runs)
            result[f"{name}_batch_qps"] = len(queries) / batch_s
        logger.info("%s: index %.2fs, %.0f queries/s", name, index_s, result[f"{name}_qps"])
    for peer in ("bm25s", "rank_bm25"):
        if "ours_qps" in result and f"{peer}_qps" in result:
            result[f"ours_vs_{peer}_qps"] = result["ours_qps"] / result[f"{peer}_qps"]
    return result


def summary_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One table row per system measured in ``result``."""
    rows = []
    for name in ("ours", "bm25s", "rank_bm25"):
        if f"{name}_qps" not in result:
            continue
        rows.append(
            {
                "system": name,
                "index_s": result[f"{name}_index_s"],
                "qps": result[f"{name}_qps"],
                "batch_qps": result.get(f"{name}_batch_qps"),
                "ndcg@10": result[f"{name}_ndcg@10"],
                "ours_x": result["ours_qps"] / result[f"{name}_qps"]
                if "ours_qps" in result
                else None,
            }
        )
    return rows
