"""The decoder-only transformer: embeddings, blocks (attention + MLP, pre- or post-norm), head.

One ``Decoder`` class hosts Llama-family checkpoints (RMSNorm, SwiGLU, RoPE, GQA) and BERT weights
warm-started into a decoder (LayerNorm, post-norm, GELU, learned positions); ``DecoderConfig`` picks
the recipe. A forward pass runs either cache-less over a whole sequence or, after
``setup_caches``, at cache slot ``start_pos``; masks (causal, prefix-LM, key padding, sliding
window) are built once per pass in ``_mask_plan`` and shared by the layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.errors import ContextTooLong, InvalidInput
from generator.attention import (
    Attention,
    AttnImpl,
    MaskPlan,
    build_attention_mask,
    prefix_flags,
    rope_tables,
)
from generator.cache import DecoderCache
from generator.config import DecoderConfig, rope_inv_freq


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in float32, then scaled in the input dtype (as Llama does)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)  # (..., dim) float32
        return self.weight * normed.to(x.dtype)


def make_norm(config: DecoderConfig) -> nn.Module:
    if config.norm == "rms":
        return RMSNorm(config.dim, config.norm_eps)
    return nn.LayerNorm(config.dim, eps=config.norm_eps)


class FeedForward(nn.Module):
    """SwiGLU (``w_out(silu(gate) * up)``, gate and up fused in ``w_in``) or a plain GELU MLP."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.gated = config.mlp == "swiglu"
        width = 2 * config.intermediate_size if self.gated else config.intermediate_size
        self.w_in = nn.Linear(config.dim, width, bias=config.mlp_bias)
        self.w_out = nn.Linear(config.intermediate_size, config.dim, bias=config.mlp_bias)
        self.activation = config.activation

    def act(self, x: Tensor) -> Tensor:
        if self.activation == "silu":
            return F.silu(x)
        return F.gelu(x, approximate="tanh" if self.activation == "gelu_tanh" else "none")

    def forward(self, x: Tensor) -> Tensor:
        h = self.w_in(x)  # (B, T, 2I | I)
        if self.gated:
            gate, up = h.chunk(2, dim=-1)  # (B, T, I) x2
            h = self.act(gate) * up
        else:
            h = self.act(h)
        return self.w_out(h)  # (B, T, dim)


class Block(nn.Module):
    """One transformer layer. Pre-norm: ``x + f(norm(x))``; post-norm (BERT): ``norm(x + f(x))``."""

    def __init__(self, config: DecoderConfig, layer_idx: int) -> None:
        super().__init__()
        self.pre_norm = config.norm_placement == "pre"
        self.attention = Attention(config, layer_idx)
        self.feed_forward = FeedForward(config)
        self.attention_norm = make_norm(config)
        self.ffn_norm = make_norm(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: Tensor,
        rope: tuple[Tensor, Tensor] | None,
        plan: MaskPlan,
        *,
        start_pos: int | None,
        attn_impl: AttnImpl,
        output_attentions: bool,
    ) -> tuple[Tensor, Tensor | None]:
        kw = dict(start_pos=start_pos, attn_impl=attn_impl, output_attentions=output_attentions)
        if self.pre_norm:
            a, w = self.attention(self.attention_norm(x), rope, plan, **kw)
            h = x + self.dropout(a)  # (B, T, dim)
            return h + self.dropout(self.feed_forward(self.ffn_norm(h))), w
        a, w = self.attention(x, rope, plan, **kw)
        h = self.attention_norm(x + self.dropout(a))  # (B, T, dim)
        return self.ffn_norm(h + self.dropout(self.feed_forward(h))), w


@dataclass
class DecoderOutput:
    """``logits`` (B, T, V) (T = 1 with ``last_logits_only``), ``hidden`` (B, T, dim) after the final
    norm when asked for, ``attentions``: one (B, H, T, Tk) per layer when asked for."""

    logits: Tensor | None
    hidden: Tensor | None = None
    attentions: tuple[Tensor, ...] | None = None


class Decoder(nn.Module):
    """Decoder-only transformer. See the module docstring and :class:`DecoderConfig`."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.pos_embeddings = nn.Embedding(config.max_seq_len, config.dim) if config.positions == "learned" else None
        self.type_embedding = nn.Parameter(torch.zeros(config.dim)) if config.type_embedding else None
        self.embed_norm = make_norm(config) if config.embedding_norm else None
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.norm = make_norm(config) if config.final_norm else None
        self.output = nn.Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self.drop = nn.Dropout(config.dropout)
        self.windows = sorted({config.window_for_layer(i) for i in range(config.n_layers)}, key=lambda w: w or 0)
        self.cache: DecoderCache | None = None
        self._head_t: Tensor | None = None  # (dim, V) copy of the output weight, see transpose_head
        # (id, version) of the weight _head_t was copied from; never the Parameter itself, which
        # nn.Module would register as a second parameter (and put in the state dict).
        self._head_key: tuple[int, int] | None = None
        self.rope_cos: Tensor
        self.rope_sin: Tensor
        self.reset_buffers()
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith(("wo.weight", "w_out.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def reset_buffers(self, device: torch.device | str | None = None) -> None:
        """(Re)compute the non-persistent RoPE tables, e.g. after loading weights built on ``meta``."""
        if device is None:
            device = self.tok_embeddings.weight.device
        if self.config.positions == "rope":
            inv = rope_inv_freq(self.config, device)  # (D/2,)
            cos, sin = rope_tables(inv, self.config.max_seq_len)  # (S, D) x2
        else:
            cos = sin = torch.zeros(0, device=device)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    # Caches ------------------------------------------------------------------------------------

    def setup_caches(
        self,
        max_batch: int,
        max_seq_len: int,
        dtype: torch.dtype | None = None,
        *,
        transposed_head: bool | None = None,
    ) -> None:
        """Allocate KV caches for ``max_batch`` sequences of up to ``max_seq_len`` slots; kept when
        the existing ones already fit. ``transposed_head``: see :meth:`transpose_head`; ``None``
        turns it on for CPU models whose head weight is at most 256 MiB."""
        if transposed_head is None:
            w = self.output.weight
            transposed_head = w.device.type == "cpu" and w.numel() * w.element_size() <= 256 * 2**20
        self.transpose_head(transposed_head)
        if max_seq_len > self.config.max_seq_len:
            raise ContextTooLong(
                f"{max_seq_len} positions requested but the model's context window is {self.config.max_seq_len}"
            )
        p = self.tok_embeddings.weight
        dtype = dtype or p.dtype
        if self.cache is not None and self.cache.fits(max_batch, max_seq_len, dtype):
            return
        c = self.config
        self.cache = DecoderCache(
            c.n_layers, max_batch, c.n_kv_heads, max_seq_len, c.head_dim, dtype=dtype, device=p.device  # type: ignore[arg-type]
        )
        for layer, kv in zip(self.layers, self.cache.layers, strict=True):
            layer.attention.kv_cache = kv

    def clear_caches(self) -> None:
        """Free the KV caches (and the transposed head copy)."""
        self.cache = None
        self.transpose_head(False)
        for layer in self.layers:
            layer.attention.kv_cache = None

    def transpose_head(self, enabled: bool = True) -> None:
        """Keep a contiguous ``(dim, vocab)`` copy of the output weight for inference.

        A decode step's head is a GEMV over the whole vocabulary, the largest matmul of a small
        model. On CPU (MKL), ``x @ W_t`` over a transposed copy runs about twice as fast as
        ``nn.Linear``'s ``x @ W.T`` over the ``(vocab, dim)`` layout. The copy costs ``vocab * dim``
        more memory, is used only when autograd is off, and is refreshed when the weight changes.
        A head that is not a float ``nn.Linear`` (an int8 head, see ``generator.quant``) runs its
        own kernel: no copy is kept for it.
        """
        if not enabled or not isinstance(self.output, nn.Linear):
            self._head_t = self._head_key = None
        elif self._head_key != (id(self.output.weight), self.output.weight._version):
            self._refresh_head()

    def _refresh_head(self) -> None:
        w = self.output.weight
        self._head_t = w.detach().t().contiguous()  # (dim, V)
        self._head_key = (id(w), w._version)

    def _logits(self, x: Tensor) -> Tensor:
        """``x`` (B, T, dim) -> (B, T, V); the transposed copy of the head when it applies."""
        if self._head_t is None or torch.is_grad_enabled():
            return self.output(x)
        w = self.output.weight
        if self._head_key != (id(w), w._version) or self._head_t.dtype != x.dtype:
            self._refresh_head()
        return x @ self._head_t  # (B, T, V)

    # Forward -----------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: Tensor,
        *,
        start_pos: int | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        prefix_len: int | Tensor | None = None,
        attn_mask: Tensor | None = None,
        attn_impl: AttnImpl = "sdpa",
        output_attentions: bool = False,
        output_hidden: bool = False,
        last_logits_only: bool = False,
        compute_logits: bool = True,
    ) -> DecoderOutput:
        """Run ``input_ids`` (B, T).

        ``start_pos``: cache slot of the first token (needs ``setup_caches``); ``None`` = no cache.
        ``attention_mask`` (B, T): 1 for real tokens, 0 for (left) padding. ``position_ids`` (B, T):
        default from the mask (real tokens count 0, 1, 2, ...). ``prefix_len``: per row, the first
        ``prefix_len`` real tokens attend to each other both ways (prefix-LM); only in a cache-less
        pass or the first cached pass (``start_pos == 0``), which must hold the whole prefix.
        ``attn_mask`` (B|1, 1, T, start_pos + T) bool, True = may attend: an explicit mask for
        layouts of one's own; it replaces the causal / prefix / padding / window masks of this pass.
        """
        b, t = input_ids.shape
        start = 0 if start_pos is None else start_pos
        end = start + t
        cache = self.cache if start_pos is not None else None
        if start_pos is not None and cache is None:
            raise InvalidInput("start_pos given but caches are not set up: call setup_caches() first")
        limit = cache.max_seq_len if cache is not None else self.config.max_seq_len
        if end > limit:
            raise ContextTooLong(f"sequence needs {end} positions but the {'cache' if cache else 'model'} holds {limit}")
        valid = attention_mask.bool() if attention_mask is not None else None
        if cache is not None:
            if b > cache.max_batch:
                raise InvalidInput(f"batch {b} exceeds the cache's max_batch {cache.max_batch}")
            cache.mark(start, b, valid)
            key_valid = cache.valid(b, end) if cache.padded else None  # (B, Tk)
        else:
            key_valid = valid if valid is not None and not bool(valid.all()) else None  # (B, T)
        if position_ids is None and key_valid is not None:
            position_ids = (key_valid.long().cumsum(-1) - 1).clamp_min(0)[:, start:end]  # (B, T)
        elif position_ids is not None and int(position_ids.max()) >= self.config.max_seq_len:
            raise ContextTooLong(f"position {int(position_ids.max())} is beyond the context window of {self.config.max_seq_len}")
        prefix = None
        if prefix_len is not None:
            if start != 0:
                raise InvalidInput("a bidirectional prefix must be processed in the first pass (start_pos=0)")
            prefix = prefix_flags(valid if valid is not None else torch.ones_like(input_ids, dtype=torch.bool), prefix_len)
        if attn_mask is not None:
            if prefix is not None:
                raise InvalidInput("give either attn_mask or prefix_len, not both")
            if attn_mask.dim() != 4 or attn_mask.shape[-2:] != (t, end) or attn_mask.dtype != torch.bool:
                raise InvalidInput(f"attn_mask must be a bool (B, 1, {t}, {end}) tensor, got {tuple(attn_mask.shape)} {attn_mask.dtype}")
            plan = MaskPlan(masks={w: attn_mask for w in self.windows})
        else:
            explicit = attn_impl == "reference" or output_attentions
            plan = self._mask_plan(b, start, end, key_valid, prefix, explicit, input_ids.device)

        x = self.tok_embeddings(input_ids)  # (B, T, dim)
        if self.type_embedding is not None:
            x = x + self.type_embedding
        rope = None
        if self.pos_embeddings is not None:
            x = x + (self.pos_embeddings(position_ids) if position_ids is not None else self.pos_embeddings.weight[start:end])
        else:
            if position_ids is None:
                rope = self.rope_cos[start:end][None, :, None], self.rope_sin[start:end][None, :, None]  # (1, T, 1, D)
            else:
                rope = self.rope_cos[position_ids][:, :, None], self.rope_sin[position_ids][:, :, None]  # (B, T, 1, D)
            rope = rope[0].to(x.dtype), rope[1].to(x.dtype)
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        x = self.drop(x)

        attentions = []
        for layer in self.layers:
            x, w = layer(x, rope, plan, start_pos=start_pos, attn_impl=attn_impl, output_attentions=output_attentions)
            if output_attentions:
                attentions.append(w)
        if self.norm is not None:
            x = self.norm(x)  # (B, T, dim)
        logits = None
        if compute_logits:
            logits = self._logits(x[:, -1:] if last_logits_only else x)  # (B, T|1, V)
        return DecoderOutput(
            logits=logits,
            hidden=x if output_hidden else None,
            attentions=tuple(attentions) if output_attentions else None,
        )

    def _mask_plan(
        self,
        b: int,
        start: int,
        end: int,
        key_valid: Tensor | None,
        prefix: Tensor | None,
        explicit: bool,
        device: torch.device,
    ) -> MaskPlan:
        """Masks for this pass, one per distinct sliding window among the layers. Plain cases get no
        mask at all: a one-token step that sees its whole cache, or a square causal pass from slot 0."""
        t = end - start
        simple = key_valid is None and prefix is None and not explicit
        masks: dict[int | None, Tensor | None] = {}
        is_causal = False
        q_pos = None
        for w in self.windows:
            fits = w is None or end <= w
            if simple and fits and t == 1:
                masks[w] = None
            elif simple and fits and start == 0:
                masks[w], is_causal = None, True
            elif t == 1 and w is None and prefix is None and key_valid is not None:
                masks[w] = key_valid[:, None, None, :]  # (B, 1, 1, Tk): a view, decode with padding
            else:
                if q_pos is None:
                    q_pos = torch.arange(start, end, device=device)
                kv = key_valid if key_valid is not None else torch.ones(b, end, dtype=torch.bool, device=device)
                masks[w] = build_attention_mask(q_pos, kv, prefix=prefix, window=w)  # (B, 1, T, Tk)
        return MaskPlan(masks=masks, is_causal=is_causal)

    # Introspection -----------------------------------------------------------------------------

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def held_bytes(self) -> int:
        """Bytes held for generation besides the weights: KV caches and the transposed head copy."""
        held = list(self.cache.buffers()) if self.cache is not None else []
        if self._head_t is not None:
            held.append(self._head_t)
        return sum(t.numel() * t.element_size() for t in held)

    @property
    def device(self) -> torch.device:
        return self.tok_embeddings.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.tok_embeddings.weight.dtype
