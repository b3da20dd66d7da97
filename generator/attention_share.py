"""How much of an answer's attention each part of the prompt got.

The answer steps are re-run once with the reference attention path, the mask and the position ids
the model decodes with: for the extractive :class:`generator.qa_model.GroundedQA`, the prompt plus
the answer's decoder inputs (``[ANS]`` and the copied tokens; ``[ANS]`` alone for an abstention)
under the parallel-context mask (:func:`answer_attention`); for a left-to-right chat model, the
prompt plus the answer tokens but the last, each answer token read at the query that chose it
(:func:`causal_answer_attention`). Hooks keep only the answer rows of each layer's attention, so a
long prompt costs L*H*A*T floats instead of L*H*T*T.

Those rows, restricted to the prompt and renormalised to sum to 1 there (:func:`prompt_attention`),
averaged over the answer steps (:func:`token_shares`) and summed over a chunk's text tokens
(:func:`chunk_shares`), give the chunk's **attention share** per layer and head. A uniform reader
would give a chunk its text tokens / all prompt tokens (:func:`uniform_shares`). The share a
diagnosis reports is the mean over the heads of ``AGGREGATE_LAYER``, the last layer: the one whose
output the copy head reads when it picks the answer span (see :mod:`generator.diagnosis`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor

from common.errors import InvalidInput
from generator.prompt import Prompt

AGGREGATE_LAYER = -1  # the layer whose per-head mean is a chunk's attention share

_FORWARD_LOCK = threading.Lock()  # the row-slicing hooks below are per model, so one pass at a time


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
def answer_attention(decoder: Any, prompt: Prompt, answer_ids: Sequence[int]) -> Tensor:
    """Attention weights of the answer steps of the extractive model whose ``decoder`` is given,
    from one pass over ``prompt`` + ``answer_ids`` with the reference path: (L, H, A, P + A), rows
    over every key (prompt and answer). The mask and position ids are those the model decodes with."""
    from generator.qa_model import parallel_context_mask

    p, a = len(prompt.input_ids), len(answer_ids)
    if p == 0 or a == 0:
        raise InvalidInput("the prompt and the answer must be non-empty")
    device = decoder.device
    ids = torch.tensor([list(prompt.input_ids) + list(answer_ids)], device=device)  # (1, P + A)
    a0 = prompt.answer_start_position
    positions = torch.tensor([list(prompt.position_ids) + [a0 + i for i in range(a)]], device=device)  # (1, P + A)
    block = torch.tensor([prompt.block], device=device)  # (1, P)
    mask = parallel_context_mask(block, torch.tensor([p], device=device), torch.ones_like(ids, dtype=torch.bool))
    with _FORWARD_LOCK, _answer_rows_only(decoder, p, a):
        out = decoder(ids, position_ids=positions, attn_mask=mask, attn_impl="reference",
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
