"""The learning-rate schedule every trainer uses (QA generator, encoder fine-tuning, distillation)."""

from __future__ import annotations


def warmup_lr_schedule(step: int, total: int, warm: int, lr: float) -> float:
    """Linear warm-up over ``warm`` steps to ``lr``, then linear decay to zero at ``total``."""
    if step < warm:
        return lr * (step + 1) / warm
    return lr * max(0.0, (total - step) / max(1, total - warm))
