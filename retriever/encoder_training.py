"""What the encoder trainers (fine-tuning, :mod:`retriever.train_encoder`, and distillation,
:mod:`retriever.distill`) share on top of :mod:`common.training`: their options
(:class:`LoopConfig`), pooled vectors with gradients (:func:`embed`), the InfoNCE loss, retrieval
validation and the model card.

Validation ranks queries over documents by brute-force cosine (:func:`retriever.exact_search.dense_run`)
and hands the run to a ``score_run`` callable for the figures (``VAL_METRICS``): the trainers
compute no metrics themselves, the command that starts them passes the scorer (``attend train``
passes ``eval.metrics.evaluate``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.atomic import atomic_write_text
from common.errors import InvalidInput
from common.training import TrainRun, epoch_batches
from retriever.embedder import SentenceEncoder, autocast_for
from retriever.exact_search import dense_run
from retriever.pooling import pool_and_normalize

logger = logging.getLogger(__name__)

TRAIN_PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
VAL_METRICS: tuple[str, ...] = ("ndcg@10", "recall@100", "mrr@10")
VAL_DEPTH = 100  # documents ranked per validation query

RunScorer = Callable[[Mapping[str, Mapping[str, float]], Mapping[str, Mapping[str, int]], Sequence[str]], dict[str, float]]
"""``score_run(run, qrels, metrics)``: the named figures of a run ``{qid: {doc_id: score}}``
against qrels ``{qid: {doc_id: relevance}}`` (the signature of ``eval.metrics.evaluate``)."""


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

    def total_steps(self, n: int, lengths: Sequence[int] | None = None) -> tuple[int, int]:
        """``(total steps, steps per epoch)`` for ``n`` training items."""
        per_epoch = len(epoch_batches(n, self.batch_size, self.seed, 0, lengths))
        return (self.steps or self.epochs * per_epoch), per_epoch

    def train_run(
        self, model: nn.Module, total: int, desc: str, state: Mapping[str, Any] | None,
        lr_scales: Mapping[str, float] | None = None,
    ) -> TrainRun:
        """The :class:`common.training.TrainRun` of these options (resumed from ``state``);
        ``lr_scales``: learning-rate multiples by parameter-name prefix."""
        return TrainRun(
            model, out=self.out, total=total, lr=self.lr, warmup=self.warmup, weight_decay=self.weight_decay,
            save_every=self.save_every, max_minutes=self.max_minutes, desc=desc, config=asdict(self), state=state,
            lr_scales=lr_scales,
        )


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


def evaluate_retrieval(
    enc: SentenceEncoder, doc_ids: Sequence[str], doc_texts: Sequence[str], queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]], score_run: RunScorer, *, batch_size: int = 64,
    doc_vecs: np.ndarray | None = None,
) -> dict[str, float]:
    """``VAL_METRICS`` of brute-force cosine retrieval of ``queries`` over the documents with
    ``enc`` (``doc_vecs`` when already embedded), scored by ``score_run``. Leaves the model in
    eval mode."""
    if doc_vecs is None:
        doc_vecs = enc.encode(list(doc_texts), batch_size=batch_size, show_progress=True)
    qids = list(queries)
    q_vecs = enc.encode([queries[q] for q in qids], batch_size=batch_size)
    run = dense_run(q_vecs, doc_vecs, qids, list(doc_ids), k=VAL_DEPTH)
    return score_run(run, {q: qrels[q] for q in qids}, VAL_METRICS)


def write_model_card(path: Path, title: str, summary: str, facts: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> Path:
    """A ``README.md`` model card stub: what it is, how it was made, the validation history."""
    lines = [f"# {title}", "", summary, "", "| | |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in facts.items()]
    if history:
        lines += ["", "## Validation", "", "```"] + [json.dumps(dict(r)) for r in history] + ["```"]
    return atomic_write_text(path / "README.md", "\n".join(lines) + "\n")


def finish_run(run: TrainRun, out: Path, path: Path, title: str, summary: str, facts: Mapping[str, Any]) -> None:
    """What every encoder trainer writes at the end: the model card in ``path`` (and in
    ``OUT/best`` when the run kept a best model), ``OUT/history.json``, and a note when the run
    stopped early (the same command resumes it)."""
    for where in (path, out / "best") if "best" in run.extra else (path,):
        write_model_card(where, title, summary, facts, run.history)
    atomic_write_text(out / "history.json", json.dumps(run.history, indent=2) + "\n")
    if run.step < run.total:
        logger.info("stopped at step %d of %d; run the same command to continue", run.step, run.total)
