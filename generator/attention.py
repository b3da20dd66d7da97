"""Attention of the decoder: rotary embeddings, mask construction, and the attention kernels.

Three kernels compute the same thing:

* ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` (FlashAttention / memory-efficient
  kernels on CUDA, the fused flash kernel on CPU). The fast path.
* ``reference``: explicit ``softmax(Q K^T / sqrt(d) + mask) V``; returns the attention weights
  ``(B, H, Tq, Tk)`` for diagnostics. The slow twin the tests compare against.
* ``flash``: the ``flash-attn`` package, used only on CUDA with fp16/bf16 and no explicit mask;
  otherwise it falls back to ``sdpa``.

Masks are boolean, ``True`` = may attend. A query at cache slot ``i`` sees key slot ``j`` when the
key holds a real token (not padding) and ``j <= i`` (causal), or both lie in the bidirectional
prefix (prefix-LM, as in UniLM), and ``i - j < window`` under a sliding window. Every query also
sees itself, so rows of padding queries are never empty (their outputs are ignored).

``is_causal=True`` in SDPA is an *upper-left* aligned mask: it is only right when the queries and
keys are the same positions (cache-less or start-of-cache prefill with no padding). Decode steps
(one query against a longer cache) pass explicit masks or none at all.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.errors import InvalidInput, MissingDependency
from generator.cache import KVCache
from generator.config import DecoderConfig

log = logging.getLogger(__name__)

AttnImpl = Literal["sdpa", "reference", "flash"]
ATTN_IMPLS = ("sdpa", "reference", "flash")


# Rotary position embeddings ----------------------------------------------------------------------


def rope_tables(inv_freq: Tensor, max_seq_len: int) -> tuple[Tensor, Tensor]:
    """``cos`` and ``sin`` tables ``(max_seq_len, head_dim)`` in float32, laid out as Hugging Face
    Llama does (frequencies repeated over the two halves of the head)."""
    t = torch.arange(max_seq_len, dtype=torch.float32, device=inv_freq.device)  # (S,)
    freqs = t[:, None] * inv_freq.float()[None, :]  # (S, D/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (S, D)
    return emb.cos(), emb.sin()


def rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` (B, T, H, D) by ``cos``/``sin`` broadcastable to it ((1|B, T, 1, D))."""
    return x * cos + rotate_half(x) * sin


# Masks -------------------------------------------------------------------------------------------


def prefix_flags(valid: Tensor, prefix_len: int | Tensor) -> Tensor:
    """Which tokens of a (left-padded) batch lie in the bidirectional prefix: the first
    ``prefix_len`` real tokens of each row. ``valid`` (B, T) bool -> (B, T) bool."""
    count = valid.long().cumsum(-1)  # (B, T) real tokens so far
    if isinstance(prefix_len, Tensor):
        prefix_len = prefix_len.to(count.device).view(-1, 1)  # (B, 1)
    return valid & (count <= prefix_len)


def build_attention_mask(
    q_pos: Tensor,
    key_valid: Tensor,
    *,
    prefix: Tensor | None = None,
    window: int | None = None,
) -> Tensor:
    """Boolean mask ``(B, 1, Tq, Tk)`` for queries at slots ``q_pos`` (Tq,) over key slots
    ``0..Tk-1``.

    ``key_valid`` (B, Tk): which key slots hold real tokens. ``prefix`` (B, Tk): which key slots are
    in the bidirectional prefix; a query is in the prefix when its own slot is.
    """
    tk = key_valid.shape[-1]
    j = torch.arange(tk, device=key_valid.device)  # (Tk,)
    i = q_pos.to(key_valid.device)[:, None]  # (Tq, 1)
    allowed = (j[None, :] <= i)[None]  # (1, Tq, Tk)
    if prefix is not None:
        q_prefix = prefix[:, q_pos]  # (B, Tq)
        allowed = allowed | (q_prefix[:, :, None] & prefix[:, None, :])  # (B, Tq, Tk)
    allowed = allowed & key_valid[:, None, :]  # (B, Tq, Tk)
    if window is not None:
        allowed = allowed & ((i - j[None, :]) < window)[None]
    allowed = allowed | (j[None, :] == i)[None]  # a query always sees itself
    return allowed[:, None]  # (B, 1, Tq, Tk)


@dataclass
class MaskPlan:
    """How one forward pass masks attention, shared by its layers.

    ``masks`` maps a window size (``None`` = no window) to an explicit mask (B, 1, Tq, Tk), or to
    ``None`` when every key is visible to every query. ``is_causal`` marks the plain causal case
    SDPA may handle itself (square, unpadded, no prefix); it is ignored when a mask is given.
    """

    masks: dict[int | None, Tensor | None]
    is_causal: bool = False

    def for_window(self, window: int | None) -> Tensor | None:
        return self.masks.get(window)


# Kernels -----------------------------------------------------------------------------------------


def reference_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, *, dropout_p: float = 0.0
) -> tuple[Tensor, Tensor]:
    """Explicit attention. ``q`` (B, H, Tq, D), ``k``/``v`` (B, Hkv, Tk, D), ``mask`` bool
    broadcastable to (B, H, Tq, Tk). Returns the output (B, H, Tq, D) and weights (B, H, Tq, Tk)."""
    rep = q.shape[1] // k.shape[1]
    if rep > 1:
        k = k.repeat_interleave(rep, dim=1)  # (B, H, Tk, D)
        v = v.repeat_interleave(rep, dim=1)  # (B, H, Tk, D)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, H, Tq, Tk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)  # (B, H, Tq, Tk)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ v, weights  # (B, H, Tq, D), (B, H, Tq, Tk)


def sdpa_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, *, is_causal: bool, dropout_p: float = 0.0
) -> Tensor:
    """SDPA with grouped-query attention. One-token decode folds the query heads that share a
    key/value head into the query-length axis, so no key/value copies are made."""
    b, h, tq, d = q.shape
    hkv = k.shape[1]
    if hkv == h:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal and mask is None, dropout_p=dropout_p)
    if tq == 1:
        # Every query head of a group sees the same keys and the same mask row.
        qg = q.view(b, hkv, h // hkv, d)  # (B, Hkv, rep, D)
        out = F.scaled_dot_product_attention(qg, k, v, attn_mask=mask, dropout_p=dropout_p)  # (B, Hkv, rep, D)
        return out.view(b, h, 1, d)  # (B, H, 1, D)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=is_causal and mask is None, dropout_p=dropout_p, enable_gqa=True
    )  # (B, H, Tq, D)


def flash_attention(q: Tensor, k: Tensor, v: Tensor, *, causal: bool, dropout_p: float = 0.0) -> Tensor:
    """The ``flash-attn`` kernel (CUDA, fp16/bf16, no explicit mask). ``q`` (B, H, Tq, D)."""
    try:
        from flash_attn import flash_attn_func
    except ImportError as exc:
        raise MissingDependency("flash-attn", extra="gpu", feature="attn_impl='flash'") from exc
    # flash-attn aligns the causal mask bottom-right, which is right for a query block at the end.
    out = flash_attn_func(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), dropout_p=dropout_p, causal=causal
    )  # (B, Tq, H, D)
    return out.transpose(1, 2)  # (B, H, Tq, D)


# The module --------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head attention with grouped-query heads, fused q/k/v projection, RoPE or none (learned
    positions are added to the embeddings), an optional KV cache and a per-layer sliding window."""

    def __init__(self, config: DecoderConfig, layer_idx: int) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.n_kv_heads: int = config.n_kv_heads  # type: ignore[assignment]
        self.head_dim: int = config.head_dim  # type: ignore[assignment]
        self.window = config.window_for_layer(layer_idx)
        self.use_rope = config.positions == "rope"
        self.dropout = config.dropout
        q_out = self.n_heads * self.head_dim
        kv_out = self.n_kv_heads * self.head_dim
        self.wqkv = nn.Linear(config.dim, q_out + 2 * kv_out, bias=config.qkv_bias)
        self.wo = nn.Linear(q_out, config.dim, bias=config.out_bias)
        self.kv_cache: KVCache | None = None

    def forward(
        self,
        x: Tensor,
        rope: tuple[Tensor, Tensor] | None,
        plan: MaskPlan,
        *,
        start_pos: int | None = None,
        attn_impl: AttnImpl = "sdpa",
        output_attentions: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """``x`` (B, T, dim) -> (B, T, dim), and weights (B, H, T, Tk) when asked for.
        ``start_pos`` is the cache slot of the first token; ``None`` runs without the cache."""
        b, t, _ = x.shape
        h, hkv = self.n_heads, self.n_kv_heads
        qkv = self.wqkv(x).view(b, t, h + 2 * hkv, self.head_dim)  # (B, T, H + 2*Hkv, D)
        qk = qkv[:, :, : h + hkv]  # (B, T, H + Hkv, D)
        if self.use_rope and rope is not None:
            cos, sin = rope  # (1|B, T, 1, D)
            qk = apply_rope(qk, cos, sin)  # queries and keys rotated in one go
        q = qk[:, :, :h].transpose(1, 2)  # (B, H, T, D)
        k = qk[:, :, h:].transpose(1, 2)  # (B, Hkv, T, D)
        v = qkv[:, :, h + hkv :].transpose(1, 2)  # (B, Hkv, T, D)
        if start_pos is not None:
            if self.kv_cache is None:
                raise InvalidInput("start_pos given but caches are not set up: call model.setup_caches()")
            k, v = self.kv_cache.update(start_pos, k, v)  # (B, Hkv, Tk, D)
        mask = plan.for_window(self.window)
        dropout_p = self.dropout if self.training else 0.0
        weights = None
        if attn_impl == "reference" or output_attentions:
            y, weights = reference_attention(q, k, v, mask, dropout_p=dropout_p)
        elif attn_impl == "flash" and mask is None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
            y = flash_attention(q, k, v, causal=plan.is_causal, dropout_p=dropout_p)
        elif attn_impl in ("sdpa", "flash"):
            if attn_impl == "flash":
                log.debug("flash-attn needs CUDA, fp16/bf16 and no explicit mask; using SDPA for this pass")
            y = sdpa_attention(q, k, v, mask, is_causal=plan.is_causal, dropout_p=dropout_p)
        else:
            raise InvalidInput(f"attn_impl={attn_impl!r}: expected one of {ATTN_IMPLS}")
        y = y.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim)  # (B, T, H*D)
        return self.wo(y), weights
