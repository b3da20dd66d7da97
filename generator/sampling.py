"""Choosing the next token from logits: pure functions, as in gpt-fast.

``logits_to_probs`` applies temperature, top-k and top-p (nucleus) filtering and returns a
distribution; ``sample`` draws from it with an optional seeded ``torch.Generator``, or takes the
argmax when ``temperature == 0`` (greedy). Inputs are never modified.
"""

from __future__ import annotations

import torch
from torch import Tensor

from common.errors import InvalidInput


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep the ``k`` largest logits per row (ties with the k-th kept too); the rest become -inf.
    ``logits`` (..., V) -> (..., V)."""
    if k <= 0:
        raise InvalidInput(f"top_k must be positive, got {k}")
    if k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus filtering: keep the smallest set of most likely tokens whose probability mass reaches
    ``p`` (a token is dropped when the mass of the tokens ranked above it is already >= ``p``; the
    most likely token always stays). ``logits`` (..., V) -> (..., V)."""
    if not 0.0 < p <= 1.0:
        raise InvalidInput(f"top_p must be in (0, 1], got {p}")
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (..., V)
    probs = torch.softmax(sorted_logits.float(), dim=-1)  # (..., V)
    mass_before = probs.cumsum(dim=-1) - probs  # (..., V) mass ranked strictly above
    drop_sorted = mass_before >= p
    drop_sorted[..., 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def logits_to_probs(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> Tensor:
    """Probabilities (..., V) float32 after temperature, then top-k, then top-p."""
    if temperature <= 0:
        raise InvalidInput("temperature must be > 0 for a distribution (use sample(..., temperature=0) for greedy)")
    logits = logits.float() / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return torch.softmax(logits, dim=-1)


def sample(
    logits: Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Next token ids (B,) from ``logits`` (B, V): argmax when ``temperature == 0``, else a draw
    from :func:`logits_to_probs` using ``generator`` (seeded -> reproducible)."""
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    probs = logits_to_probs(logits, temperature, top_k, top_p)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)  # (B,)


def penalize_repeats(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """CTRL's repetition penalty (Keskar et al., 2019), as ``transformers`` applies it: for tokens
    marked in ``seen`` (B, V) bool, positive logits are divided by ``penalty`` and negative ones
    multiplied by it. ``logits`` (B, V) -> a new (B, V); ``penalty == 1`` returns ``logits``."""
    if penalty <= 0:
        raise InvalidInput(f"repetition penalty must be > 0, got {penalty}")
    if penalty == 1.0:
        return logits
    scaled = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, scaled, logits)


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator | None:
    """A seeded ``torch.Generator`` on ``device``, or ``None`` (global RNG) without a seed."""
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(seed)
