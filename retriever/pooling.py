"""Pooling of token vectors into one sentence vector (mean, CLS, max), with optional L2 normalisation.

Semantics follow sentence-transformers' ``Pooling`` module so that our embeddings match it on the same
weights: mean over real tokens (the mask divides by at least 1e-9), max over real tokens, or the
first token's vector.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from common.errors import InvalidInput

POOLING_MODES: tuple[str, ...] = ("mean", "cls", "max")

# sentence-transformers' 1_Pooling/config.json flag for each mode we support.
_ST_FLAGS = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens"}


@dataclass
class PoolingConfig:
    """How token vectors become a sentence vector."""

    mode: str = "mean"
    normalize: bool = True

    def __post_init__(self) -> None:
        if self.mode not in POOLING_MODES:
            raise InvalidInput(f"pooling mode {self.mode!r} is not one of {POOLING_MODES}")

    @classmethod
    def from_st_config(cls, d: dict[str, Any], *, normalize: bool) -> PoolingConfig:
        """From a sentence-transformers ``1_Pooling/config.json`` dict (exactly one mode set)."""
        if "pooling_mode" in d and isinstance(d["pooling_mode"], str):
            name = {"mean": "mean", "cls": "cls", "max": "max"}.get(d["pooling_mode"])
            if name is None:
                raise InvalidInput(f"pooling mode {d['pooling_mode']!r} is not supported")
            return cls(mode=name, normalize=normalize)
        on = [mode for mode, flag in _ST_FLAGS.items() if d.get(flag)]
        unsupported = [k for k, v in d.items() if k.startswith("pooling_mode_") and v and k not in _ST_FLAGS.values()]
        if unsupported or len(on) != 1:
            raise InvalidInput(f"need exactly one of {sorted(_ST_FLAGS.values())} in the pooling config, got {d}")
        return cls(mode=on[0], normalize=normalize)

    def to_st_config(self, dim: int) -> dict[str, Any]:
        """The sentence-transformers ``1_Pooling/config.json`` dict."""
        out: dict[str, Any] = {"word_embedding_dimension": dim}
        out.update({flag: mode == self.mode for mode, flag in _ST_FLAGS.items()})
        out.update(
            {
                "pooling_mode_mean_sqrt_len_tokens": False,
                "pooling_mode_weightedmean_tokens": False,
                "pooling_mode_lasttoken": False,
                "include_prompt": True,
            }
        )
        return out

    @classmethod
    def load(cls, path: str | Path, *, normalize: bool) -> PoolingConfig:
        return cls.from_st_config(json.loads(Path(path).read_text()), normalize=normalize)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str = "mean") -> torch.Tensor:
    """``hidden`` (B, T, H), ``attention_mask`` (B, T) with 1 for real tokens -> (B, H)."""
    if mode == "cls":
        return hidden[:, 0]  # (B, H)
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    if mode == "mean":
        summed = (hidden * mask).sum(dim=1)  # (B, H)
        return summed / mask.sum(dim=1).clamp(min=1e-9)  # (B, H)
    if mode == "max":
        masked = hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min)  # (B, T, H)
        return masked.max(dim=1).values  # (B, H)
    raise InvalidInput(f"pooling mode {mode!r} is not one of {POOLING_MODES}")


def pool_and_normalize(hidden: torch.Tensor, attention_mask: torch.Tensor, cfg: PoolingConfig, normalize: bool | None = None) -> torch.Tensor:
    """Pool per ``cfg`` and L2-normalise when ``normalize`` (default: ``cfg.normalize``)."""
    out = pool(hidden, attention_mask, cfg.mode)  # (B, H)
    if cfg.normalize if normalize is None else normalize:
        out = F.normalize(out, p=2, dim=-1)  # (B, H)
    return out
