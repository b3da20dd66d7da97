"""The KV cache: preallocated key/value buffers per layer, written at the input positions.

As in gpt-fast, caches are set up apart from model construction (``Decoder.setup_caches``), so the
same weights serve any batch size and context. A forward pass at ``start_pos`` writes its keys and
values into slots ``start_pos .. start_pos + T - 1`` and attends over slots ``0 .. start_pos + T - 1``
(a view of the buffer, no copy). ``DecoderCache`` also remembers which slots hold real tokens, so
left-padded batches keep masking their padding on every decode step.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from common.errors import ContextTooLong


class KVCache(nn.Module):
    """Key and value buffers of one layer, ``(max_batch, n_kv_heads, max_seq_len, head_dim)``."""

    def __init__(
        self,
        max_batch: int,
        n_kv_heads: int,
        max_seq_len: int,
        head_dim: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        shape = (max_batch, n_kv_heads, max_seq_len, head_dim)
        self.register_buffer("k_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.max_batch = max_batch
        self.max_seq_len = max_seq_len

    def update(self, start_pos: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write ``k``/``v`` (B, Hkv, T, D) at slots ``start_pos..start_pos+T-1``; return the keys and
        values of slots ``0..start_pos+T-1`` (B, Hkv, start_pos+T, D) as views of the buffers."""
        b, _, t, _ = k.shape
        end = start_pos + t
        if end > self.max_seq_len:
            raise ContextTooLong(f"KV cache holds {self.max_seq_len} positions; writing up to {end}")
        self.k_cache[:b, :, start_pos:end] = k
        self.v_cache[:b, :, start_pos:end] = v
        return self.k_cache[:b, :, :end], self.v_cache[:b, :, :end]  # (B, Hkv, Tk, D) x2


class DecoderCache(nn.Module):
    """All layers' KV caches plus the key-validity map ``(max_batch, max_seq_len)`` of the batch.

    ``padded`` is a Python flag: ``True`` once any written slot holds padding, so decode steps know
    whether they need a mask at all without synchronising on the tensor.
    """

    def __init__(
        self,
        n_layers: int,
        max_batch: int,
        n_kv_heads: int,
        max_seq_len: int,
        head_dim: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            KVCache(max_batch, n_kv_heads, max_seq_len, head_dim, dtype=dtype, device=device)
            for _ in range(n_layers)
        )
        self.register_buffer(
            "key_valid", torch.ones(max_batch, max_seq_len, dtype=torch.bool, device=device), persistent=False
        )
        self.max_batch = max_batch
        self.max_seq_len = max_seq_len
        self.dtype = dtype
        self.padded = False

    def mark(self, start_pos: int, batch: int, valid: Tensor | None) -> None:
        """Record which of the slots ``start_pos..`` written by this step hold real tokens
        (``valid`` (B, T) bool; ``None`` = all of them)."""
        if start_pos == 0 and self.padded:  # a new sequence: forget the last one's padding
            self.key_valid.fill_(True)
            self.padded = False
        if valid is None or bool(valid.all()):
            return
        self.key_valid[:batch, start_pos : start_pos + valid.shape[1]] = valid
        self.padded = True

    def valid(self, batch: int, end: int) -> Tensor:
        """Key validity of slots ``0..end-1`` (B, end), a view."""
        return self.key_valid[:batch, :end]

    def reset(self) -> None:
        """Forget the validity map (buffers are overwritten by the next prefill anyway)."""
        self.key_valid.fill_(True)
        self.padded = False

    def fits(self, batch: int, seq_len: int, dtype: torch.dtype | None = None) -> bool:
        return batch <= self.max_batch and seq_len <= self.max_seq_len and (dtype is None or dtype == self.dtype)
