"""Train the cross-encoder reranker (``attend train reranker``).

Pairs come from one BEIR split, as for ``attend train encoder`` (``retriever.train_encoder.load_pairs``:
relevance >= 1, a crc32 share of the queries held out), or from a SQuAD file (:func:`load_squad_pairs`:
each question against its own paragraph, a seeded sample of ``limit_queries`` questions, every
paragraph of the file in the corpus, and the question's other same-article paragraphs added to its
negatives). ``mix`` adds further sources to the same stream (:func:`merge_sources`), each mined
and held out on its own, so one run learns a domain and general question-paragraph relevance
together. ``init`` starts from a trained reranker (its head too) instead of a fresh head: a
SQuAD pass first, then the target domain, or a trained reranker continued on a mix. Hard negatives are mined once with BM25
and the base encoder (the two sides of our hybrid retrieval; judged positives and likely unjudged
positives skipped) and cached in ``OUT/negatives.json``, the validation candidates in
``OUT/validation.json`` (a resume encodes nothing again). Each training item is a group: a query,
one positive and ``negatives`` mined negatives sampled afresh every step; the loss is the softmax
cross-entropy of the positive over its group (listwise). The cross-encoder starts from the base
encoder's weights with a fresh linear head (``retriever.cross_encoder.warm_start``), which learns
at ``head_lr_scale`` times the encoder's learning rate (at the encoder's rate a head initialised
at 0.02 barely moves in a few hundred steps: the loss stayed at ln(8) in a SciFact pilot).

Validation reranks, for each held-out query, the union of the BM25 and base-encoder top
``val_depth`` documents (interleaved by rank, positives included where retrieved) and reports
nDCG@10 and MRR@10 of the reranked list, alone and blended with the candidate order at
``BLEND_WEIGHTS``; step 0 is the candidate order itself (what reranking must beat). The best
model by nDCG@10 is written to ``OUT/best``, the last to ``OUT/model``; each recommends the weight
its validation scored best (:func:`best_weight`). The figures come from the ``score_run`` the caller passes (``attend train reranker`` passes
``eval.metrics.evaluate``); the loop is :func:`common.training.fit`.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common.errors import InvalidInput
from common.paths import resolve_encoder
from common.squad import is_squad_file, load_squad
from common.training import batch_stream, fit, held_out, load_run_state
from index.bm25 import BM25Index
from index.collection import index_text
from index.topk import top_k
from retriever.checkpoint import load_checkpoint
from retriever.cross_encoder import (
    PairSettings,
    Reranker,
    collate,
    load_reranker,
    pair_ids,
    save_reranker,
    warm_start,
)
from retriever.embedder import SentenceEncoder, autocast_for, warn_if_bf16_emulated
from retriever.encoder_training import LoopConfig, RunScorer, finish_run
from retriever.rerank import blend
from retriever.train_encoder import (
    PairData,
    cached_json,
    load_pairs,
    mined_negatives,
    mining_key,
    write_cached,
)

logger = logging.getLogger(__name__)

BEST_METRIC = "ndcg@10"
BLEND_WEIGHTS = (0.3, 0.5, 0.7)  # rerank weights (retriever.rerank.blend with the candidate order) scored too
VAL_METRICS = ("ndcg@10", "mrr@10")


@dataclass(kw_only=True)
class RerankerTrainConfig(LoopConfig):
    """``attend train reranker`` options. ``batch_size`` counts groups (queries) per step."""

    data: str
    split: str = "train"
    base: str = "all-MiniLM-L6-v2"
    negatives: int = 7  # mined negatives in each query's group
    head_lr_scale: float = 100.0  # the fresh head learns at this multiple of the encoder's learning rate
    max_query_tokens: int = 64
    mine_depth: int = 30
    mine_margin: float = 0.95
    val_fraction: float = 0.1
    val_depth: int = 30  # candidates per side (BM25, base encoder) reranked for validation
    init: str | None = None  # a trained reranker directory to continue from (head included)
    limit_queries: int | None = None  # SQuAD: questions sampled (seeded) from the file
    mix: tuple[str, ...] = ()  # further training sources (BEIR folders or SQuAD files), mixed into the same stream


def candidate_lists(
    queries: Sequence[str], doc_texts: Sequence[str], depth: int, query_vecs: np.ndarray, doc_vecs: np.ndarray
) -> list[list[int]]:
    """Per query, the BM25 and dense top ``depth`` document positions, interleaved by rank, each
    position once: the candidates a hybrid retrieval hands the reranker."""
    bm25 = BM25Index()
    bm25.add(np.arange(len(doc_texts)), list(doc_texts))
    sparse = [ids.tolist() for ids, _ in bm25.search_batch(list(queries), k=depth)]
    dense = top_k(query_vecs @ doc_vecs.T, depth).tolist()  # (Q, depth)
    out = []
    for a, b in zip(sparse, dense, strict=True):
        merged: list[int] = []
        for rank in range(max(len(a), len(b))):
            for ranked in (a, b):
                if rank < len(ranked) and ranked[rank] not in merged:
                    merged.append(ranked[rank])
        out.append(merged)
    return out


def source_key(key: str, n: int) -> str:
    """A validation figure of source ``n``'s held-out queries alone (mixed sources)."""
    return f"{key}_source{n}"


def best_weight(record: dict[str, float]) -> float | None:
    """The rerank weight a validation record scores best (1: the reranker alone, else one of
    ``BLEND_WEIGHTS``), which the saved reranker recommends; None for a record without figures.
    With mixed sources (``*_sourceN`` figures), a weight's score is the mean over the sources, so
    each domain counts once however many held-out queries it has."""
    keys = {1.0: BEST_METRIC} | {w: f"{BEST_METRIC}_w{w:g}" for w in BLEND_WEIGHTS}
    sources = sorted({k.rsplit("_source", 1)[1] for k in record if k.startswith(f"{BEST_METRIC}_") and "_source" in k})

    def score(key: str) -> float | None:
        if sources:
            parts = [record.get(source_key(key, int(n))) for n in sources]
            return None if any(p is None for p in parts) else float(np.mean(parts))
        return record.get(key)

    scored = {w: score(k) for w, k in keys.items()}
    scored = {w: v for w, v in scored.items() if v is not None}
    return max(scored, key=lambda w: (scored[w], w)) if scored else None


def group_loss(logits: torch.Tensor, group: int) -> torch.Tensor:
    """Listwise loss: logits (B * group,), the positive first in each group of ``group``."""
    return F.cross_entropy(logits.float().view(-1, group), torch.zeros(len(logits) // group, dtype=torch.long, device=logits.device))


def train_reranker(cfg: RerankerTrainConfig, *, score_run: RunScorer | None = None) -> Path:
    """Train (or resume training) a reranker; returns ``OUT/model``."""
    out = cfg.setup()
    if cfg.negatives < 1 or cfg.mine_depth < 1 or cfg.val_depth < 1 or not 0 <= cfg.val_fraction < 1 or not cfg.head_lr_scale > 0:
        raise InvalidInput("need negatives >= 1, mine_depth >= 1, val_depth >= 1, 0 <= val_fraction < 1, head_lr_scale > 0")
    settings = PairSettings(max_length=cfg.max_seq_len, max_query_tokens=cfg.max_query_tokens)
    sources = [cfg.data, *cfg.mix]
    base_dir = resolve_encoder(cfg.base)
    base = load_checkpoint(base_dir)
    enc = SentenceEncoder(base.model, base.tokenizer, base.pooling, cfg.max_seq_len, device=cfg.device, precision=cfg.precision)
    warn_if_bf16_emulated(cfg.precision, enc.device)
    parts = [_load_source(cfg, src, n, enc, out, base_dir) for n, src in enumerate(sources)]
    data, negatives, val, source_of = merge_sources(parts)
    del enc, base

    if cfg.init:
        start = load_reranker(cfg.init, device="cpu", precision="fp32")
        model, tokenizer = start.model, start.tokenizer
        settings = PairSettings(max_length=cfg.max_seq_len, max_query_tokens=cfg.max_query_tokens)
    else:
        model, tokenizer = warm_start(base_dir, settings, seed=cfg.seed)
    device = torch.device(cfg.device)
    model.to(device)
    reranker = Reranker(model, tokenizer, settings, device=device, precision=cfg.precision)
    items = [(q, d) for q, d in data.train_pairs if negatives.get(q)]
    if not items:
        raise InvalidInput("no training query has a mined negative")
    total, per_epoch = cfg.total_steps(len(items))
    run = cfg.train_run(model, total, "train reranker", load_run_state(out), lr_scales={"classifier.": cfg.head_lr_scale})
    doc_index = {d: j for j, d in enumerate(data.doc_ids)}
    group = cfg.negatives + 1

    def by_source(run_: dict[str, dict[str, float]], key: str) -> dict[str, float]:
        """With mixed sources, ``key`` (nDCG@10) of each source's held-out queries alone, as
        ``KEY_sourceN``: a blend that helps one source may hurt another."""
        out_: dict[str, float] = {}
        for n in range(len(sources) if len(sources) > 1 else 0):
            mine = [q for q in run_ if source_of[q] == n]
            if mine:
                part = score_run({q: run_[q] for q in mine}, {q: data.qrels[q] for q in mine}, (BEST_METRIC,))
                out_[source_key(key, n)] = round(part[BEST_METRIC], 4)
        return out_

    def validate() -> None:
        assert score_run is not None
        model.eval()
        qrels = {q: data.qrels[q] for q in val}
        raw = {q: reranker.score(data.queries[q], [data.doc_texts[doc_index[d]] for d in docs]) for q, docs in val.items()}
        run_ = {q: dict(zip(docs, raw[q].tolist(), strict=True)) for q, docs in val.items()}
        scores = score_run(run_, qrels, VAL_METRICS)
        record = {k: round(v, 4) for k, v in scores.items()} | by_source(run_, BEST_METRIC)
        for w in BLEND_WEIGHTS:  # the reranker blended with the candidate order (rerank weight w)
            blended = {q: dict(zip(docs, blend(raw[q], -np.arange(len(docs), dtype=np.float64), w).tolist(), strict=True))
                       for q, docs in val.items()}
            record[f"{BEST_METRIC}_w{w:g}"] = round(score_run(blended, qrels, VAL_METRICS)[BEST_METRIC], 4)
            record |= by_source(blended, f"{BEST_METRIC}_w{w:g}")
        run.record(record)
        if scores[BEST_METRIC] > run.extra.get("best", -1.0):
            run.extra.update(best=scores[BEST_METRIC], best_step=run.step)
            save_reranker(out / "best", model, tokenizer, settings, weight=best_weight(record))
        model.train()

    validating = bool(val) and score_run is not None
    if validating and not run.history:
        order = {q: {d: -float(i) for i, d in enumerate(docs)} for q, docs in val.items()}
        base_scores = score_run(order, {q: data.qrels[q] for q in val}, VAL_METRICS)
        run.extra["candidates"] = {k: round(v, 4) for k, v in base_scores.items()} | by_source(order, BEST_METRIC)
        logger.info("validation candidates before reranking: %s", run.extra["candidates"])

    model.train()
    stream = batch_stream(len(items), cfg.batch_size, cfg.seed, run.step)

    def next_loss() -> torch.Tensor:
        rng = random.Random(cfg.seed * 1_000_003 + run.step)
        groups: list[list[tuple[list[int], list[int]]]] = []
        for i in next(stream):
            q, pos = items[i]
            pool = negatives[q]
            negs = [pool[j % len(pool)] for j in rng.sample(range(max(len(pool), cfg.negatives)), cfg.negatives)]
            texts = [data.doc_texts[doc_index[d]] for d in (pos, *negs)]
            groups.append(pair_ids(tokenizer, data.queries[q], texts, settings))
        with autocast_for(cfg.precision, device):  # one forward per group: each padded to its own longest pair
            logits = torch.cat([model(*collate(pairs, tokenizer.pad_id or 0, device)) for pairs in groups])  # (B * group,)
        return group_loss(logits, group)

    fit(run, next_loss, every=cfg.eval_every or per_epoch, validate=validate if validating else None)
    model.eval()
    path = save_reranker(out / "model", model, tokenizer, settings,
                         weight=best_weight(next((r for r in reversed(run.history) if BEST_METRIC in r), {})))
    facts = {
        "base": f"{base_dir}" + (f", continued from the reranker {cfg.init}" if cfg.init else ""),
        "data": "; ".join(_describe(src, part[0], cfg.split) for src, part in zip(sources, parts, strict=True)),
        "command": f"`{cfg.command}`" if cfg.command else "",
        "groups": f"{len(items)} (query, positive) groups of 1 + {cfg.negatives} mined negatives; {len(val)} queries held out",
        "loss": "softmax cross-entropy of the positive over its group (listwise)",
        "steps": f"{run.step} of {run.total} (batch {cfg.batch_size} groups, lr {cfg.lr}, {cfg.precision})",
        "training time": f"{run.seconds / 60:.1f} min",
        "validation candidates (no reranking)": json.dumps(run.extra.get("candidates", {})),
        "best validation nDCG@10": f"{run.extra['best']:.4f} at step {run.extra['best_step']} (in best/)" if "best" in run.extra else "n/a",
    }
    finish_run(run, out, path, "Attend cross-encoder reranker", "A cross-encoder trained with `attend train reranker`.", facts)
    return path


def _describe(source: str, data: PairData, split: str) -> str:
    if is_squad_file(source):
        return f"{source} ({len(data.positives)} questions against their paragraph)"
    return f"{source} (qrels/{split}.tsv, {len(data.positives)} queries)"


def _load_source(
    cfg: RerankerTrainConfig, source: str, n: int, enc: SentenceEncoder, out: Path, base_dir: Path
) -> tuple[PairData, dict[str, list[str]], dict[str, list[str]]]:
    """One training source: its pairs, mined negatives (SQuAD questions also get their other
    same-article paragraphs) and its held-out queries' validation candidates, each cached per
    source (``OUT/negatives.json`` and ``OUT/validation.json`` for the first, ``-N`` before
    ``.json`` for mixed-in ones)."""
    same_article: dict[str, list[str]] = {}
    if is_squad_file(source):
        data, same_article = load_squad_pairs(source, cfg.val_fraction, cfg.limit_queries, cfg.seed)
    else:
        data = load_pairs(source, cfg.split, cfg.val_fraction)
    suffix = "" if n == 0 else f"-{n}"
    negatives, doc_vecs = mined_negatives(cfg, data, enc, out, base_dir, source=source, cache=f"negatives{suffix}.json")
    for q, extra in same_article.items():
        if q in negatives:
            negatives[q] = negatives[q] + [d for d in extra if d not in negatives[q]]
    # cached too: on a resume the negatives come from their cache, and these would re-encode the corpus
    val_path = out / f"validation{suffix}.json"
    digest, val = cached_json(val_path, {**mining_key(cfg, source, base_dir), "val_depth": cfg.val_depth, "qids": data.val_qids},
                              "candidates")
    if val is None:
        val = _validation_candidates(cfg, data, enc, doc_vecs)
        write_cached(val_path, digest, "candidates", val)
    return data, negatives, val


def merge_sources(
    parts: Sequence[tuple[PairData, dict[str, list[str]], dict[str, list[str]]]],
) -> tuple[PairData, dict[str, list[str]], dict[str, list[str]], dict[str, int]]:
    """Training sources as one: with more than one, every query and document id is prefixed with
    its source's number (``"1:d42"``), so ids from different collections never meet. Returns the
    pairs, negatives, validation candidates and each query's source number."""
    if len(parts) == 1:
        data, negatives, val = parts[0]
        return data, negatives, val, dict.fromkeys(data.queries, 0)
    doc_ids: list[str] = []
    doc_texts: list[str] = []
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    positives: dict[str, set[str]] = {}
    train_pairs: list[tuple[str, str]] = []
    val_qids: list[str] = []
    negatives: dict[str, list[str]] = {}
    val: dict[str, list[str]] = {}
    source_of: dict[str, int] = {}
    for n, (data, negs, cands) in enumerate(parts):
        def tag(x: str, n: int = n) -> str:
            return f"{n}:{x}"
        doc_ids += [tag(d) for d in data.doc_ids]
        doc_texts += data.doc_texts
        for q, text in data.queries.items():
            queries[tag(q)] = text
            source_of[tag(q)] = n
        qrels |= {tag(q): {tag(d): r for d, r in judged.items()} for q, judged in data.qrels.items()}
        positives |= {tag(q): {tag(d) for d in docs} for q, docs in data.positives.items()}
        train_pairs += [(tag(q), tag(d)) for q, d in data.train_pairs]
        val_qids += [tag(q) for q in data.val_qids]
        negatives |= {tag(q): [tag(d) for d in docs] for q, docs in negs.items()}
        val |= {tag(q): [tag(d) for d in docs] for q, docs in cands.items()}
    merged = PairData(doc_ids, doc_texts, queries, qrels, positives, train_pairs, val_qids)
    return merged, negatives, val, source_of


def _validation_candidates(
    cfg: RerankerTrainConfig, data: PairData, enc: SentenceEncoder, doc_vecs: np.ndarray | None
) -> dict[str, list[str]]:
    """Held-out query -> its hybrid candidates (document ids), from the base encoder and BM25."""
    if not data.val_qids:
        return {}
    if doc_vecs is None:
        doc_vecs = enc.encode(data.doc_texts, batch_size=cfg.encode_batch_size, show_progress=True)
    query_vecs = enc.encode([data.queries[q] for q in data.val_qids], batch_size=cfg.encode_batch_size)
    lists = candidate_lists([data.queries[q] for q in data.val_qids], data.doc_texts, cfg.val_depth, query_vecs, doc_vecs)
    return {q: [data.doc_ids[j] for j in docs] for q, docs in zip(data.val_qids, lists, strict=True)}



def load_squad_pairs(
    path: str | Path, val_fraction: float, limit: int | None, seed: int
) -> tuple[PairData, dict[str, list[str]]]:
    """A SQuAD file as training pairs: the answerable questions of whole articles, taken in a
    seeded order until ``limit`` questions (all articles when None), each relevant to its own
    paragraph only; the corpus is those articles' paragraphs (titled by their article), so mining
    encodes only them; and per question, the other paragraphs of its article (negatives a reader
    confuses most). Never pass a dev file: they are for evaluation."""
    if "dev" in Path(path).name.lower():
        raise InvalidInput(f"{path}: SQuAD dev files are for evaluation, not training")
    examples = [e for e in load_squad(path) if not e.is_impossible]
    if limit is not None and limit < len(examples):
        articles = sorted({e.paragraph_id.split("-")[0] for e in examples}, key=int)
        random.Random(seed).shuffle(articles)
        by_art: dict[str, list] = {}
        for e in examples:
            by_art.setdefault(e.paragraph_id.split("-")[0], []).append(e)
        chosen: list = []
        for a in articles:
            if len(chosen) >= limit:
                break
            chosen += by_art[a]
        examples = chosen[:limit]
    docs: dict[str, str] = {}
    by_article: dict[str, list[str]] = {}
    for e in examples:
        if e.paragraph_id not in docs:
            docs[e.paragraph_id] = index_text(e.title, e.context)
            by_article.setdefault(e.paragraph_id.split("-")[0], []).append(e.paragraph_id)
    queries = {e.qid: e.question for e in examples}
    positives = {e.qid: {e.paragraph_id} for e in examples}
    val_qids = [q for q in queries if held_out(q, val_fraction)]
    held = set(val_qids)
    train_pairs = [(e.qid, e.paragraph_id) for e in examples if e.qid not in held]
    if not train_pairs:
        raise InvalidInput(f"{path} leaves no training questions")
    same = {e.qid: [p for p in by_article[e.paragraph_id.split("-")[0]] if p != e.paragraph_id] for e in examples}
    doc_ids = list(docs)
    qrels = {q: {d: 1 for d in ds} for q, ds in positives.items()}
    logger.info("SQuAD: %d questions (%d held out) over %d paragraphs", len(queries), len(val_qids), len(doc_ids))
    return PairData(doc_ids, [docs[d] for d in doc_ids], queries, qrels, positives, train_pairs, val_qids), same
