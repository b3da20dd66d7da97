"""Attention diagnostics: why did an answer miss a chunk?

:func:`diagnose` runs the normal answer path (``Engine.answer``), then re-runs the generator once
over the prompt plus the answer's decoder inputs (``[ANS]`` and the copied tokens; ``[ANS]`` alone
for an abstention) with the reference attention path, the parallel-context mask and the position
ids the model decodes with. From each layer and head it keeps the attention rows of those answer
steps over the prompt tokens, renormalised to sum to 1 over the prompt. A chunk's **attention
share** is the mass of those rows on the chunk's text tokens (its ``[CHUNK]``/``[SEP]`` markers
excluded), averaged over the answer steps. The aggregate ``share`` is the mean over the heads of
the **last layer** (``AGGREGATE_LAYER``): the layer whose output the copy head reads when it picks
the answer span. Lower layers attend broadly (measured on 92 correct dev-v1.1 answers with the gold
chunk among >= 2: the gold chunk has the largest share in 33-44% of cases in layers 1-4, 78% in
layer 5, 98% in layer 6, 51% for the mean over all layers), so averaging them in hides the signal;
``share_all_layers`` keeps that mean, and every (layer, head) share is reported. A chunk's
**uniform share** is what a uniform reader would give it: chunk tokens / all prompt tokens.

Every retrieved chunk gets a verdict (:func:`chunk_verdict`):

- ``cut``: dropped by the context filter, with the reason (``score_floor``, ``duplicate`` or
  ``budget``);
- ``ignored``: in the context, attention share below its uniform share;
- ``used``: in the context, attention share at least its uniform share;

and an expected chunk that is not among the retrieved ones is ``not_retrieved``. The expected chunk
(:func:`pick_expected`) is a retrieved chunk of the expected document and/or one whose text
contains the expected answer (case-insensitive); among several, the one that got furthest (in the
context, highest share relative to uniform; else the best-ranked cut one).

Over an eval set (:func:`run_diagnose_bench`), wrong answers (F1 < 0.5, abstentions included) of
answerable questions are attributed to ``not_retrieved``, ``cut``, ``ignored`` or
``used_but_wrong``; among correct answers with the gold chunk in a context of at least two chunks,
``gold_top_attention_rate`` is how often the gold chunk has the largest attention share and
``gold_top_retrieval_rate`` how often it is the best-ranked chunk of the context.
"""

from __future__ import annotations

import copy
import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from common.errors import InvalidInput
from eval.squad import f1_score, gold_answers
from generator.prompt import Prompt

logger = logging.getLogger(__name__)

VERDICTS = ("not_retrieved", "cut", "ignored", "used")
AGGREGATE_LAYER = -1  # the layer whose per-head mean is a chunk's attention share (see above)
FAILURE_KINDS = ("not_retrieved", "cut", "ignored", "used_but_wrong")
CORRECT_F1 = 0.5

_FORWARD_LOCK = threading.Lock()  # the row-slicing hooks below are per model, so one pass at a time


# --- attention over the prompt -------------------------------------------------------------------


@contextmanager
def _answer_rows_only(decoder: Any, first_row: int, n_rows: int) -> Iterator[None]:
    """While active, each attention layer of ``decoder`` hands up only the weights of query rows
    ``first_row ..`` of a pass with ``first_row + n_rows`` queries, so a long prompt costs
    L*H*A*T floats instead of L*H*T*T. Other passes are left alone."""
    total = first_row + n_rows

    def hook(module: Any, args: Any, output: Any) -> Any:
        y, w = output
        if w is None or w.shape[-2] != total:
            return output
        return y, w[:, :, first_row:].clone()  # (B, H, A, Tk)

    handles = [layer.attention.register_forward_hook(hook) for layer in decoder.layers]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.inference_mode()
def answer_attention(model: Any, prompt: Prompt, answer_ids: Sequence[int]) -> Tensor:
    """Attention weights of the answer steps of a :class:`generator.qa_model.GroundedQA`, from one
    pass over ``prompt`` + ``answer_ids`` with the reference path: (L, H, A, P + A), rows over
    every key (prompt and answer). The mask and position ids are those the model decodes with."""
    from generator.qa_model import parallel_context_mask

    dec = model.decoder
    p, a = len(prompt.input_ids), len(answer_ids)
    if p == 0 or a == 0:
        raise InvalidInput("the prompt and the answer must be non-empty")
    device = dec.device
    ids = torch.tensor([list(prompt.input_ids) + list(answer_ids)], device=device)  # (1, P + A)
    a0 = prompt.answer_start_position
    positions = torch.tensor([list(prompt.position_ids) + [a0 + i for i in range(a)]], device=device)  # (1, P + A)
    block = torch.tensor([prompt.block], device=device)  # (1, P)
    mask = parallel_context_mask(block, torch.tensor([p], device=device), torch.ones_like(ids, dtype=torch.bool))
    with _FORWARD_LOCK, _answer_rows_only(dec, p, a):
        out = dec(ids, position_ids=positions, attn_mask=mask, attn_impl="reference",
                  output_attentions=True, compute_logits=False)
    return torch.stack([w[0] for w in out.attentions]).float()  # (L, H, A, P + A)


@torch.inference_mode()
def causal_answer_attention(decoder: Any, prompt_ids: Sequence[int], answer_ids: Sequence[int]) -> Tensor:
    """Attention weights of a left-to-right (chat) model's answer steps, from one pass over
    ``prompt_ids`` + ``answer_ids[:-1]`` with the reference path: (L, H, A, P + A - 1). Row ``k`` is
    the query at position ``P - 1 + k``, the one whose logits chose answer token ``k``, so it is
    what the model attended to while writing that token."""
    p, a = len(prompt_ids), len(answer_ids)
    if p == 0 or a == 0:
        raise InvalidInput("the prompt and the answer must be non-empty")
    ids = torch.tensor([list(prompt_ids) + list(answer_ids[:-1])], device=decoder.device)  # (1, P + A - 1)
    with _FORWARD_LOCK, _answer_rows_only(decoder, p - 1, a):
        out = decoder(ids, attn_impl="reference", output_attentions=True, compute_logits=False)
    return torch.stack([w[0] for w in out.attentions]).float()  # (L, H, A, P + A - 1)


def prompt_attention(attn: Tensor | np.ndarray, prompt_len: int) -> np.ndarray:
    """Rows of ``attn`` (L, H, A, Tk) restricted to the first ``prompt_len`` keys and renormalised
    to sum to 1 there: (L, H, A, P). A row with no mass on the prompt stays all zero."""
    w = np.asarray(attn.detach().cpu() if isinstance(attn, Tensor) else attn, dtype=np.float64)[..., :prompt_len]
    total = w.sum(-1, keepdims=True)
    return np.divide(w, total, out=np.zeros_like(w), where=total > 0)


def token_shares(prompt_attn: np.ndarray) -> np.ndarray:
    """Per prompt token, the mean over answer steps of the normalised weights: (L, H, A, P) ->
    (L, H, P); each (layer, head) row sums to 1."""
    return np.asarray(prompt_attn).mean(axis=2)


def chunk_shares(tokens: np.ndarray, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """Each chunk's share of the attention: ``tokens`` (L, H, P) summed over each span [start,
    end) -> (C, L, H)."""
    t = np.asarray(tokens)
    if not spans:
        return np.zeros((0, *t.shape[:2]))
    return np.stack([t[..., s:e].sum(-1) for s, e in spans])


def uniform_shares(spans: Sequence[tuple[int, int]], prompt_len: int) -> list[float]:
    """What a uniform reader gives each chunk: its text tokens / all prompt tokens."""
    if prompt_len <= 0:
        raise InvalidInput("the prompt is empty")
    return [(e - s) / prompt_len for s, e in spans]


# --- verdicts --------------------------------------------------------------------------------------


def chunk_verdict(retrieved: bool, cut_reason: str | None, share: float | None, uniform: float | None) -> str:
    """``not_retrieved``, ``cut`` (``cut_reason`` given), ``ignored`` (share < uniform) or
    ``used`` (share >= uniform)."""
    if not retrieved:
        return "not_retrieved"
    if cut_reason is not None:
        return "cut"
    if share is None or uniform is None:
        raise InvalidInput("a chunk in the context needs its attention share and uniform share")
    return "used" if share >= uniform else "ignored"


def failure_kind(verdict: str) -> str:
    """What a wrong answer is attributed to: the expected chunk's verdict, ``used`` becoming
    ``used_but_wrong``."""
    if verdict not in VERDICTS:
        raise InvalidInput(f"unknown verdict {verdict!r}")
    return "used_but_wrong" if verdict == "used" else verdict


@dataclass
class ChunkDiagnosis:
    """One retrieved chunk: where it went and how much of the answer's attention it got."""

    rank: int
    chunk_id: int
    doc_id: str
    title: str
    text: str  # what the generator read (shortened if truncated), or the retrieved text if cut
    scores: dict[str, float | None]
    in_context: bool
    context_index: int | None  # place in the prompt, 0-based
    cut_reason: str | None
    truncated: bool
    n_tokens: int  # text tokens in the prompt (0 when cut)
    share: float | None  # mean over the heads of AGGREGATE_LAYER
    uniform_share: float | None
    share_by_layer_head: list[list[float]] | None  # (L, H)
    verdict: str
    expected: bool = False
    most_attended: bool = False
    share_all_layers: float | None = None  # mean over every layer and head

    @property
    def lift(self) -> float | None:
        """share / uniform share (1 = what a uniform reader gives)."""
        if self.share is None or not self.uniform_share:
            return None
        return self.share / self.uniform_share


def _matches(text: str, doc_id: str, expected_doc_id: str | None, answers: Sequence[str]) -> int:
    """0 no match; otherwise a tier: 2 for the expected document *and* an answer, 1 for one asked."""
    folded = text.casefold()
    has_answer = any(a and a.casefold() in folded for a in answers)
    if expected_doc_id is not None:
        if doc_id != expected_doc_id:
            return 0
        return 2 if has_answer else 1
    return 1 if has_answer else 0


def pick_expected(
    chunks: Sequence[ChunkDiagnosis], expected_doc_id: str | None, expected_answers: Sequence[str] = ()
) -> ChunkDiagnosis | None:
    """The expected chunk among ``chunks`` (see the module docstring), or None (not retrieved).
    Matching on the answer uses the chunk's text, case-insensitively."""
    if expected_doc_id is None and not any(expected_answers):
        raise InvalidInput("nothing is expected: give an expected document or answer")
    scored = [(_matches(c.text, c.doc_id, expected_doc_id, expected_answers), c) for c in chunks]
    best_tier = max((t for t, _ in scored), default=0)
    if best_tier == 0:
        return None
    tier = [c for t, c in scored if t == best_tier]
    return max(tier, key=lambda c: (c.in_context, c.lift if c.lift is not None else -math.inf, -c.rank))


@dataclass
class Diagnosis:
    """The answer, every retrieved chunk's fate and attention share, and the verdict."""

    question: str
    answer: str | None
    abstained: bool
    cited_chunk_id: int | None
    chunks: list[ChunkDiagnosis]  # retrieval rank order
    n_layers: int
    n_heads: int
    prompt_tokens: int
    answer_steps: int
    expected_doc_id: str | None = None
    expected_answers: list[str] = field(default_factory=list)
    expected_chunk_id: int | None = None
    verdict: str | None = None  # for the expected chunk; None when nothing is expected
    cut_reason: str | None = None
    most_attended_chunk_id: int | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    answer_token_span: tuple[int, int] | None = None  # prompt positions of the copied answer
    prompt: Prompt | None = field(default=None, repr=False)
    token_attention: np.ndarray | None = field(default=None, repr=False)  # (L, H, P)

    @property
    def in_context(self) -> list[ChunkDiagnosis]:
        return sorted((c for c in self.chunks if c.in_context), key=lambda c: c.context_index or 0)

    def chunk_pieces(self, chunk: ChunkDiagnosis) -> list[tuple[int, str]]:
        """(prompt position, text piece) per token of an in-context chunk; a piece runs from the
        previous token's end, so the pieces concatenate to the chunk's text."""
        if self.prompt is None or chunk.context_index is None:
            return []
        p = self.prompt
        s, e = p.chunk_spans[chunk.context_index]
        text = p.chunks[chunk.context_index].text
        out, prev = [], 0
        for t in range(s, e):
            end = p.token_chars[t][1]
            out.append((t, text[prev:end]))
            prev = max(prev, end)
        if out and prev < len(text):
            out[-1] = (out[-1][0], out[-1][1] + text[prev:])
        return out

    def to_dict(self, *, tokens: bool = False, decimals: int = 4) -> dict[str, Any]:
        """A JSON-ready dict; ``tokens``: add each in-context chunk's text pieces and the
        attention per token (mean over the heads of ``AGGREGATE_LAYER`` and the answer steps)."""
        skip = ("prompt", "token_attention", "chunks")
        out = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name not in skip}
        mean = self.token_attention[AGGREGATE_LAYER].mean(axis=0) if self.token_attention is not None else None
        rows = []
        for c in self.chunks:
            row = asdict(c)
            row["lift"] = _round(c.lift, decimals)
            for key in ("share", "uniform_share", "share_all_layers"):
                row[key] = _round(row[key], decimals)
            if row["share_by_layer_head"] is not None:
                row["share_by_layer_head"] = [[round(v, decimals) for v in r] for r in row["share_by_layer_head"]]
            if tokens and c.in_context and mean is not None:
                pieces = self.chunk_pieces(c)
                row["tokens"] = [piece for _, piece in pieces]
                row["token_attention"] = [round(float(mean[t]), 6) for t, _ in pieces]
            rows.append(row)
        out["chunks"] = rows
        return out


def _round(v: float | None, decimals: int) -> float | None:
    return None if v is None else round(float(v), decimals)


def diagnose_answer(
    model: Any,
    found: Any,
    result: Any,
    *,
    question: str,
    expected_doc_id: str | None = None,
    expected_answers: Sequence[str] = (),
) -> Diagnosis:
    """Diagnose one finished answer: ``found`` the ``SearchResult``, ``result`` the
    ``AnswerResult`` of ``Engine.answer``, ``model`` the ``GroundedQA`` (extractive) or the chat
    model (generative) that produced it."""
    ctx, prompt, qa = result.context, result.prompt, result.qa
    causal = bool(getattr(prompt, "causal", False))
    cfg = model.decoder.config
    kept_index = {c.chunk_id: i for i, c in enumerate(ctx.kept)}
    cut_reason = {c.chunk_id: reason for c, reason in ctx.cut}
    truncated = set(ctx.truncated)
    tokens = shares = None
    uniform: list[float] = []
    answer_ids = list(result.answer_ids) if causal else list(qa.answer_ids) if qa is not None else []
    timings = dict(result.timings_ms)
    if prompt is not None and prompt.chunks and answer_ids:
        t0 = time.perf_counter()
        p_len = len(prompt.input_ids)
        attn = (causal_answer_attention(model.decoder, prompt.input_ids, answer_ids) if causal
                else answer_attention(model, prompt, answer_ids))
        tokens = token_shares(prompt_attention(attn, p_len))  # (L, H, P)
        shares = chunk_shares(tokens, prompt.chunk_spans)  # (C, L, H)
        uniform = uniform_shares(prompt.chunk_spans, p_len)
        timings["attention_ms"] = (time.perf_counter() - t0) * 1e3
    chunks = []
    for h in found.hits:
        ci = kept_index.get(h.chunk_id)
        in_ctx = ci is not None and shares is not None and ci < len(shares)
        reason = None if in_ctx else cut_reason.get(h.chunk_id, "not_in_prompt")
        share = float(shares[ci][AGGREGATE_LAYER].mean()) if in_ctx else None  # type: ignore[index]
        uni = uniform[ci] if in_ctx else None  # type: ignore[index]
        chunks.append(ChunkDiagnosis(
            rank=h.rank, chunk_id=int(h.chunk_id), doc_id=h.doc_id, title=h.title,
            text=prompt.chunks[ci].text if in_ctx else h.text,  # type: ignore[union-attr,index]
            scores=dict(h.scores), in_context=in_ctx, context_index=ci if in_ctx else None,
            cut_reason=reason, truncated=h.chunk_id in truncated,
            n_tokens=(prompt.chunk_spans[ci][1] - prompt.chunk_spans[ci][0]) if in_ctx else 0,  # type: ignore[union-attr,index]
            share=share, uniform_share=uni,
            share_by_layer_head=shares[ci].tolist() if in_ctx else None,  # type: ignore[index]
            verdict=chunk_verdict(True, reason, share, uni),
            share_all_layers=float(shares[ci].mean()) if in_ctx else None,  # type: ignore[index]
        ))
    kept = [c for c in chunks if c.in_context]
    top = max(kept, key=lambda c: (c.share or 0.0, -c.rank)) if kept else None
    if top is not None:
        top.most_attended = True
    diag = Diagnosis(
        question=question,
        answer=result.answer,
        abstained=result.abstained,
        cited_chunk_id=int(result.citations[0].chunk_id) if result.citations else None,
        chunks=chunks,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        prompt_tokens=len(prompt.input_ids) if prompt is not None else 0,
        answer_steps=len(answer_ids) if tokens is not None else 0,
        expected_doc_id=expected_doc_id,
        expected_answers=[a for a in expected_answers if a],
        most_attended_chunk_id=top.chunk_id if top is not None else None,
        timings_ms=timings,
        answer_token_span=tuple(qa.token_span) if qa is not None and not qa.abstained and not causal else None,
        prompt=prompt,
        token_attention=tokens,
    )
    if expected_doc_id is not None or diag.expected_answers:
        exp = pick_expected(chunks, expected_doc_id, diag.expected_answers)
        if exp is None:
            diag.verdict = "not_retrieved"
        else:
            exp.expected = True
            diag.expected_chunk_id, diag.verdict, diag.cut_reason = exp.chunk_id, exp.verdict, exp.cut_reason
    return diag


def diagnose(
    engine: Any,
    collection: str,
    question: str,
    *,
    k: int = 8,
    budget: int = 512,
    mode: str = "hybrid",
    filters: dict[str, Any] | None = None,
    score_floor: float | None = None,
    abstain_threshold: float | None = None,
    expected_doc_id: str | None = None,
    expected_answers: Sequence[str] = (),
    generator: str | None = None,
    abstain_unsupported: bool = False,
) -> Diagnosis:
    """Answer ``question`` through ``Engine.answer`` (with ``generator``, see
    ``Engine.resolve_generator``) and diagnose the answer's attention."""
    name = engine.resolve_generator(generator, collection)
    found, result = engine.answer(
        collection, question, k=k, budget=budget, mode=mode, filters=filters, score_floor=score_floor,
        abstain_threshold=abstain_threshold, generator=name, abstain_unsupported=abstain_unsupported,
    )
    return diagnose_answer(engine.answerer(name).model, found, result, question=question,
                           expected_doc_id=expected_doc_id, expected_answers=expected_answers)


# --- over an eval set ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiagnosedQuestion:
    """One question's answer quality and its gold chunk's fate."""

    qid: str
    f1: float
    abstained: bool
    verdict: str
    cut_reason: str | None
    context_chunks: int
    gold_top_attention: bool | None  # None unless the gold chunk is in the context
    gold_top_retrieval: bool | None
    gold_top_lift: bool | None  # largest share / uniform share
    gold_top_all_layers: bool | None = None  # largest share_all_layers (mean over every layer)


def gold_tops(diag: Diagnosis) -> tuple[bool | None, bool | None, bool | None, bool | None]:
    """Whether the expected chunk has the largest attention share, the best rank, the largest
    share relative to uniform, and the largest all-layer share among the chunks in the context
    (None each when it is not there)."""
    exp = next((c for c in diag.chunks if c.expected), None)
    kept = [c for c in diag.chunks if c.in_context]
    if exp is None or not exp.in_context:
        return None, None, None, None
    return (
        exp.share == max(c.share or 0.0 for c in kept),
        exp.rank == min(c.rank for c in kept),
        exp.lift == max(c.lift or 0.0 for c in kept),
        exp.share_all_layers == max(c.share_all_layers or 0.0 for c in kept),
    )


def summarize_diagnoses(records: Sequence[DiagnosedQuestion]) -> dict[str, Any]:
    """Failure attribution of the wrong answers (F1 < 0.5) and gold-top rates of the correct ones
    with the gold chunk in a context of at least two chunks. Rates are ``None`` without cases."""
    wrong = [r for r in records if r.f1 < CORRECT_F1]
    correct = [r for r in records if r.f1 >= CORRECT_F1]
    verdicts = {kind: 0 for kind in FAILURE_KINDS}
    cut_reasons: dict[str, int] = {}
    for r in wrong:
        verdicts[failure_kind(r.verdict)] += 1
        if r.verdict == "cut" and r.cut_reason:
            cut_reasons[r.cut_reason] = cut_reasons.get(r.cut_reason, 0) + 1
    eligible = [r for r in correct if r.gold_top_attention is not None and r.context_chunks >= 2]

    def rate(key: str) -> float | None:
        return sum(bool(getattr(r, key)) for r in eligible) / len(eligible) if eligible else None

    return {
        "n": len(records),
        "n_wrong": len(wrong),
        "n_correct": len(correct),
        "n_correct_with_gold": len(eligible),
        "verdicts": verdicts,
        "cut_reasons": cut_reasons,
        "gold_top_attention_rate": rate("gold_top_attention"),
        "gold_top_retrieval_rate": rate("gold_top_retrieval"),
        "gold_top_lift_rate": rate("gold_top_lift"),
        "gold_top_all_layers_rate": rate("gold_top_all_layers"),
        "f1": sum(r.f1 for r in records) / len(records) if records else None,
    }


@dataclass
class DiagnoseBenchConfig:
    """What ``attend bench diagnose`` runs (answerable questions only)."""

    data: Path
    limit: int | None = None
    budget: int = 512
    k: int = 10
    mode: str = "hybrid"
    generator: str = "attend-qa"
    data_dir: Path | None = None
    collection: str | None = None
    seed: int = 0
    abstain_threshold: float | None = None


def run_diagnose_bench(cfg: DiagnoseBenchConfig, *, engine: Any = None, progress: bool = True) -> dict[str, Any]:
    """Diagnose the answers to the answerable questions of a SQuAD file; the expected chunk is the
    gold paragraph's chunk holding a reference answer (else any chunk of the gold paragraph).
    Returns :func:`summarize_diagnoses` plus ``questions`` (one row each) and ``config``."""
    from eval.rag_bench import (
        bench_engine,
        collection_name,
        prepare_collection,
        sample_questions,
        squad_documents,
    )
    from eval.squad import load_squad

    examples = load_squad(cfg.data)
    if engine is None:
        with bench_engine(cfg.data_dir, cfg.generator) as eng:
            return run_diagnose_bench(cfg, engine=eng, progress=progress)
    from tqdm.auto import tqdm

    engine.answerer()  # load (and fail) before indexing
    prepared = prepare_collection(engine, cfg.collection or collection_name(cfg.data), squad_documents(examples),
                                  progress=progress)
    answerable = [ex for ex in examples if any(gold_answers(ex))]
    questions = sample_questions(answerable, cfg.limit, cfg.seed)
    records: list[DiagnosedQuestion] = []
    rows: list[dict[str, Any]] = []
    for ex in tqdm(questions, unit="q", desc="bench diagnose", disable=not progress):
        golds = gold_answers(ex)
        diag = diagnose(engine, prepared.collection, ex.question, k=cfg.k, budget=cfg.budget, mode=cfg.mode,
                        abstain_threshold=cfg.abstain_threshold, expected_doc_id=ex.paragraph_id,
                        expected_answers=golds)
        prediction = "" if diag.abstained else (diag.answer or "")
        top_attn, top_ret, top_lift, top_all = gold_tops(diag)
        rec = DiagnosedQuestion(
            qid=ex.qid, f1=f1_score(prediction, golds), abstained=diag.abstained,
            verdict=diag.verdict or "not_retrieved", cut_reason=diag.cut_reason,
            context_chunks=len(diag.in_context), gold_top_attention=top_attn, gold_top_retrieval=top_ret,
            gold_top_lift=top_lift,
            gold_top_all_layers=top_all,
        )
        records.append(rec)
        exp = next((c for c in diag.chunks if c.expected), None)
        rows.append({**asdict(rec), "question": ex.question, "prediction": prediction,
                     "gold_share": _round(exp.share, 4) if exp else None,
                     "gold_uniform_share": _round(exp.uniform_share, 4) if exp else None})
    config = {**{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
              "collection": prepared.collection, "documents": prepared.documents, "indexed": prepared.indexed,
              "skipped_unanswerable": len(examples) - len(answerable)}
    return {**summarize_diagnoses(records), "questions": rows, "config": config}
