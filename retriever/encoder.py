"""A BERT-style bidirectional transformer encoder, written here (no ``transformers`` model classes).

Embeddings (token + learned absolute position + token type, LayerNorm), then post-LayerNorm blocks of
multi-head self-attention and a GELU MLP. Attention has two interchangeable paths selected per call:
``attn_impl="sdpa"`` (``torch.nn.functional.scaled_dot_product_attention`` with a padding mask) and
``attn_impl="reference"`` (explicit softmax of ``QK^T / sqrt(d)``, which can also return the attention
weights). A test holds the two equal.

The query, key and value projections are one fused ``(3H, H)`` linear layer; ``retriever.checkpoint``
maps the separate HF/BERT ``query``/``key``/``value`` weights onto it and back.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from common.errors import InvalidInput

AttnImpl = Literal["sdpa", "reference"]
ATTN_IMPLS: tuple[str, ...] = ("sdpa", "reference")


@dataclass
class BertConfig:
    """Hyper-parameters of the encoder, named as in a HF BERT ``config.json``."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    initializer_range: float = 0.02
    # Keys of the source config.json we do not model, kept so save_pretrained writes them back.
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise InvalidInput(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}"
            )
        if self.hidden_act not in _ACTIVATIONS:
            raise InvalidInput(f"hidden_act {self.hidden_act!r} is not one of {sorted(_ACTIVATIONS)}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BertConfig:
        """Build from a HF ``config.json`` dict; unknown keys go to ``extra``."""
        known = {f.name for f in fields(cls)} - {"extra"}
        position_type = d.get("position_embedding_type", "absolute")
        if position_type != "absolute":
            raise InvalidInput(f"position_embedding_type {position_type!r} is not supported (only 'absolute')")
        kwargs = {k: v for k, v in d.items() if k in known}
        extra = {k: v for k, v in d.items() if k not in known}
        return cls(**kwargs, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """A HF-compatible ``config.json`` dict (``model_type`` bert, ``BertModel`` architecture)."""
        d = asdict(self)
        extra = d.pop("extra")
        out: dict[str, Any] = {"architectures": ["BertModel"], "model_type": "bert"}
        out.update({k: v for k, v in extra.items() if not k.startswith("_")})
        out.update(d)
        out["position_embedding_type"] = "absolute"
        return out


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


_ACTIVATIONS = {"gelu": F.gelu, "gelu_new": _gelu_tanh, "gelu_pytorch_tanh": _gelu_tanh, "relu": F.relu}


@dataclass
class EncoderOutput:
    """``last_hidden_state`` (B, T, H); ``attentions`` one (B, NH, T, T) tensor per layer when asked."""

    last_hidden_state: torch.Tensor
    attentions: tuple[torch.Tensor, ...] | None = None


class BertEmbeddings(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.drop = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        T = input_ids.shape[1]
        pos = torch.arange(T, device=input_ids.device)  # (T,)
        x = self.word(input_ids) + self.position(pos)  # (B, T, H)
        if token_type_ids is None:
            x = x + self.token_type.weight[0]  # (B, T, H)
        else:
            x = x + self.token_type(token_type_ids)  # (B, T, H)
        return self.drop(self.norm(x))


class BertSelfAttention(nn.Module):
    """Multi-head self-attention with a fused QKV projection, output projection and post-LayerNorm."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.n_head = cfg.num_attention_heads
        self.head_dim = cfg.head_dim
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.out = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.attn_dropout = cfg.attention_probs_dropout_prob
        self.drop = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(
        self, x: torch.Tensor, key_mask: torch.Tensor | None, attn_impl: AttnImpl, output_attentions: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` (B, T, H); ``key_mask`` (B, 1, 1, T) bool, True where a key may be attended."""
        B, T, H = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_head, self.head_dim)  # (B, T, 3, NH, D)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, NH, T, D)
        dropout_p = self.attn_dropout if self.training else 0.0
        weights = None
        if attn_impl == "sdpa" and not output_attentions:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=dropout_p)  # (B, NH, T, D)
        else:
            y, weights = reference_attention(q, k, v, key_mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).reshape(B, T, H)  # (B, T, H)
        return self.norm(x + self.drop(self.out(y))), weights


def reference_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None, dropout_p: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain ``softmax(QK^T / sqrt(D)) V``: the slow twin of SDPA, returning the weights too.

    ``q, k, v`` (B, NH, T, D); ``key_mask`` (B, 1, 1, T) bool or None. Padded keys get weight 0.
    """
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, NH, T, T)
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask, torch.finfo(scores.dtype).min)
    weights = scores.float().softmax(dim=-1).to(q.dtype)  # (B, NH, T, T)
    probs = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
    return probs @ v, weights  # (B, NH, T, D), (B, NH, T, T)


class BertLayer(nn.Module):
    """One post-LayerNorm block: ``x = LN(x + attn(x)); x = LN(x + W2 act(W1 x))``."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.attn = BertSelfAttention(cfg)
        self.mlp_in = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.mlp_out = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.mlp_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.act = _ACTIVATIONS[cfg.hidden_act]
        self.drop = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(
        self, x: torch.Tensor, key_mask: torch.Tensor | None, attn_impl: AttnImpl, output_attentions: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x, weights = self.attn(x, key_mask, attn_impl, output_attentions)  # (B, T, H)
        h = self.mlp_out(self.act(self.mlp_in(x)))  # (B, T, H)
        return self.mlp_norm(x + self.drop(h)), weights


class BertEncoder(nn.Module):
    """The bidirectional encoder: token ids and padding mask in, contextual token vectors out."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = BertEmbeddings(cfg)
        self.layers = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        *,
        attn_impl: AttnImpl = "sdpa",
        output_attentions: bool = False,
    ) -> EncoderOutput:
        """``input_ids`` (B, T) int; ``attention_mask`` (B, T), 1/True for real tokens, 0 for padding.

        With ``output_attentions`` the reference path runs (SDPA does not expose weights) and each
        layer's (B, NH, T, T) weights are returned.
        """
        if attn_impl not in ATTN_IMPLS:
            raise InvalidInput(f"attn_impl {attn_impl!r} is not one of {ATTN_IMPLS}")
        B, T = input_ids.shape
        if T > self.config.max_position_embeddings:
            raise InvalidInput(f"sequence of {T} tokens exceeds max_position_embeddings {self.config.max_position_embeddings}")
        key_mask = None
        if attention_mask is not None:  # callers pass None for a batch without padding: SDPA is faster
            key_mask = attention_mask.bool().view(B, 1, 1, T)  # (B, 1, 1, T)
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, H)
        attentions: list[torch.Tensor] = []
        for layer in self.layers:
            x, weights = layer(x, key_mask, attn_impl, output_attentions)  # (B, T, H)
            if weights is not None:
                attentions.append(weights)
        return EncoderOutput(x, tuple(attentions) if output_attentions else None)

    @property
    def device(self) -> torch.device:
        return self.embeddings.word.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embeddings.word.weight.dtype
