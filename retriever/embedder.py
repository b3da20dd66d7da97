"""``SentenceEncoder``: texts in, one float32 vector per text out, on our own ``BertEncoder``.

Texts are tokenised once, truncated at the model's max length (``sentence_bert_config.json``), sorted by
token count so a batch pads only to its own longest text, run through the encoder, pooled, optionally
L2-normalised, and written back in input order.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.errors import InvalidInput
from common.paths import resolve_encoder
from retriever.checkpoint import load_checkpoint, save_checkpoint
from retriever.encoder import ATTN_IMPLS, AttnImpl, BertEncoder, EncoderOutput
from retriever.pooling import PoolingConfig, pool_and_normalize
from retriever.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")
# Texts longer than this many characters per allowed token are tokenised from a prefix first.
_CHARS_PER_TOKEN_CAP = 32


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def fast_bf16(device: torch.device, cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether bf16 matmuls are native here: CUDA with bf16 support, or a CPU with AVX-512 BF16 or
    AMX (elsewhere bf16 autocast on CPU is emulated and slower than fp32: 61 s against 3 s a
    training step of the QA model on an AVX2-only EPYC). ``cpuinfo``: the kernel's CPU flags."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def warn_if_bf16_emulated(precision: str, device: torch.device) -> None:
    """Log a warning when training is asked to run in ``bf16`` where bf16 matmuls are not native
    (:func:`fast_bf16`): there autocast is emulated and far slower than fp32."""
    if precision == "bf16" and not fast_bf16(device):
        logger.warning(
            "bf16 matmuls are not native here (no AVX-512 BF16 or AMX): autocast is emulated and far "
            "slower than fp32 (61 s a step against 3 s on an AVX2-only EPYC); use --precision fp32"
        )


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where it is native (measured 1.7x on SciFact here with nDCG@10 unchanged
    and min cosine 0.99997 to fp32), else ``fp32``; other values pass through."""
    if precision == "auto":
        return "bf16" if fast_bf16(device) else "fp32"
    return precision


def apply_precision(model: BertEncoder, precision: str, device: torch.device) -> torch.nn.Module:
    """The module to run for a precision: the fp32 model itself for ``fp32`` and ``bf16`` (bf16 runs
    it under autocast, see ``autocast_for``), or a copy with int8 dynamically quantised linear layers
    for ``int8`` (CPU only)."""
    if precision in ("fp32", "bf16"):
        return model
    if precision == "int8":
        if device.type != "cpu":
            raise InvalidInput("int8 dynamic quantisation runs on CPU only; use precision='bf16' on GPU")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        # Per-channel weight scales: per-tensor ones lose too much on MiniLM (min cosine 0.88 vs 0.97).
        return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
    raise InvalidInput(f"precision {precision!r} is not one of {PRECISIONS}")


def autocast_for(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast: matmuls and attention in bf16, LayerNorm, softmax and weights kept in fp32
    (more accurate than casting the whole model at the same speed)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def pad_batch(batch: Sequence[Sequence[int]], pad_value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists to the longest with ``pad_value``: values (B, T) and mask (B, T), 1 for
    real tokens."""
    T = max(len(ids) for ids in batch)
    values = torch.full((len(batch), T), pad_value, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(batch), T), dtype=torch.long)  # (B, T)
    for row, ids in enumerate(batch):
        values[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[row, : len(ids)] = 1
    return values, mask


class SentenceEncoder:
    """Embeds texts with our BERT encoder, the same way sentence-transformers does on the same weights."""

    def __init__(
        self,
        model: BertEncoder,
        tokenizer: Tokenizer,
        pooling: PoolingConfig,
        max_length: int,
        *,
        device: str | torch.device | None = None,
        precision: str = "fp32",
        attn_impl: AttnImpl = "sdpa",
        compile: bool = False,
    ) -> None:
        if attn_impl not in ATTN_IMPLS:
            raise InvalidInput(f"attn_impl {attn_impl!r} is not one of {ATTN_IMPLS}")
        self.device = torch.device(device) if device is not None else default_device()
        precision = resolve_precision(precision, self.device)
        if precision not in PRECISIONS:
            raise InvalidInput(f"precision {precision!r} is not one of {PRECISIONS} or 'auto'")
        self.precision = precision
        self.attn_impl: AttnImpl = attn_impl
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = min(int(max_length), model.config.max_position_embeddings)
        self._fp_model = model.to(self.device).eval()
        self.model = apply_precision(self._fp_model, precision, self.device).eval()
        self.compiled = compile
        self._forward: Callable[..., EncoderOutput] = self.model
        if compile:
            if precision == "int8":
                raise InvalidInput("compile=True does not support precision='int8'")
            # Dynamic shapes: one compilation serves every batch size and length (batch size 1
            # compiles once more). Freezing folds the weights as constants and prepacks them for
            # oneDNN; it is scoped to this compilation, not set globally.
            options = {"freezing": True} if self.device.type == "cpu" else None
            self._forward = torch.compile(self.model, dynamic=True, options=options)

    @classmethod
    def from_pretrained(
        cls,
        path_or_name: str | Path | None = None,
        device: str | torch.device | None = None,
        precision: str = "fp32",
        attn_impl: AttnImpl = "sdpa",
        compile: bool = False,
    ) -> SentenceEncoder:
        """Load a sentence-transformers / BERT directory, or a name that ``resolve_encoder`` knows
        (``all-MiniLM-L6-v2`` by default).

        ``precision``: ``fp32`` (matches sentence-transformers), ``bf16`` (autocast; faster on CPUs
        with avx512_bf16/AMX and on GPUs) or ``int8`` (dynamic quantisation, CPU, lossy).
        ``compile``: ``torch.compile`` the model for bulk embedding; the first batch pays the
        compilation (tens of seconds on CPU) and the weights are frozen into the compiled graph."""
        ckpt = load_checkpoint(resolve_encoder(path_or_name))
        return cls(
            ckpt.model, ckpt.tokenizer, ckpt.pooling, ckpt.max_length,
            device=device, precision=precision, attn_impl=attn_impl, compile=compile,
        )

    def save_pretrained(self, path: str | Path) -> Path:
        """Write the sentence-transformers directory format (see ``retriever.checkpoint``)."""
        return save_checkpoint(path, self._fp_model, self.tokenizer, self.pooling, self.max_length)

    @property
    def dim(self) -> int:
        return self._fp_model.config.hidden_size

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, special tokens included, truncated at ``max_length``.

        A very long text is first tokenised from a prefix cut at whitespace; if that prefix already
        fills ``max_length`` the result is the same as tokenising the whole text, without the cost.
        """
        cap = self.max_length * _CHARS_PER_TOKEN_CAP
        cut_texts = []
        for t in texts:
            if len(t) > cap:
                cut = max(t.rfind(" ", 0, cap), t.rfind("\n", 0, cap))
                t = t[:cut] if cut > 0 else t
            cut_texts.append(t)
        encs = self.tokenizer.encode_batch(cut_texts, max_length=self.max_length)
        ids = [e.ids for e in encs]
        redo = [i for i, (t, c) in enumerate(zip(texts, cut_texts, strict=True)) if t is not c and len(ids[i]) < self.max_length]
        if redo:
            for i, e in zip(redo, self.tokenizer.encode_batch([texts[i] for i in redo], max_length=self.max_length), strict=True):
                ids[i] = e.ids
        return ids

    def _collate(self, batch: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pad to the batch's longest text: input ids (B, T) and attention mask (B, T)."""
        input_ids, mask = pad_batch(batch, self.tokenizer.pad_id or 0)
        return input_ids.to(self.device), mask.to(self.device)

    @torch.inference_mode()
    def encode(
        self,
        texts: list[str],
        batch_size: int = 32,
        normalize: bool | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Embed ``texts`` -> float32 array (N, dim) in input order. ``normalize`` None uses the model's
        default (a Normalize module in the checkpoint); ``[]`` gives a (0, dim) array."""
        if isinstance(texts, str):
            raise InvalidInput("encode takes a list of strings, not a string")
        if batch_size < 1:
            raise InvalidInput(f"batch_size must be >= 1, got {batch_size}")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = self.tokenize([str(t) for t in texts])
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
        from tqdm.auto import tqdm

        for idx in tqdm(batches, desc="encode", unit="batch", disable=not show_progress):
            input_ids, mask = self._collate([ids[i] for i in idx])  # (B, T), (B, T)
            padded = len(ids[idx[0]]) != len(ids[idx[-1]])  # sorted by length: first is longest
            with autocast_for(self.precision, self.device):
                out_h = self._forward(input_ids, mask if padded else None, attn_impl=self.attn_impl)
            hidden = out_h.last_hidden_state  # (B, T, H)
            vecs = pool_and_normalize(hidden.float(), mask, self.pooling, normalize)  # (B, H)
            out[idx] = vecs.cpu().numpy()
        return out

    def __repr__(self) -> str:
        return (
            f"SentenceEncoder(dim={self.dim}, max_length={self.max_length}, device={self.device}, "
            f"precision={self.precision!r}, compiled={self.compiled})"
        )


@functools.lru_cache(maxsize=8)
def _cached(path: str, opts: tuple[tuple[str, Any], ...]) -> SentenceEncoder:
    return SentenceEncoder.from_pretrained(path, **dict(opts))


def load_encoder(name_or_dir: str | Path | None = None, **opts: Any) -> SentenceEncoder:
    """A shared ``SentenceEncoder`` per (resolved directory, options): loaded once, then reused."""
    path = str(resolve_encoder(name_or_dir).resolve())
    return _cached(path, tuple(sorted((k, str(v) if isinstance(v, torch.device) else v) for k, v in opts.items())))


load_encoder.cache_clear = _cached.cache_clear  # type: ignore[attr-defined]
