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

The training-loop pieces shared with :mod:`retriever.distill` live here: ``LoopConfig``,
``TrainRun`` (AdamW, linear warm-up and decay, ``OUT/checkpoint.pt`` save/resume, time limit,
progress bar), ``batch_stream`` (a resumable, seeded batch order), ``embed`` (pooled vectors with
gradients), ``info_nce``, ``evaluate_retrieval``, ``held_out`` and ``write_model_card``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.atomic import atomic_replace, atomic_write_text
from common.errors import InvalidInput
from common.paths import resolve_encoder
from common.schedule import warmup_lr_schedule
from eval.beir import doc_text, load_beir
from eval.bench_encoder import dense_run
from eval.metrics import evaluate
from retriever.checkpoint import load_checkpoint, save_checkpoint
from retriever.embedder import SentenceEncoder, autocast_for, warn_if_bf16_emulated
from retriever.pooling import pool_and_normalize

logger = logging.getLogger(__name__)

TRAIN_PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
VAL_METRICS: tuple[str, ...] = ("ndcg@10", "recall@100", "mrr@10")
CHECKPOINT_FILE = "checkpoint.pt"


# --- shared training-loop pieces -----------------------------------------------------------------


@dataclass(kw_only=True)
class LoopConfig:
    """Options every encoder training loop takes. ``steps`` overrides ``epochs``."""

    out: str
    epochs: int = 1
    steps: int | None = None
    batch_size: int = 32
    lr: float = 2e-5
    warmup: float = 0.1  # share of the steps with linear warm-up, then linear decay to zero
    weight_decay: float = 0.01
    max_seq_len: int = 256  # tokens per training text, special tokens included
    precision: str = "fp32"  # "bf16": autocast matmuls to bfloat16; weights, loss and Adam in fp32
    threads: int | None = None
    seed: int = 0
    max_minutes: float | None = None  # stop (and save) after this long; the same command resumes
    save_every: int = 50
    eval_every: int | None = None  # None: at the end of every epoch and of training
    device: str = "cpu"
    encode_batch_size: int = 64  # for validation and one-off encoding (no gradients)
    command: str = ""  # the command line, recorded in the model card

    def check(self) -> None:
        """``InvalidInput`` for options out of range."""
        if self.precision not in TRAIN_PRECISIONS:
            raise InvalidInput(f"precision {self.precision!r} is not one of {TRAIN_PRECISIONS}")
        if self.epochs < 1 or (self.steps is not None and self.steps < 1):
            raise InvalidInput(f"epochs and steps must be >= 1, got epochs={self.epochs}, steps={self.steps}")
        if self.batch_size < 1 or self.encode_batch_size < 1:
            raise InvalidInput(f"batch sizes must be >= 1, got {self.batch_size}, {self.encode_batch_size}")
        if not self.lr > 0 or not 0 <= self.warmup < 1 or self.weight_decay < 0:
            raise InvalidInput(f"need lr > 0, 0 <= warmup < 1, weight_decay >= 0; got {self.lr}, {self.warmup}, {self.weight_decay}")
        if self.max_seq_len < 8:
            raise InvalidInput(f"max_seq_len must be >= 8, got {self.max_seq_len}")
        if self.save_every < 1 or (self.eval_every is not None and self.eval_every < 1):
            raise InvalidInput("save_every and eval_every must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise InvalidInput(f"threads must be >= 1, got {self.threads}")

    def setup(self) -> Path:
        """Check the options, set threads and seed, create ``out``; returns it."""
        self.check()
        if self.threads:
            torch.set_num_threads(self.threads)
        torch.manual_seed(self.seed)
        out = Path(self.out)
        out.mkdir(parents=True, exist_ok=True)
        return out


def held_out(key: str, fraction: float) -> bool:
    """Deterministic held-out membership of ``key`` (crc32), about ``fraction`` of all keys."""
    return zlib.crc32(key.encode("utf-8")) % 10_000 < fraction * 10_000


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, lengths: Sequence[int] | None = None, window: int = 64) -> list[list[int]]:
    """The batches of one epoch over items ``0..n-1``, a pure function of ``(seed, epoch)`` so a
    resumed run replays the same order. With ``lengths``, items are sorted by length inside
    windows of ``window`` batches before cutting (less padding) and the batches are shuffled."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(n))
    rng.shuffle(order)
    if lengths is None:
        return [order[s : s + batch_size] for s in range(0, n, batch_size)]
    span = batch_size * window
    batches: list[list[int]] = []
    for s in range(0, n, span):
        part = sorted(order[s : s + span], key=lambda i: lengths[i])
        batches += [part[j : j + batch_size] for j in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def batch_stream(n: int, batch_size: int, seed: int, start_step: int, lengths: Sequence[int] | None = None) -> Iterator[list[int]]:
    """Batches from global step ``start_step`` on, epoch after epoch (see ``epoch_batches``)."""
    per_epoch = len(epoch_batches(n, batch_size, seed, 0, lengths))
    epoch, skip = divmod(start_step, per_epoch)
    while True:
        yield from epoch_batches(n, batch_size, seed, epoch, lengths)[skip:]
        epoch, skip = epoch + 1, 0


def total_steps(cfg: LoopConfig, n: int, lengths: Sequence[int] | None = None) -> tuple[int, int]:
    """``(total steps, steps per epoch)`` for ``n`` training items."""
    per_epoch = len(epoch_batches(n, cfg.batch_size, cfg.seed, 0, lengths))
    return (cfg.steps or cfg.epochs * per_epoch), per_epoch


def embed(enc: SentenceEncoder, ids: Sequence[list[int]], normalize: bool | None = None) -> torch.Tensor:
    """Pooled vectors (B, H) of token-id lists through ``enc``'s model, with gradients: the same
    padding, precision and pooling as ``enc.encode``. ``normalize`` None follows the pooling config."""
    input_ids, mask = enc._collate(list(ids))  # (B, T), (B, T)
    with autocast_for(enc.precision, enc.device):
        hidden = enc.model(input_ids, mask).last_hidden_state  # (B, T, H)
    return pool_and_normalize(hidden.float(), mask, enc.pooling, normalize)  # (B, H)


def info_nce(queries: torch.Tensor, keys: torch.Tensor, scale: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE over scaled cosine similarities: ``queries`` (B, H) against ``keys`` (N, H), N >= B,
    where key i is row i's positive and every other key a negative. ``mask`` (B, N), True where a
    key must leave row i's softmax (another copy of one of its positives); never on the diagonal."""
    q = F.normalize(queries.float(), dim=-1)  # (B, H)
    k = F.normalize(keys.float(), dim=-1)  # (N, H)
    scores = scale * q @ k.T  # (B, N)
    if mask is not None:
        scores = scores.masked_fill(mask.to(scores.device), float("-inf"))
    return F.cross_entropy(scores, torch.arange(len(q), device=scores.device))


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with no weight decay on biases and LayerNorm weights."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "norm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


def load_run_state(out: str | Path) -> dict[str, Any] | None:
    """The saved training state in ``out/checkpoint.pt``, or None when there is none."""
    path = Path(out) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


class TrainRun:
    """The model-agnostic part of a training loop: AdamW with linear warm-up and decay
    (``common.schedule.warmup_lr_schedule``), a step counter, per-step losses and validation
    history that survive restarts through ``OUT/checkpoint.pt`` (written atomically), a time limit
    and a progress bar. ``extra`` holds the caller's own state (saved with the checkpoint)."""

    def __init__(self, cfg: LoopConfig, model: nn.Module, total: int, desc: str, state: dict[str, Any] | None = None) -> None:
        self.cfg = cfg
        self.model = model
        self.total = total
        self.path = Path(cfg.out) / CHECKPOINT_FILE
        self.opt = make_optimizer(model, cfg.lr, cfg.weight_decay)
        self.warm = max(1, int(cfg.warmup * total))
        self.step = 0
        self.losses: list[float] = []
        self.history: list[dict[str, Any]] = []
        self.extra: dict[str, Any] = {}
        self._seconds_before = 0.0
        if state is not None:
            model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["opt"])
            self.step = int(state["step"])
            self.losses = list(state.get("losses", []))
            self.history = list(state.get("history", []))
            self.extra = dict(state.get("extra", {}))
            self._seconds_before = float(state.get("seconds", 0.0))
            logger.info("resumed from %s at step %d of %d", self.path, self.step, total)
        self._started = time.perf_counter()
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=min(self.step, total), desc=desc, unit="step")

    @property
    def done(self) -> bool:
        return self.step >= self.total

    @property
    def seconds(self) -> float:
        """Training time over every run of this output directory."""
        return self._seconds_before + time.perf_counter() - self._started

    def update(self, loss: torch.Tensor) -> float:
        """One optimiser step on ``loss`` (gradients clipped at norm 1); returns the loss value."""
        lr = warmup_lr_schedule(self.step, self.total, self.warm, self.cfg.lr)
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.step += 1
        value = float(loss.detach())
        self.losses.append(value)
        recent = self.losses[-20:]
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}", lr=f"{lr:.2e}")
        return value

    def eval_due(self, per_epoch: int) -> bool:
        every = self.cfg.eval_every or per_epoch
        return self.step % every == 0 or self.step == self.total

    def out_of_time(self) -> bool:
        limit = self.cfg.max_minutes
        if limit is not None and (time.perf_counter() - self._started) / 60 >= limit:
            logger.info("time limit of %s minutes reached at step %d of %d", limit, self.step, self.total)
            return True
        return False

    def record(self, row: dict[str, Any]) -> None:
        """Add a validation row (step, mean loss since the previous row, minutes, figures) to the history."""
        since = self.losses[self.history[-1]["step"] if self.history else 0 : self.step]
        row = {"step": self.step, "loss": round(sum(since) / len(since), 4) if since else None,
               "minutes": round(self.seconds / 60, 1), **row}
        self.history.append(row)
        logger.info("validation %s", row)
        self.bar.write(json.dumps(row))

    def save(self) -> Path:
        """Write ``OUT/checkpoint.pt`` atomically: weights, optimiser, step, losses, history."""
        state = {
            "model": self.model.state_dict(), "opt": self.opt.state_dict(), "step": self.step,
            "losses": self.losses, "history": self.history, "extra": self.extra,
            "seconds": self.seconds, "config": asdict(self.cfg),
        }
        return atomic_replace(self.path, lambda tmp: torch.save(state, tmp))

    def end_step(self, evaluated: bool) -> bool:
        """After a step (and its validation, when ``evaluated``): save when validated, so ``best/``
        and the checkpoint's record agree, or every ``save_every`` steps. True once the time limit
        is reached."""
        if evaluated or self.step % self.cfg.save_every == 0:
            self.save()
        return self.out_of_time()

    def finish(self) -> None:
        """Close the progress bar and write the final checkpoint."""
        self.bar.close()
        self.save()


def evaluate_retrieval(
    enc: SentenceEncoder, doc_ids: Sequence[str], doc_texts: Sequence[str], queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]], *, batch_size: int = 64, doc_vecs: np.ndarray | None = None,
) -> dict[str, float]:
    """nDCG@10, Recall@100, MRR@10 of brute-force cosine retrieval of ``queries`` over the documents
    with ``enc`` (``doc_vecs`` when already embedded). Leaves the model in eval mode."""
    if doc_vecs is None:
        doc_vecs = enc.encode(list(doc_texts), batch_size=batch_size, show_progress=True)
    qids = list(queries)
    q_vecs = enc.encode([queries[q] for q in qids], batch_size=batch_size)
    run = dense_run(q_vecs, doc_vecs, qids, list(doc_ids), k=100)
    return evaluate(run, {q: qrels[q] for q in qids}, VAL_METRICS)


def write_model_card(path: Path, title: str, summary: str, facts: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> Path:
    """A ``README.md`` model card stub: what it is, how it was made, the validation history."""
    lines = [f"# {title}", "", summary, "", "| | |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in facts.items()]
    if history:
        lines += ["", "## Validation", "", "```"] + [json.dumps(dict(r)) for r in history] + ["```"]
    return atomic_write_text(path / "README.md", "\n".join(lines) + "\n")


# --- contrastive fine-tuning ---------------------------------------------------------------------


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
    return PairData(doc_ids, [doc_text(ds.corpus[d]) for d in doc_ids], dict(ds.queries), ds.qrels, positives, train_pairs, val_qids)


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
        k = min(depth + extra, scores.shape[1])
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # (Q, k)
        for i in range(len(qids)):
            lists[i].append(top[i][np.argsort(-scores[i, top[i]])].tolist())
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


def _negatives(cfg: EncoderTrainConfig, data: PairData, enc: SentenceEncoder, out: Path, base_dir: Path) -> tuple[dict[str, list[str]], np.ndarray | None]:
    """Hard negatives from ``OUT/negatives.json`` when it was mined with the same options, else
    mined now (and cached); also the base encoder's document vectors when they were computed."""
    train_qids = sorted({q for q, _ in data.train_pairs})
    key = hashlib.sha256(json.dumps({
        "data": str(Path(cfg.data).resolve()), "split": cfg.split, "base": str(base_dir.resolve()),
        "depth": cfg.mine_depth, "margin": cfg.mine_margin, "max_seq_len": cfg.max_seq_len, "qids": train_qids,
    }).encode()).hexdigest()
    path = out / "negatives.json"
    if path.is_file():
        cached = json.loads(path.read_text(encoding="utf-8"))
        if cached.get("key") == key:
            logger.info("hard negatives from %s", path)
            return cached["negatives"], None
        logger.warning("%s was mined with other options or data; mining again", path)
    t = time.perf_counter()
    doc_vecs = enc.encode(data.doc_texts, batch_size=cfg.encode_batch_size, show_progress=True)
    query_vecs = enc.encode([data.queries[q] for q in train_qids], batch_size=cfg.encode_batch_size)
    negatives = mine_hard_negatives(
        {q: data.queries[q] for q in train_qids}, data.positives, data.doc_ids, data.doc_texts,
        depth=cfg.mine_depth, margin=cfg.mine_margin, query_vecs=query_vecs, doc_vecs=doc_vecs,
    )
    atomic_write_text(path, json.dumps({"key": key, "negatives": negatives}))
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


def train_encoder(cfg: EncoderTrainConfig) -> Path:
    """Fine-tune (or resume fine-tuning) the base encoder; returns ``OUT/model``."""
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
        negatives, base_doc_vecs = _negatives(cfg, data, enc, out, base_dir)
    total, per_epoch = total_steps(cfg, len(data.train_pairs))
    run = TrainRun(cfg, model, total, "train encoder", state)
    val_idx = _val_docs(data, cfg.val_docs, cfg.seed)
    val_queries = {q: data.queries[q] for q in data.val_qids}
    val_qrels = {q: data.qrels[q] for q in data.val_qids}
    doc_index = {d: j for j, d in enumerate(data.doc_ids)}

    def validate(doc_vecs: np.ndarray | None = None) -> None:
        scores = evaluate_retrieval(
            enc, [data.doc_ids[j] for j in val_idx], [data.doc_texts[j] for j in val_idx], val_queries, val_qrels,
            batch_size=cfg.encode_batch_size, doc_vecs=None if doc_vecs is None else doc_vecs[val_idx],
        )
        run.record({k: round(v, 4) for k, v in scores.items()})
        if scores["ndcg@10"] > run.extra.get("best", -1.0):
            run.extra.update(best=scores["ndcg@10"], best_step=run.step)
            save_checkpoint(out / "best", model, ckpt.tokenizer, ckpt.pooling, ckpt.max_length)
        model.train()

    if val_queries and not run.history:
        validate(base_doc_vecs)  # step 0: the base model
    elif not val_queries:
        logger.warning("no queries held out (val_fraction %s): training without validation", cfg.val_fraction)

    model.train()
    stream = batch_stream(len(data.train_pairs), cfg.batch_size, cfg.seed, run.step)
    while not run.done:
        pairs = [data.train_pairs[i] for i in next(stream)]
        qids = [q for q, _ in pairs]
        keys = [d for _, d in pairs]
        rng = random.Random(cfg.seed * 1_000_003 + run.step)
        for q in qids:
            pool = negatives.get(q, [])
            keys += rng.sample(pool, min(cfg.hard_negatives, len(pool)))
        q_vecs = embed(enc, enc.tokenize([data.queries[q] for q in qids]), normalize=True)  # (B, H)
        k_vecs = embed(enc, enc.tokenize([data.doc_texts[doc_index[d]] for d in keys]), normalize=True)  # (N, H)
        run.update(info_nce(q_vecs, k_vecs, cfg.scale, _batch_mask(qids, keys, data.positives)))
        evaluated = bool(val_queries) and run.eval_due(per_epoch)
        if evaluated:
            validate()
        if run.end_step(evaluated):
            break
    run.finish()
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
    for where in (path, out / "best") if "best" in run.extra else (path,):
        write_model_card(where, "Fine-tuned sentence encoder", "Contrastive fine-tuning of the base encoder with `attend train encoder`.", facts, run.history)
    atomic_write_text(out / "history.json", json.dumps(run.history, indent=2) + "\n")
    if run.step < run.total:
        logger.info("stopped at step %d of %d; run the same command to continue", run.step, run.total)
    return path
