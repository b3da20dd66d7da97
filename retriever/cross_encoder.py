"""A cross-encoder reranker on our bidirectional encoder: ``[CLS] query [SEP] chunk [SEP]`` in,
one relevance logit out (a linear head on the mean of the token vectors).

The query takes token type 0 and at most ``max_query_tokens`` tokens; the chunk takes type 1 and
the rest of ``max_length``. :meth:`Reranker.score` is the fast path (pairs sorted by length,
padded per batch, no mask for a batch without padding, bf16 autocast where the hardware runs it
natively); :meth:`Reranker.score_reference` scores one pair at a time in fp32 with the reference
attention, and a test holds the two together.

A reranker directory holds ``config.json`` (the BERT config plus an ``attend_reranker`` section),
``model.safetensors`` (HF BERT names plus ``classifier.weight``/``classifier.bias``) and
``tokenizer.json``. :func:`warm_start` builds a reranker from any encoder checkpoint we load.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from common.errors import CheckpointError, InvalidInput
from common.paths import resolve_model_dir
from retriever.checkpoint import hf_to_ours, load_checkpoint, load_state, ours_to_hf
from retriever.embedder import autocast_for, pad_batch, resolve_precision
from retriever.encoder import BertConfig, BertEncoder
from retriever.pooling import pool
from retriever.rerank import DEFAULT_RERANK_WEIGHT, is_weight
from retriever.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

FORMAT = "attend-reranker"
HEAD_PREFIX = "classifier."


@dataclass(frozen=True)
class PairSettings:
    """How a (query, chunk) pair becomes one sequence."""

    max_length: int = 256
    max_query_tokens: int = 64

    def __post_init__(self) -> None:
        if not 8 <= self.max_query_tokens < self.max_length - 3:
            raise InvalidInput("max_query_tokens must be at least 8 and leave room for the chunk")


class CrossEncoder(nn.Module):
    """Our encoder plus a linear relevance head on the mean-pooled token vectors."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.encoder = BertEncoder(cfg)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)
        self.classifier = nn.Linear(cfg.hidden_size, 1)
        nn.init.normal_(self.classifier.weight, std=cfg.initializer_range)
        nn.init.zeros_(self.classifier.bias)

    @property
    def config(self) -> BertConfig:
        return self.encoder.config

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        *,
        attn_impl: str = "sdpa",
    ) -> torch.Tensor:
        """``input_ids`` (B, T) -> relevance logits (B,). The head reads the mean of the token
        vectors (padding excluded): the pooling a sentence-transformers encoder was trained with,
        so a warm start hands the head a trained summary instead of an untrained ``[CLS]``."""
        hidden = self.encoder(input_ids, attention_mask, token_type_ids, attn_impl=attn_impl).last_hidden_state  # (B, T, H)
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)  # (B, T)
        return self.classifier(self.dropout(pool(hidden, mask, "mean"))).squeeze(-1)  # (B,)


def pair_ids(tokenizer: Tokenizer, query: str, texts: Sequence[str], settings: PairSettings) -> list[tuple[list[int], list[int]]]:
    """``(input ids, token type ids)`` of ``[CLS] query [SEP] text [SEP]`` for each text."""
    if tokenizer.cls_id is None or tokenizer.sep_id is None:
        raise CheckpointError("the reranker's tokenizer has no [CLS]/[SEP] tokens")
    q = tokenizer.encode(query, add_special_tokens=False).ids[: settings.max_query_tokens]
    room = settings.max_length - len(q) - 3
    head = [tokenizer.cls_id, *q, tokenizer.sep_id]
    out = []
    for enc in tokenizer.encode_batch(list(texts), add_special_tokens=False):
        body = [*enc.ids[:room], tokenizer.sep_id]
        out.append((head + body, [0] * len(head) + [1] * len(body)))
    return out


def collate(pairs: Sequence[tuple[list[int], list[int]]], pad_id: int, device: torch.device):
    """Padded ``(input_ids, attention_mask or None, token_type_ids)`` of a batch of pairs (no mask
    for a batch without padding: SDPA is faster)."""
    ids, mask = pad_batch([p for p, _ in pairs], pad_id)  # (B, T), (B, T)
    types, _ = pad_batch([t for _, t in pairs], 0)  # (B, T)
    padded = bool((mask == 0).any())
    return ids.to(device), (mask.to(device) if padded else None), types.to(device)


class Reranker:
    """A loaded cross-encoder: scores (query, chunk) pairs."""

    def __init__(
        self,
        model: CrossEncoder,
        tokenizer: Tokenizer,
        settings: PairSettings,
        *,
        device: str | torch.device | None = None,
        precision: str = "auto",
        name: str = "reranker",
        weight: float = DEFAULT_RERANK_WEIGHT,
    ) -> None:
        self.weight = weight  # the rerank weight this reranker recommends (retriever.rerank.blend)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.settings = settings
        self.precision = resolve_precision(precision, self.device)
        self.name = name

    @torch.inference_mode()
    def score(self, query: str, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        """Relevance logits of ``texts`` for ``query`` (float32, in input order)."""
        if not texts:
            return np.zeros(0, dtype=np.float32)
        pairs = pair_ids(self.tokenizer, query, texts, self.settings)
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]))
        out = np.empty(len(pairs), dtype=np.float32)
        pad = self.tokenizer.pad_id or 0
        with autocast_for(self.precision, self.device):
            for s in range(0, len(order), batch_size):
                idx = order[s : s + batch_size]
                ids, mask, types = collate([pairs[i] for i in idx], pad, self.device)
                out[idx] = self.model(ids, mask, types).float().cpu().numpy()
        return out

    @torch.inference_mode()
    def score_reference(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """The slow twin of :meth:`score`: one pair at a time, fp32, reference attention."""
        out = []
        for ids, types in pair_ids(self.tokenizer, query, texts, self.settings):
            x = torch.tensor([ids], device=self.device)
            t = torch.tensor([types], device=self.device)
            out.append(float(self.model(x, None, t, attn_impl="reference")[0]))
        return np.asarray(out, dtype=np.float32)

    def save_pretrained(self, path: str | Path) -> Path:
        # the recommended weight travels with the copy; the default is what a config without one means
        weight = None if self.weight == DEFAULT_RERANK_WEIGHT else self.weight
        return save_reranker(path, self.model, self.tokenizer, self.settings, weight=weight)


def save_reranker(path: str | Path, model: CrossEncoder, tokenizer: Tokenizer, settings: PairSettings, *,
                  weight: float | None = None) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``tokenizer.json`` to ``path``; ``weight``:
    the rerank weight to recommend (``attend_reranker.weight``; none: the reranker's order)."""
    from safetensors.torch import save_file

    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    state = {k: v.detach().float().contiguous() for k, v in ours_to_hf(model.encoder.state_dict(), cfg).items()}
    state.update({HEAD_PREFIX + k: v.detach().float().contiguous() for k, v in model.classifier.state_dict().items()})
    config = {**cfg.to_dict(), "attend_reranker": {"format": FORMAT, "max_length": settings.max_length,
                                                     "max_query_tokens": settings.max_query_tokens}}
    if weight is not None:
        config["attend_reranker"]["weight"] = float(weight)
    (root / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(state, str(root / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save(root)
    return root


def load_reranker(name_or_dir: str | Path, *, device: str | None = None, precision: str = "auto") -> Reranker:
    """Load a directory written by :func:`save_reranker`."""
    from safetensors.torch import load_file

    root = resolve_model_dir(name_or_dir, "reranker")
    try:
        raw: dict[str, Any] = json.loads((root / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{root / 'config.json'}: {exc}") from exc
    meta = raw.pop("attend_reranker", None)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{root} is not an {FORMAT} directory (no attend_reranker section in config.json)")
    cfg = BertConfig.from_dict(raw)
    weights = load_file(str(root / "model.safetensors"))
    model = CrossEncoder(cfg)
    load_state(model.encoder, hf_to_ours({k: v for k, v in weights.items() if not k.startswith(HEAD_PREFIX)}, cfg))
    model.classifier.load_state_dict({k[len(HEAD_PREFIX):]: v for k, v in weights.items() if k.startswith(HEAD_PREFIX)})
    settings = PairSettings(int(meta["max_length"]), int(meta["max_query_tokens"]))
    weight = meta.get("weight", DEFAULT_RERANK_WEIGHT)  # optional: the rerank weight its trainer recommends
    if not is_weight(weight):
        raise CheckpointError(f"{root / 'config.json'}: attend_reranker.weight must be a number between 0 and 1, got {weight!r}")
    return Reranker(model, Tokenizer.from_dir(root), settings, device=device, precision=precision, name=root.name,
                    weight=float(weight))


def warm_start(encoder: str | Path, settings: PairSettings | None = None, *, seed: int = 0) -> tuple[CrossEncoder, Tokenizer]:
    """A cross-encoder whose encoder starts from the checkpoint ``encoder`` (a name or a
    directory ``common.paths.resolve_encoder`` knows) and whose head is freshly initialised."""
    from common.paths import resolve_encoder

    ckpt = load_checkpoint(resolve_encoder(str(encoder)))
    torch.manual_seed(seed)
    model = CrossEncoder(ckpt.model.config)
    model.encoder.load_state_dict(ckpt.model.state_dict())
    settings = settings or PairSettings()
    if settings.max_length > ckpt.model.config.max_position_embeddings:
        raise InvalidInput(f"max_length {settings.max_length} exceeds the encoder's {ckpt.model.config.max_position_embeddings} positions")
    return model, ckpt.tokenizer
