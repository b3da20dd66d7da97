"""Benchmark our ``SentenceEncoder`` against sentence-transformers on the same weights and texts.

Both embed the BEIR corpus texts (``title + " " + text``, as BEIR does) in the same process, runs
alternating between them so a noisy shared machine slows both alike; throughput is the median over
runs. Quality is the cosine between the two embeddings of each text and, when the whole corpus is
embedded and qrels exist, nDCG@10 of brute-force dense retrieval with each model.

``compare`` adds a second encoder of ours (e.g. a distilled student), run at the first precision in
the same alternation: its throughput, its ratio to ours, its cosine to ours (same width only) and
its retrieval figures.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from common.beir import load_beir
from common.errors import InvalidInput, MissingDependency
from common.paths import resolve_encoder
from eval.metrics import evaluate
from eval.report import console_table
from index.collection import index_text
from retriever.exact_search import dense_run

logger = logging.getLogger(__name__)

METRICS = ("ndcg@10", "recall@100", "mrr@10")


@dataclass
class EncoderBenchConfig:
    """What to embed, with which options, how many times."""

    data: Path
    limit: int | None = None
    batch_size: int = 32
    precisions: Sequence[str] = ("bf16",)
    runs: int = 3
    encoder: str | None = None
    device: str = "cpu"
    split: str = "test"
    top_k: int = 100
    chunk_size: int = 256
    show_progress: bool = False
    compare: str | None = None  # another encoder (name or directory) timed beside ours


def parse_variant(name: str) -> tuple[str, bool]:
    """``"bf16"`` -> ("bf16", False); ``"fp32+compile"`` -> ("fp32", True)."""
    from retriever.embedder import PRECISIONS

    precision, _, suffix = name.partition("+")
    if precision not in PRECISIONS or suffix not in ("", "compile"):
        raise InvalidInput(f"encoder variant {name!r} is not PRECISION[+compile] with PRECISION in {PRECISIONS}")
    return precision, suffix == "compile"


def _time(fn: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, D) arrays."""
    na = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(na, 1e-12)


def _reference_encoder(name: str | None, device: str) -> Callable[[list[str], int], np.ndarray]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise MissingDependency("sentence-transformers", extra="dev", feature="the encoder benchmark") from exc
    st = SentenceTransformer(str(resolve_encoder(name)), device=device)

    def encode(texts: list[str], batch_size: int) -> np.ndarray:
        return st.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False).astype(np.float32)

    return encode


# Edge cases of the parity check, beside the corpus and its queries.
EDGE_TEXTS = [
    "",
    " ",
    "Naïve café: crème brûlée, Ångström, Straße, Ελληνικά, русский, 日本語のテキスト, 中文, 한국어, emoji 🙂🚀",
    "ALL CAPS SHOUTING WITH NUMBERS 123,456.78 and symbols #@$%^&*()",
    "tab\tseparated\nnew lines\r\n and   many    spaces",
    "word " * 2000,
    "Supercalifragilisticexpialidocious-antidisestablishmentarianism " * 50,
]


def run_encoder_bench(cfg: EncoderBenchConfig) -> dict[str, Any]:
    """Measure throughput and agreement of ours vs sentence-transformers; returns the figures.

    ``cfg.precisions`` are variants ``PRECISION[+compile]``. Top-level ``ours_*``/``speedup``/cosine/
    nDCG keys are for the first; ``by_precision`` holds every variant measured.
    """
    from retriever.embedder import SentenceEncoder

    if cfg.runs < 1 or cfg.chunk_size < 1 or cfg.batch_size < 1:
        raise InvalidInput(f"runs, chunk_size and batch_size must be >= 1, got {cfg.runs}, {cfg.chunk_size}, {cfg.batch_size}")
    if not cfg.precisions:
        raise InvalidInput("name at least one precision to measure")
    variants = {name: parse_variant(name) for name in cfg.precisions}
    ds = load_beir(cfg.data, split=cfg.split)
    doc_ids = list(ds.corpus)
    if cfg.limit is not None:
        doc_ids = doc_ids[: cfg.limit]
    texts = [index_text(ds.corpus[d]["title"], ds.corpus[d]["text"]) for d in doc_ids]
    if not texts:
        raise InvalidInput(f"{cfg.data} has no documents to embed")
    with_ndcg = (cfg.limit is None or cfg.limit >= len(ds.corpus)) and bool(ds.qrels)

    ours = {
        name: SentenceEncoder.from_pretrained(cfg.encoder, device=cfg.device, precision=p, compile=c)
        for name, (p, c) in variants.items()
    }
    reference = _reference_encoder(cfg.encoder, cfg.device)
    encoders: dict[str, Callable[[list[str]], np.ndarray]] = {"reference": lambda t: reference(t, cfg.batch_size)}
    for p, enc in ours.items():
        encoders[p] = lambda t, enc=enc: enc.encode(t, batch_size=cfg.batch_size)
    first = cfg.precisions[0]
    other = None
    if cfg.compare:
        other = SentenceEncoder.from_pretrained(cfg.compare, device=cfg.device, precision=variants[first][0], compile=variants[first][1])
        encoders["compare"] = lambda t: other.encode(t, batch_size=cfg.batch_size)
    # Warm-up (and compilation for +compile variants) on a full batch and a shorter, padded one.
    warm = texts[: min(len(texts), 2 * cfg.batch_size)]
    warmup_s = {name: _time(lambda fn=fn: fn(warm))[0] for name, fn in encoders.items()}

    # Runs alternate between the encoders chunk by chunk, so load from others on a shared machine
    # falls on both alike; each encoder's time for a run is the sum over its chunks.
    chunks = [texts[s : s + cfg.chunk_size] for s in range(0, len(texts), cfg.chunk_size)]
    seconds: dict[str, list[float]] = {name: [] for name in encoders}
    vecs: dict[str, np.ndarray] = {}
    for run in range(cfg.runs):
        spent = dict.fromkeys(encoders, 0.0)
        parts: dict[str, list[np.ndarray]] = {name: [] for name in encoders}
        for c, chunk in enumerate(tqdm(chunks, desc=f"run {run + 1}/{cfg.runs}", unit="chunk", disable=not cfg.show_progress)):
            names = list(encoders) if (run + c) % 2 == 0 else list(reversed(encoders))
            for name in names:
                sec, out = _time(lambda fn=encoders[name], chunk=chunk: fn(chunk))
                spent[name] += sec
                parts[name].append(out)
        for name in encoders:
            seconds[name].append(spent[name])
            vecs.setdefault(name, np.concatenate(parts[name]))
            logger.info("run %d %s: %.1f docs/s", run + 1, name, len(texts) / spent[name])

    ref_dps = len(texts) / statistics.median(seconds["reference"])
    result: dict[str, Any] = {
        "dataset": ds.name,
        "docs": len(texts),
        "batch_size": cfg.batch_size,
        "chunk_size": cfg.chunk_size,
        "runs": cfg.runs,
        "device": cfg.device,
        "encoder": str(resolve_encoder(cfg.encoder)),
        "reference_docs_per_s": ref_dps,
        "reference_seconds": seconds["reference"],
        "by_precision": {},
    }
    queries = None
    if with_ndcg:
        qids = list(ds.queries)
        queries = [ds.queries[q] for q in qids]
        ref_q = reference(queries, cfg.batch_size)
        ref_metrics = evaluate(dense_run(ref_q, vecs["reference"], qids, doc_ids, cfg.top_k), ds.qrels, METRICS)
        result.update({f"{m}_reference": v for m, v in ref_metrics.items()})
    # Parity beyond the timed corpus: the split's queries and edge cases (empty, unicode, past the
    # max length), embedded once by each encoder.
    extra = [ds.queries[q] for q in ds.queries] + EDGE_TEXTS
    ref_extra = reference(extra, cfg.batch_size)
    result["parity_texts"] = len(texts) + len(extra)
    for p, enc in ours.items():
        cos = cosines(vecs[p], vecs["reference"])
        cos_all = np.concatenate([cos, cosines(enc.encode(extra, batch_size=cfg.batch_size), ref_extra)])
        dps = len(texts) / statistics.median(seconds[p])
        row: dict[str, Any] = {
            "ours_docs_per_s": dps,
            "ours_seconds": seconds[p],
            "speedup": dps / ref_dps,
            "min_cosine": float(cos.min()),
            "mean_cosine": float(cos.mean()),
            "parity_min_cosine": float(cos_all.min()),
            "parity_mean_cosine": float(cos_all.mean()),
            "warmup_s": warmup_s[p],
        }
        if queries is not None:
            q_vecs = enc.encode(queries, batch_size=cfg.batch_size)
            metrics = evaluate(dense_run(q_vecs, vecs[p], qids, doc_ids, cfg.top_k), ds.qrels, METRICS)
            row.update({f"{m}_ours": v for m, v in metrics.items()})
            row["ndcg@10_delta"] = row["ndcg@10_ours"] - result["ndcg@10_reference"]
        result["by_precision"][p] = row
    result["precision"] = first
    result.update(result["by_precision"][first])
    if other is not None:
        dps = len(texts) / statistics.median(seconds["compare"])
        cmp: dict[str, Any] = {
            "encoder": str(resolve_encoder(cfg.compare)), "precision": first, "docs_per_s": dps,
            "seconds": seconds["compare"], "speedup_vs_ours": dps / result["ours_docs_per_s"], "speedup": dps / ref_dps,
        }
        if other.dim == ours[first].dim:
            cos = cosines(vecs["compare"], vecs[first])
            cmp.update(min_cosine_vs_ours=float(cos.min()), mean_cosine_vs_ours=float(cos.mean()))
        if queries is not None:
            q_vecs = other.encode(queries, batch_size=cfg.batch_size)
            cmp.update(evaluate(dense_run(q_vecs, vecs["compare"], qids, doc_ids, cfg.top_k), ds.qrels, METRICS))
        result["compare"] = cmp
    return result


def report_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One table row per encoder measured: the reference, then ours per precision."""
    rows = [
        {
            "encoder": "sentence-transformers",
            "docs/s": result["reference_docs_per_s"],
            "speedup": 1.0,
            "min cos": None,
            "mean cos": None,
            "ndcg@10": result.get("ndcg@10_reference"),
        }
    ]
    for p, r in result["by_precision"].items():
        rows.append(
            {
                "encoder": f"ours ({p})",
                "docs/s": r["ours_docs_per_s"],
                "speedup": r["speedup"],
                "min cos": f"{r['min_cosine']:.6f}",
                "mean cos": f"{r['mean_cosine']:.6f}",
                "ndcg@10": r.get("ndcg@10_ours"),
            }
        )
    if "compare" in result:
        c = result["compare"]
        rows.append(
            {
                "encoder": f"compare ({c['precision']})",
                "docs/s": c["docs_per_s"],
                "speedup": c["speedup"],
                "min cos": f"{c['min_cosine_vs_ours']:.6f}" if "min_cosine_vs_ours" in c else None,
                "mean cos": f"{c['mean_cosine_vs_ours']:.6f}" if "mean_cosine_vs_ours" in c else None,
                "ndcg@10": c.get("ndcg@10"),
            }
        )
    return rows


def format_report(result: dict[str, Any]) -> str:
    """The printed table: throughput (median of runs), agreement and retrieval quality."""
    head = (
        f"{result['dataset']}: {result['docs']} docs, batch {result['batch_size']}, "
        f"{result['runs']} run(s), device {result['device']}"
    )
    table = console_table(report_rows(result), floatfmt=".3f")
    parity = "\n".join(
        f"parity ({name}) over {result['parity_texts']} texts (docs, queries, edge cases): "
        f"min cosine {row['parity_min_cosine']:.6f}, mean {row['parity_mean_cosine']:.6f}"
        for name, row in result["by_precision"].items()
        if "parity_min_cosine" in row
    )
    if "compare" in result:
        c = result["compare"]
        parity += (
            f"\ncompare: {c['encoder']} at {c['docs_per_s']:.1f} docs/s, {c['speedup_vs_ours']:.2f}x ours "
            f"({c['precision']}); its cosines are to ours, not to sentence-transformers"
        )
    return f"{head}\n{table}\n{parity}" if parity else f"{head}\n{table}"
