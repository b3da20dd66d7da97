"""Timing one generation: seconds to the first new token and for the tokens after it
(:class:`Timing`), stamped as the tokens arrive (:class:`Stamps`), and the peak memory above the
starting point (:class:`PeakMemory`: the RSS high-water mark on CPU through ``/proc/self/status``
VmHWM, reset through ``/proc/self/clear_refs``; ``torch.cuda.max_memory_allocated`` on CUDA). Our
decoder's runs (:func:`time_ours`) are timed here; the peers' in :mod:`eval.generate_peers`."""

from __future__ import annotations

import logging
import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


@dataclass
class Timing:
    """One generation: seconds to the first new token and for the tokens after it."""

    prompt_tokens: int
    prefill_s: float
    decode_s: float
    decode_tokens: int
    peak_mem_mb: float | None = None

    @property
    def prefill_tps(self) -> float:
        return self.prompt_tokens / self.prefill_s

    @property
    def decode_tps(self) -> float:
        return self.decode_tokens / self.decode_s if self.decode_tokens else float("nan")


@dataclass
class Stamps:
    """Times at which the tokens of one generation arrived."""

    times: list[float] = field(default_factory=list)

    def stamp(self) -> None:
        self.times.append(time.perf_counter())


class PeakMemory:
    """Peak memory above the starting point of a block, in MiB (None where it cannot be read)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mb: float | None = None

    @staticmethod
    def _status_kb(field_name: str) -> int | None:
        try:
            text = Path("/proc/self/status").read_text()
        except OSError:
            return None
        m = re.search(rf"{field_name}:\s+(\d+)\s+kB", text)
        return int(m.group(1)) if m else None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            except OSError:
                logger.debug("cannot reset VmHWM; peak memory is the process high-water mark")
            self._start = self._status_kb("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._start) / 2**20
        else:
            hwm = self._status_kb("VmHWM")
            if hwm is not None and self._start is not None:
                self.peak_mb = max(hwm - self._start, 0) / 1024


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so a time stamp means the work is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ours(model, prompts: list[list[int]], new_tokens: int, *, use_cache: bool) -> Timing:
    """Our decoder generating ``new_tokens`` greedily after ``prompts`` (one row each) through
    ``stream_generate``, with or without its KV cache."""
    from generator.generate import stream_generate

    stamps = Stamps()
    with PeakMemory(model.device) as mem:
        start = time.perf_counter()
        for _ in stream_generate(model, prompts, max_new_tokens=new_tokens, stop_token_ids=[], use_cache=use_cache):
            sync(model.device)
            stamps.stamp()
    t = stamps.times
    return Timing(sum(map(len, prompts)), t[0] - start, t[-1] - t[0], len(t) - 1, mem.peak_mb)


def weights_mb(model) -> float:
    """MiB of the model's weights (its state dict, a tied table counted once)."""
    tensors = {t.data_ptr(): t for t in model.state_dict().values()}
    return sum(t.numel() * t.element_size() for t in tensors.values()) / 2**20


def median(values: Sequence[float | None]) -> float | None:
    """The median of the values that are not None, or None."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None
