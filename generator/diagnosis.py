"""Attention diagnostics of one answer: why did it miss a chunk?

:func:`diagnose_answer` takes a finished answer (the ``AnswerResult`` of the normal answer path)
and the hits it was made from, re-runs the generator once over the prompt and the answer's
decoder inputs (:mod:`generator.attention_share`) and keeps, from each layer and head, the
attention rows of the answer steps over the prompt tokens, renormalised to sum to 1 over the
prompt. A chunk's **attention share** is the mass of those rows on the chunk's text tokens (its
``[CHUNK]``/``[SEP]`` markers excluded), averaged over the answer steps. The aggregate ``share`` is
the mean over the heads of the **last layer** (``AGGREGATE_LAYER``): the layer whose output the
copy head reads when it picks the answer span. Lower layers attend broadly (measured on 92 correct
dev-v1.1 answers with the gold chunk among >= 2: the gold chunk has the largest share in 33-44% of
cases in layers 1-4, 78% in layer 5, 98% in layer 6, 51% for the mean over all layers), so
averaging them in hides the signal; ``share_all_layers`` keeps that mean, and every (layer, head)
share is reported. A chunk's **uniform share** is what a uniform reader would give it: chunk
tokens / all prompt tokens.

Every retrieved chunk gets a verdict (:func:`chunk_verdict`):

- ``cut``: dropped by the context filter, with the reason (``score_floor``, ``duplicate`` or
  ``budget``);
- ``ignored``: in the context, attention share below its uniform share;
- ``used``: in the context, attention share at least its uniform share;

and an expected chunk that is not among the retrieved ones is ``not_retrieved``. The expected chunk
(:func:`pick_expected`) is a retrieved chunk of the expected document and/or one whose text
contains the expected answer (case-insensitive); among several, the one that got furthest (in the
context, highest share relative to uniform; else the best-ranked cut one).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from common.errors import InvalidInput
from generator.attention_share import (
    AGGREGATE_LAYER,
    answer_attention,
    causal_answer_attention,
    chunk_shares,
    prompt_attention,
    token_shares,
    uniform_shares,
)
from generator.prompt import Prompt

if TYPE_CHECKING:
    from generator.answer import AnswerResult
    from retriever.hybrid import Hit

VERDICTS = ("not_retrieved", "cut", "ignored", "used")


class AttentionReader(Protocol):
    """What a diagnosis reads attention from: the answerer that produced the answer
    (``generator.answer.Answerer`` or ``generator.generative.GenerativeAnswerer``)."""

    @property
    def decoder(self) -> Any: ...


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


def round_or_none(v: float | None, decimals: int) -> float | None:
    """``v`` rounded to ``decimals``, None staying None."""
    return None if v is None else round(float(v), decimals)


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
            row["lift"] = round_or_none(c.lift, decimals)
            for key in ("share", "uniform_share", "share_all_layers"):
                row[key] = round_or_none(row[key], decimals)
            if row["share_by_layer_head"] is not None:
                row["share_by_layer_head"] = [[round(v, decimals) for v in r] for r in row["share_by_layer_head"]]
            if tokens and c.in_context and mean is not None:
                pieces = self.chunk_pieces(c)
                row["tokens"] = [piece for _, piece in pieces]
                row["token_attention"] = [round(float(mean[t]), 6) for t, _ in pieces]
            rows.append(row)
        out["chunks"] = rows
        return out


def diagnose_answer(
    answerer: AttentionReader,
    question: str,
    hits: Sequence[Hit],
    result: AnswerResult,
    *,
    expected_doc_id: str | None = None,
    expected_answers: Sequence[str] = (),
) -> Diagnosis:
    """Diagnose one finished answer to ``question``: ``result`` is the ``AnswerResult`` that
    ``answerer`` (extractive or generative) produced from ``hits``, the retrieved chunks in rank
    order. With ``expected_doc_id`` and/or ``expected_answers``, the expected chunk is picked and
    its verdict becomes the diagnosis's."""
    ctx, prompt, qa = result.context, result.prompt, result.qa
    causal = bool(getattr(prompt, "causal", False))
    decoder = answerer.decoder
    cfg = decoder.config
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
        attn = (causal_answer_attention(decoder, prompt.input_ids, answer_ids) if causal
                else answer_attention(decoder, prompt, answer_ids))
        tokens = token_shares(prompt_attention(attn, p_len))  # (L, H, P)
        shares = chunk_shares(tokens, prompt.chunk_spans)  # (C, L, H)
        uniform = uniform_shares(prompt.chunk_spans, p_len)
        timings["attention_ms"] = (time.perf_counter() - t0) * 1e3
    chunks = []
    for h in hits:
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
