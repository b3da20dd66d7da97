"""The one training loop every trainer runs (QA generator, encoder fine-tuning, distillation).

:class:`TrainRun` is the model-agnostic state of a run: AdamW with no weight decay on biases and
norm weights (:func:`make_optimizer`), the learning rate of :func:`common.schedule.warmup_lr_schedule`
set before every step, gradients clipped at norm 1, a step counter, per-step losses, the
validation history and the caller's own state (``extra``), all saved atomically to
``OUT/checkpoint.pt`` and restored from it, a time limit and a progress bar. :func:`fit` is the
loop itself: a step, validation when due, a checkpoint when validated or every ``save_every``
steps, a stop at the time limit, the final checkpoint. The trainer supplies what is its own: the
loss of the next batch and the validation. :func:`epoch_batches` / :func:`batch_stream` give a
seeded batch order that a resumed run replays, :func:`held_out` a seeded hold-out split.
"""

from __future__ import annotations

import json
import logging
import random
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.atomic import atomic_replace
from common.schedule import warmup_lr_schedule

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
CLIP_NORM = 1.0
RECENT_LOSSES = 20  # the progress bar's loss: the mean of this many last steps (without smoothing)


def held_out(key: str, fraction: float) -> bool:
    """Deterministic held-out membership of ``key`` (crc32), about ``fraction`` of all keys."""
    return zlib.crc32(key.encode("utf-8")) % 10_000 < fraction * 10_000


def epoch_batches(
    n: int, batch_size: int, seed: int, epoch: int, lengths: Sequence[int] | None = None, window: int = 64
) -> list[list[int]]:
    """The batches of one epoch over items ``0..n-1``, a pure function of ``(seed, epoch)`` so a
    resumed run replays the same order. With ``lengths``, items are sorted by length inside
    windows of ``window`` batches before cutting (less padding) and the batches are shuffled."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(n))
    rng.shuffle(order)
    if lengths is None:
        return [order[s : s + batch_size] for s in range(0, n, batch_size)]
    span = batch_size * window
    batches: list[list[int]] = []
    for s in range(0, n, span):
        part = sorted(order[s : s + span], key=lambda i: lengths[i])
        batches += [part[j : j + batch_size] for j in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def batch_stream(
    n: int, batch_size: int, seed: int, start_step: int, lengths: Sequence[int] | None = None
) -> Iterator[list[int]]:
    """Batches from global step ``start_step`` on, epoch after epoch (see :func:`epoch_batches`)."""
    per_epoch = len(epoch_batches(n, batch_size, seed, 0, lengths))
    epoch, skip = divmod(start_step, per_epoch)
    while True:
        yield from epoch_batches(n, batch_size, seed, epoch, lengths)[skip:]
        epoch, skip = epoch + 1, 0


def make_optimizer(
    model: nn.Module, lr: float, weight_decay: float, lr_scales: Mapping[str, float] | None = None
) -> torch.optim.AdamW:
    """AdamW with no weight decay on biases and LayerNorm weights. ``lr_scales`` maps a parameter
    name prefix (e.g. a freshly initialised head) to a multiple of the scheduled learning rate."""
    scales = dict(lr_scales or {})
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        scale = next((v for k, v in scales.items() if name.startswith(k)), 1.0)
        groups.setdefault((p.ndim < 2 or "norm" in name, scale), []).append(p)
    ordered = sorted(groups.items(), key=lambda kv: (kv[0][1] != 1.0, kv[0][0]))  # the plain groups first, as before
    return torch.optim.AdamW(
        [{"params": ps, "weight_decay": 0.0 if no_decay else weight_decay, "lr_scale": scale}
         for (no_decay, scale), ps in ordered],
        lr=lr,
    )


def load_run_state(out: str | Path) -> dict[str, Any] | None:
    """The saved training state in ``out/checkpoint.pt``, or None when there is none."""
    path = Path(out) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


class TrainRun:
    """The state of one training run (see the module docstring). ``state`` is what
    :func:`load_run_state` returned (None for a fresh run); ``config`` is recorded in the checkpoint;
    ``loss_ema`` (e.g. 0.98) reports an exponential moving average of the loss instead of the
    mean of the recent steps (progress bar) and of the steps since the previous validation
    (history); the average restarts with each process."""

    def __init__(
        self,
        model: nn.Module,
        *,
        out: str | Path,
        total: int,
        lr: float,
        warmup: float,
        weight_decay: float,
        save_every: int,
        max_minutes: float | None = None,
        desc: str = "train",
        config: Mapping[str, Any] | None = None,
        state: Mapping[str, Any] | None = None,
        loss_ema: float | None = None,
        lr_scales: Mapping[str, float] | None = None,
    ) -> None:
        self.model = model
        self.total = total
        self.lr = lr
        self.save_every = save_every
        self.max_minutes = max_minutes
        self.config = dict(config or {})
        self.loss_ema = loss_ema
        self.path = Path(out) / CHECKPOINT_FILE
        self.opt = make_optimizer(model, lr, weight_decay, lr_scales)
        self.warm = max(1, int(warmup * total))
        self.step = 0
        self.losses: list[float] = []
        self.history: list[dict[str, Any]] = []
        self.extra: dict[str, Any] = {}
        self.smoothed: float | None = None
        self._seconds_before = 0.0
        if state is not None:
            model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["opt"])
            self.step = int(state["step"])
            self.losses = list(state.get("losses", []))
            self.history = list(state.get("history", []))
            self.extra = dict(state.get("extra", {}))
            self._seconds_before = float(state.get("seconds", 0.0))
            logger.info("resumed from %s at step %d of %d", self.path, self.step, total)
        self._started = time.perf_counter()
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=min(self.step, total), desc=desc, unit="step")

    @property
    def done(self) -> bool:
        return self.step >= self.total

    @property
    def seconds(self) -> float:
        """Training time over every run of this output directory."""
        return self._seconds_before + time.perf_counter() - self._started

    def update(self, loss: torch.Tensor, **postfix: Any) -> float:
        """One optimiser step on ``loss`` (gradients clipped at norm 1); returns the loss value.
        ``postfix``: more figures for the progress bar."""
        lr = warmup_lr_schedule(self.step, self.total, self.warm, self.lr)
        for group in self.opt.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), CLIP_NORM)
        self.opt.step()
        self.step += 1
        value = float(loss.detach())
        self.losses.append(value)
        if self.loss_ema is not None:
            self.smoothed = value if self.smoothed is None else self.loss_ema * self.smoothed + (1 - self.loss_ema) * value
            shown = self.smoothed
        else:
            recent = self.losses[-RECENT_LOSSES:]
            shown = sum(recent) / len(recent)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{shown:.4f}", lr=f"{lr:.2e}", **postfix)
        return value

    def eval_due(self, every: int) -> bool:
        """Whether a validation is due after this step: every ``every`` steps and at the last."""
        return self.step % every == 0 or self.step == self.total

    def out_of_time(self) -> bool:
        limit = self.max_minutes
        if limit is not None and (time.perf_counter() - self._started) / 60 >= limit:
            logger.info("time limit of %s minutes reached at step %d of %d", limit, self.step, self.total)
            return True
        return False

    def record(self, figures: Mapping[str, Any], **counts: Any) -> dict[str, Any]:
        """Add a validation row to the history: step, ``counts`` (e.g. examples seen), the loss
        (mean since the previous row, or the moving average), minutes of training, ``figures``."""
        if self.loss_ema is not None:
            loss = round(self.smoothed, 4) if self.smoothed is not None else None
        else:
            since = self.losses[self.history[-1]["step"] if self.history else 0 : self.step]
            loss = round(sum(since) / len(since), 4) if since else None
        row = {"step": self.step, **counts, "loss": loss, "minutes": round(self.seconds / 60, 1), **figures}
        self.history.append(row)
        logger.info("validation %s", row)
        self.bar.write(json.dumps(row))
        return row

    def save(self) -> Path:
        """Write ``OUT/checkpoint.pt`` atomically: weights, optimiser, step, losses, history, extra."""
        state = {
            "model": self.model.state_dict(), "opt": self.opt.state_dict(), "step": self.step,
            "losses": self.losses, "history": self.history, "extra": self.extra,
            "seconds": self.seconds, "config": self.config,
        }
        return atomic_replace(self.path, lambda tmp: torch.save(state, tmp))

    def end_step(self, evaluated: bool) -> bool:
        """After a step (and its validation, when ``evaluated``): save when validated, so a best
        model written by the validation and the checkpoint's record agree, or every
        ``save_every`` steps. True once the time limit is reached."""
        if evaluated or self.step % self.save_every == 0:
            self.save()
        return self.out_of_time()

    def finish(self) -> None:
        """Close the progress bar and write the final checkpoint."""
        self.bar.close()
        self.save()


def fit(
    run: TrainRun,
    next_loss: Callable[[], torch.Tensor],
    *,
    every: int,
    validate: Callable[[], None] | None = None,
    postfix: Callable[[], Mapping[str, Any]] | None = None,
) -> None:
    """Train until ``run.total`` steps or the time limit: each step is ``run.update(next_loss())``
    (``postfix()`` adds progress-bar figures), ``validate()`` runs every ``every`` steps and after
    the last one (never when None), the checkpoint is saved as :meth:`TrainRun.end_step` says and
    once more at the end."""
    while not run.done:
        run.update(next_loss(), **(postfix() if postfix is not None else {}))
        evaluated = validate is not None and run.eval_due(every)
        if evaluated:
            validate()
        if run.end_step(evaluated):
            break
    run.finish()
