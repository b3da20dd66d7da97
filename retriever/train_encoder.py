"""Fine-tune the sentence encoder on query-document pairs (``attend train encoder``).

Pairs come from one BEIR split (``qrels/<split>.tsv``, relevance >= 1, documents present in the
corpus). A share of the queries (crc32 of the query id) is held out for validation; the rest train
with InfoNCE over scaled cosine similarities (sentence-transformers' MultipleNegativesRankingLoss):
each query against its positive, the other positives of the batch and hard negatives. Hard
negatives are mined once, before training, with BM25 and with the base encoder: judged positives
are skipped, and a candidate whose base-encoder cosine to the query exceeds ``mine_margin`` times
the positive's is dropped as a likely unjudged positive. They are cached in ``OUT/negatives.json``.

Validation ranks the held-out queries over the whole corpus (or, with ``val_docs``, over their
positives plus a seeded random sample of documents, which inflates the figures but keeps relative
comparisons) with the current model, by brute-force cosine, and reports nDCG@10, Recall@100 and
MRR@10; step 0 is the base model. Whenever nDCG@10 improves, the model is also written to
``OUT/best``.

The figures come from the ``score_run`` the caller passes (``attend train encoder`` passes
``eval.metrics.evaluate``); without one, training runs without validation. The loop is
:func:`common.training.fit`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from common.atomic import atomic_write_text
from common.beir import load_beir
from common.errors import InvalidInput
from common.paths import resolve_encoder
from common.training import batch_stream, fit, held_out, load_run_state
from index.collection import index_text
from index.topk import top_k
from retriever.checkpoint import load_checkpoint, save_checkpoint
from retriever.embedder import SentenceEncoder, warn_if_bf16_emulated
from retriever.encoder_training import (
    LoopConfig,
    RunScorer,
    embed,
    evaluate_retrieval,
    finish_run,
    info_nce,
)

logger = logging.getLogger(__name__)

BEST_METRIC = "ndcg@10"  # the validation figure whose best model is kept in OUT/best


@dataclass(kw_only=True)
class EncoderTrainConfig(LoopConfig):
    """``attend train encoder`` options (see the module docstring)."""

    data: str
    split: str = "train"
    base: str = "all-MiniLM-L6-v2"
    scale: float = 20.0  # cosine similarities times this are the logits (MNRL's default)
    hard_negatives: int = 1  # mined negatives per query in each batch; 0: in-batch negatives only
    mine_depth: int = 30  # candidates taken from each of BM25 and the base encoder
    mine_margin: float = 0.95  # drop a candidate whose base cosine exceeds this times the positive's
    val_fraction: float = 0.1  # share of the split's queries held out
    val_docs: int | None = None  # None: rank over the whole corpus


class MiningConfig(Protocol):
    """The options hard-negative mining reads (both the encoder and the reranker trainers have them)."""

    data: str
    split: str
    mine_depth: int
    mine_margin: float
    max_seq_len: int
    encode_batch_size: int


@dataclass
class PairData:
    """A BEIR split as training pairs, with the held-out validation queries."""

    doc_ids: list[str]
    doc_texts: list[str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    positives: dict[str, set[str]]  # qid -> judged documents with relevance >= 1 in the corpus
    train_pairs: list[tuple[str, str]]  # (qid, doc id)
    val_qids: list[str]


def load_pairs(data: str | Path, split: str, val_fraction: float) -> PairData:
    """Read the split and hold out ``val_fraction`` of its queries. ``NotFound`` for a missing
    folder, file or split; ``InvalidInput`` when no pair remains to train on."""
    ds = load_beir(data, split=split)
    doc_ids = list(ds.corpus)
    positives = {
        q: {d for d, rel in judged.items() if rel > 0 and d in ds.corpus} for q, judged in ds.qrels.items()
    }
    positives = {q: docs for q, docs in positives.items() if docs}
    val_qids = [q for q in positives if held_out(q, val_fraction)]
    held = set(val_qids)
    train_pairs = [(q, d) for q, docs in positives.items() if q not in held for d in sorted(docs)]
    if not train_pairs:
        raise InvalidInput(
            f"{data} split {split!r} leaves no training pairs (judgments >= 1 on documents in the corpus, "
            f"{len(val_qids)} queries held out for validation)"
        )
    logger.info("%d training pairs over %d queries; %d queries held out", len(train_pairs), len(positives) - len(held), len(val_qids))
    return PairData(doc_ids, [index_text(ds.corpus[d]["title"], ds.corpus[d]["text"]) for d in doc_ids], dict(ds.queries), ds.qrels, positives, train_pairs, val_qids)


def mine_hard_negatives(
    queries: Mapping[str, str], positives: Mapping[str, set[str]], doc_ids: Sequence[str], doc_texts: Sequence[str],
    *, depth: int = 30, margin: float = 0.95, query_vecs: np.ndarray | None = None, doc_vecs: np.ndarray | None = None,
) -> dict[str, list[str]]:
    """Per query, the documents BM25 and the base encoder rank highest (top ``depth`` of each,
    interleaved by rank) that are not judged positives. With the base vectors (query i in
    ``queries`` order, doc j in ``doc_ids`` order, L2-normalised), a candidate whose cosine exceeds
    ``margin`` times the lowest positive's is dropped as a likely unjudged positive."""
    from index.bm25 import BM25Index

    qids = list(queries)
    bm25 = BM25Index()
    bm25.add(np.arange(len(doc_ids)), list(doc_texts))
    extra = max((len(positives[q]) for q in qids), default=0)
    lists = [[ids.tolist()] for ids, _ in bm25.search_batch([queries[q] for q in qids], k=depth + extra)]
    scores = None
    if query_vecs is not None and doc_vecs is not None:
        scores = query_vecs @ doc_vecs.T  # (Q, N)
        top = top_k(scores, depth + extra)  # (Q, k) best first
        for i in range(len(qids)):
            lists[i].append(top[i].tolist())
    index = {d: j for j, d in enumerate(doc_ids)}
    out: dict[str, list[str]] = {}
    dropped = 0
    for i, q in enumerate(qids):
        pos = positives[q]
        ceiling = margin * min(float(scores[i, index[d]]) for d in pos) if scores is not None else None
        seen: set[int] = set()
        picked: list[str] = []
        for rank in range(max(len(x) for x in lists[i])):
            for ranked in lists[i]:
                if rank >= len(ranked) or ranked[rank] in seen:
                    continue
                j = ranked[rank]
                seen.add(j)
                if doc_ids[j] in pos:
                    continue
                if ceiling is not None and scores[i, j] > ceiling:
                    dropped += 1
                    continue
                picked.append(doc_ids[j])
        out[q] = picked
    logger.info("mined %.1f hard negatives per query (%d near-positives dropped)", np.mean([len(v) for v in out.values()]) if out else 0.0, dropped)
    return out


def cached_json(path: Path, key: Mapping[str, Any], field: str) -> tuple[str, Any | None]:
    """The digest of ``key`` and, when ``path`` was written by :func:`write_cached` under the same
    digest, its ``field`` (else None: compute it, then :func:`write_cached`)."""
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()
    if path.is_file():
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("key") == digest:
            logger.info("%s from %s", field, path)
            return digest, stored[field]
        logger.warning("%s was written with other options or data; computing %s again", path, field)
    return digest, None


def write_cached(path: Path, digest: str, field: str, value: Any) -> None:
    atomic_write_text(path, json.dumps({"key": digest, field: value}))


def mining_key(cfg: MiningConfig, source: str, base_dir: Path) -> dict[str, Any]:
    """What mined negatives (and other base-encoder results over ``source``) depend on."""
    return {"data": str(Path(source).resolve()), "split": cfg.split, "base": str(base_dir.resolve()),
            "depth": cfg.mine_depth, "margin": cfg.mine_margin, "max_seq_len": cfg.max_seq_len}


def mined_negatives(
    cfg: MiningConfig, data: PairData, enc: SentenceEncoder, out: Path, base_dir: Path, *,
    source: str | None = None, cache: str = "negatives.json",
) -> tuple[dict[str, list[str]], np.ndarray | None]:
    """Hard negatives from ``OUT/<cache>`` when it was mined with the same options, else mined now
    (and cached); also the base encoder's document vectors when they were computed. ``source``
    names the data when it is not ``cfg.data`` (a mixed-in training source)."""
    train_qids = sorted({q for q, _ in data.train_pairs})
    path = out / cache
    digest, negatives = cached_json(path, {**mining_key(cfg, source or cfg.data, base_dir), "qids": train_qids}, "negatives")
    if negatives is not None:
        return negatives, None
    t = time.perf_counter()
    doc_vecs = enc.encode(data.doc_texts, batch_size=cfg.encode_batch_size, show_progress=True)
    query_vecs = enc.encode([data.queries[q] for q in train_qids], batch_size=cfg.encode_batch_size)
    negatives = mine_hard_negatives(
        {q: data.queries[q] for q in train_qids}, data.positives, data.doc_ids, data.doc_texts,
        depth=cfg.mine_depth, margin=cfg.mine_margin, query_vecs=query_vecs, doc_vecs=doc_vecs,
    )
    write_cached(path, digest, "negatives", negatives)
    logger.info("mined hard negatives in %.0fs", time.perf_counter() - t)
    return negatives, doc_vecs


def _val_docs(data: PairData, n: int | None, seed: int) -> list[int]:
    """Indices of the validation documents: all, or the held-out positives plus a seeded sample."""
    if n is None or n >= len(data.doc_ids):
        return list(range(len(data.doc_ids)))
    index = {d: j for j, d in enumerate(data.doc_ids)}
    keep = {index[d] for q in data.val_qids for d in data.positives[q]}
    rest = [j for j in range(len(data.doc_ids)) if j not in keep]
    keep.update(random.Random(seed).sample(rest, max(0, min(len(rest), n - len(keep)))))
    return sorted(keep)


def _batch_mask(qids: Sequence[str], keys: Sequence[str], positives: Mapping[str, set[str]]) -> torch.Tensor:
    """(B, N) True where key j is a positive of query i other than its own (column i)."""
    mask = torch.tensor([[k in positives[q] for k in keys] for q in qids], dtype=torch.bool)  # (B, N)
    mask[torch.arange(len(qids)), torch.arange(len(qids))] = False
    return mask


def train_encoder(cfg: EncoderTrainConfig, *, score_run: RunScorer | None = None) -> Path:
    """Fine-tune (or resume fine-tuning) the base encoder; returns ``OUT/model``. ``score_run``
    gives the validation figures (see :mod:`retriever.encoder_training`); None: no validation."""
    out = cfg.setup()
    if cfg.hard_negatives < 0 or cfg.mine_depth < 1 or not 0 < cfg.mine_margin <= 1 or not 0 <= cfg.val_fraction < 1:
        raise InvalidInput("need hard_negatives >= 0, mine_depth >= 1, 0 < mine_margin <= 1, 0 <= val_fraction < 1")
    data = load_pairs(cfg.data, cfg.split, cfg.val_fraction)
    base_dir = resolve_encoder(cfg.base)
    ckpt = load_checkpoint(base_dir)
    model = ckpt.model
    enc = SentenceEncoder(model, ckpt.tokenizer, ckpt.pooling, cfg.max_seq_len, device=cfg.device, precision=cfg.precision)
    warn_if_bf16_emulated(cfg.precision, enc.device)
    state = load_run_state(out)

    base_doc_vecs = None
    negatives: dict[str, list[str]] = {}
    if cfg.hard_negatives:  # mined with the base weights, before any resumed state is loaded
        negatives, base_doc_vecs = mined_negatives(cfg, data, enc, out, base_dir)
    total, per_epoch = cfg.total_steps(len(data.train_pairs))
    run = cfg.train_run(model, total, "train encoder", state)
    val_idx = _val_docs(data, cfg.val_docs, cfg.seed)
    val_queries = {q: data.queries[q] for q in data.val_qids}
    val_qrels = {q: data.qrels[q] for q in data.val_qids}
    doc_index = {d: j for j, d in enumerate(data.doc_ids)}

    def validate(doc_vecs: np.ndarray | None = None) -> None:
        assert score_run is not None
        scores = evaluate_retrieval(
            enc, [data.doc_ids[j] for j in val_idx], [data.doc_texts[j] for j in val_idx], val_queries, val_qrels,
            score_run, batch_size=cfg.encode_batch_size, doc_vecs=None if doc_vecs is None else doc_vecs[val_idx],
        )
        run.record({k: round(v, 4) for k, v in scores.items()})
        if scores[BEST_METRIC] > run.extra.get("best", -1.0):
            run.extra.update(best=scores[BEST_METRIC], best_step=run.step)
            save_checkpoint(out / "best", model, ckpt.tokenizer, ckpt.pooling, ckpt.max_length)
        model.train()

    validating = bool(val_queries) and score_run is not None
    if validating and not run.history:
        validate(base_doc_vecs)  # step 0: the base model
    elif not val_queries:
        logger.warning("no queries held out (val_fraction %s): training without validation", cfg.val_fraction)
    elif score_run is None:
        logger.warning("no run scorer given: training without validation")

    model.train()
    stream = batch_stream(len(data.train_pairs), cfg.batch_size, cfg.seed, run.step)

    def next_loss() -> torch.Tensor:
        pairs = [data.train_pairs[i] for i in next(stream)]
        qids = [q for q, _ in pairs]
        keys = [d for _, d in pairs]
        rng = random.Random(cfg.seed * 1_000_003 + run.step)
        for q in qids:
            pool = negatives.get(q, [])
            keys += rng.sample(pool, min(cfg.hard_negatives, len(pool)))
        q_vecs = embed(enc, enc.tokenize([data.queries[q] for q in qids]), normalize=True)  # (B, H)
        k_vecs = embed(enc, enc.tokenize([data.doc_texts[doc_index[d]] for d in keys]), normalize=True)  # (N, H)
        return info_nce(q_vecs, k_vecs, cfg.scale, _batch_mask(qids, keys, data.positives))

    fit(run, next_loss, every=cfg.eval_every or per_epoch, validate=validate if validating else None)
    model.eval()
    path = save_checkpoint(out / "model", model, ckpt.tokenizer, ckpt.pooling, ckpt.max_length)
    facts = {
        "base": base_dir, "data": f"{cfg.data} (qrels/{cfg.split}.tsv)", "command": f"`{cfg.command}`" if cfg.command else "",
        "pairs": f"{len(data.train_pairs)} training pairs, {len(val_queries)} queries held out",
        "loss": f"InfoNCE, scale {cfg.scale}, in-batch + {cfg.hard_negatives} mined hard negative(s) per query",
        "steps": f"{run.step} of {run.total} (batch {cfg.batch_size}, lr {cfg.lr}, {cfg.precision})",
        "training time": f"{run.seconds / 60:.1f} min",
        "best validation nDCG@10": f"{run.extra['best']:.4f} at step {run.extra['best_step']} (in best/)" if "best" in run.extra else "n/a",
    }
    finish_run(run, out, path, "Fine-tuned sentence encoder", "Contrastive fine-tuning of the base encoder with `attend train encoder`.", facts)
    return path
