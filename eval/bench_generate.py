"""Benchmark our decoder's generation against ``transformers`` on identical weights.

For each prompt length, in one process and alternating between implementations run by run (so a
noisy shared machine slows both alike), it measures:

* ours, cached: prefill tokens/s (prompt tokens over the time to the first new token) and decode
  tokens/s (new tokens after the first over the time they took), from ``stream_generate``;
* ours, uncached: decode tokens/s when every step recomputes the whole sequence (the slow twin);
* the peer: ``LlamaForCausalLM.generate`` (greedy, its default dynamic cache) holding a copy of our
  weights, timed the same way through a streamer;
* peak memory of each: RSS high-water mark above the starting RSS on CPU (``/proc/self/status``
  VmHWM, reset through ``/proc/self/clear_refs``), ``torch.cuda.max_memory_allocated`` on CUDA.

Figures are medians over ``runs``; ratios (``cache_speedup``, ``ratio_vs_reference``) are medians of
the ratios of runs made back to back. ``held_for_generation_mb`` is what our model allocates
before the timed runs (KV caches for the longest run, the transposed head copy), which the peak
figures do not include. Top-level keys hold the figures at prompt length 1024 (or the
closest length measured); ``per_length`` lists all of them.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from attend.errors import CheckpointError, InvalidInput, MissingDependency
from eval.report import console_table

logger = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
HEADLINE_LEN = 1024


@dataclass
class GenerateBenchConfig:
    """What to build and how to measure it."""

    checkpoint: str | None = None
    preset: str = "attend-qa-small"
    prompt_lens: Sequence[int] = (256, 1024, 2048)
    new_tokens: int = 64
    uncached_tokens: int = 8
    runs: int = 3
    reference: bool = True
    device: str = "cpu"
    dtype: str = "fp32"
    threads: int | None = None
    seed: int = 0
    batch_size: int = 1


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
class _Stamps:
    times: list[float] = field(default_factory=list)

    def stamp(self) -> None:
        self.times.append(time.perf_counter())


# Memory -----------------------------------------------------------------------------------------


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


# Models -----------------------------------------------------------------------------------------


def build_model(cfg: GenerateBenchConfig):
    """Our decoder: loaded from ``cfg.checkpoint`` or a seeded random ``cfg.preset``."""
    from generator.checkpoint import load_decoder
    from generator.config import DecoderConfig
    from generator.model import Decoder

    dtype = DTYPES[cfg.dtype]
    if cfg.checkpoint:
        model, _ = load_decoder(cfg.checkpoint, device=cfg.device, dtype=dtype)
        return model
    torch.manual_seed(cfg.seed)
    model = Decoder(DecoderConfig.preset(cfg.preset))
    return model.to(device=cfg.device, dtype=dtype).eval()


def build_reference(model):
    """``transformers.LlamaForCausalLM`` holding a copy of our weights, or None when our recipe is
    not Llama's (e.g. a BERT warm start)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError as exc:
        raise MissingDependency("transformers", extra="dev", feature="the reference in bench generate") from exc
    from generator.checkpoint import to_hf_llama

    try:
        hf_cfg, state = to_hf_llama(model)
    except CheckpointError as exc:
        logger.warning("no transformers reference: %s", exc)
        return None
    hf_cfg = {k: v for k, v in hf_cfg.items() if k != "model_type"}
    ref = LlamaForCausalLM(LlamaConfig(**hf_cfg)).to(device=model.device, dtype=model.dtype).eval()
    missing, unexpected = ref.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise CheckpointError(f"copying weights into LlamaForCausalLM failed: {missing} {unexpected}")
    if model.config.tie_word_embeddings:
        ref.tie_weights()
    ref.generation_config.eos_token_id = None  # always generate exactly new_tokens
    ref.generation_config.pad_token_id = 0
    return ref


# Timed runs -------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ours(model, prompts: list[list[int]], new_tokens: int, *, use_cache: bool) -> Timing:
    from generator.generate import stream_generate

    stamps = _Stamps()
    with PeakMemory(model.device) as mem:
        start = time.perf_counter()
        for _ in stream_generate(model, prompts, max_new_tokens=new_tokens, stop_token_ids=[], use_cache=use_cache):
            _sync(model.device)
            stamps.stamp()
    t = stamps.times
    return Timing(sum(map(len, prompts)), t[0] - start, t[-1] - t[0], len(t) - 1, mem.peak_mb)


def time_reference(ref, prompts: list[list[int]], new_tokens: int) -> Timing:
    from transformers.generation.streamers import BaseStreamer

    stamps = _Stamps()

    class _Streamer(BaseStreamer):
        def __init__(self) -> None:
            self.first = True

        def put(self, value: torch.Tensor) -> None:
            if self.first:  # the prompt, before prefill
                self.first = False
                return
            stamps.stamp()

        def end(self) -> None:
            pass

    ids = torch.tensor(prompts, device=ref.device)
    kw = dict(attention_mask=torch.ones_like(ids), do_sample=False)
    n_prompt = sum(map(len, prompts))
    with PeakMemory(ref.device) as mem, torch.inference_mode():
        start = time.perf_counter()
        if ids.shape[0] == 1:
            ref.generate(ids, max_new_tokens=new_tokens, streamer=_Streamer(), **kw)
            _sync(ref.device)
        else:  # a streamer takes one row: time a one-token run (prefill), then the whole run
            ref.generate(ids, max_new_tokens=1, **kw)
            _sync(ref.device)
            one = time.perf_counter() - start
            start = time.perf_counter()
            ref.generate(ids, max_new_tokens=new_tokens, **kw)
            _sync(ref.device)
            whole = time.perf_counter() - start
            return Timing(n_prompt, one, max(whole - one, 1e-9), new_tokens - 1, None)
    t = stamps.times
    return Timing(n_prompt, t[0] - start, t[-1] - t[0], len(t) - 1, mem.peak_mb)


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _measure_length(
    model, ref, prompt_len: int, cfg: GenerateBenchConfig, log: Callable[[str], None]
) -> dict[str, Any]:
    g = torch.Generator().manual_seed(cfg.seed + prompt_len)
    prompts = torch.randint(0, model.config.vocab_size, (cfg.batch_size, prompt_len), generator=g).tolist()
    runs: dict[str, list[Timing]] = {"cached": [], "uncached": [], "reference": []}
    for run in range(cfg.runs):
        runs["cached"].append(time_ours(model, prompts, cfg.new_tokens, use_cache=True))
        if ref is not None:
            runs["reference"].append(time_reference(ref, prompts, cfg.new_tokens))
        runs["uncached"].append(time_ours(model, prompts, cfg.uncached_tokens, use_cache=False))
        log(f"  prompt {prompt_len}: run {run + 1}/{cfg.runs}: cached {runs['cached'][-1].decode_tps:.1f} tok/s"
            + (f", reference {runs['reference'][-1].decode_tps:.1f} tok/s" if ref is not None else ""))
    b = cfg.batch_size
    cached = _median([r.decode_tps * b for r in runs["cached"]])
    uncached = _median([r.decode_tps * b for r in runs["uncached"]])
    # Ratios pair the runs made back to back, so load changes between runs cancel out.
    speedups = [c.decode_tps / u.decode_tps for c, u in zip(runs["cached"], runs["uncached"], strict=True)]
    row: dict[str, Any] = {
        "prompt_len": prompt_len,
        "prefill_tokens_per_s": _median([r.prefill_tps for r in runs["cached"]]),
        "tokens_per_s_cached": cached,
        "tokens_per_s_uncached": uncached,
        "cache_speedup": _median(speedups),
        "peak_mem_mb": _median([r.peak_mem_mb for r in runs["cached"]]),
        "peak_mem_mb_uncached": _median([r.peak_mem_mb for r in runs["uncached"]]),
        "reference_prefill_tokens_per_s": None,
        "reference_tokens_per_s": None,
        "ratio_vs_reference": None,
        "reference_peak_mem_mb": None,
    }
    if runs["reference"]:
        ratios = [c.decode_tps / r.decode_tps for c, r in zip(runs["cached"], runs["reference"], strict=True)]
        row.update(
            reference_prefill_tokens_per_s=_median([r.prefill_tps for r in runs["reference"]]),
            reference_tokens_per_s=_median([r.decode_tps * b for r in runs["reference"]]),
            ratio_vs_reference=_median(ratios),
            prefill_ratio_vs_reference=_median(
                [c.prefill_tps / r.prefill_tps for c, r in zip(runs["cached"], runs["reference"], strict=True)]
            ),
            reference_peak_mem_mb=_median([r.peak_mem_mb for r in runs["reference"]]),
        )
    return row


def run_generate_bench(cfg: GenerateBenchConfig, log: Callable[[str], None] = logger.info) -> dict[str, Any]:
    """Measure every prompt length; returns the JSON-ready result."""
    if not cfg.prompt_lens or cfg.runs < 1 or cfg.new_tokens < 2 or cfg.uncached_tokens < 2:
        raise InvalidInput("need prompt lengths, runs >= 1, new_tokens >= 2 and uncached_tokens >= 2")
    if cfg.dtype not in DTYPES:
        raise InvalidInput(f"dtype {cfg.dtype!r}: expected one of {sorted(DTYPES)}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model = build_model(cfg)
    longest = max(cfg.prompt_lens) + max(cfg.new_tokens, cfg.uncached_tokens)
    if longest > model.config.max_seq_len:
        raise InvalidInput(f"prompt {max(cfg.prompt_lens)} + new tokens exceeds the model's {model.config.max_seq_len}")
    ref = build_reference(model) if cfg.reference else None
    # Warm-up: allocate our cache for the longest run once, and let both implementations settle.
    model.setup_caches(cfg.batch_size, longest)
    warm = [[1] * min(cfg.prompt_lens)] * cfg.batch_size
    time_ours(model, warm, 4, use_cache=True)
    time_ours(model, warm, 2, use_cache=False)
    if ref is not None:
        time_reference(ref, warm, 4)
    per_length = [_measure_length(model, ref, n, cfg, log) for n in cfg.prompt_lens]
    head = min(per_length, key=lambda r: abs(r["prompt_len"] - HEADLINE_LEN))
    result: dict[str, Any] = {
        "headline_prompt_len": head["prompt_len"],
        **{k: v for k, v in head.items() if k != "prompt_len"},
        "per_length": per_length,
        "held_for_generation_mb": model.held_bytes() / 2**20,
        "model": {
            "checkpoint": cfg.checkpoint,
            "preset": None if cfg.checkpoint else cfg.preset,
            "params": model.num_params(),
            "config": model.config.to_dict(),
        },
        "settings": {**asdict(cfg), "prompt_lens": list(cfg.prompt_lens)},
        "environment": {
            "device": str(model.device),
            "dtype": str(model.dtype),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
            "reference": "transformers.LlamaForCausalLM.generate (greedy, default cache)" if ref is not None else None,
        },
    }
    return result


COLUMNS = (
    "prompt_len", "prefill_tokens_per_s", "tokens_per_s_cached", "tokens_per_s_uncached", "cache_speedup",
    "reference_prefill_tokens_per_s", "reference_tokens_per_s", "ratio_vs_reference", "peak_mem_mb",
    "reference_peak_mem_mb",
)


def format_report(result: dict[str, Any]) -> str:
    """A console table of the per-length figures and the headline line."""
    m, env = result["model"], result["environment"]
    what = m["checkpoint"] or f"preset {m['preset']} (random weights)"
    lines = [
        f"decoder: {what}, {m['params'] / 1e6:.1f}M params, {env['dtype']} on {env['device']}, {env['threads']} threads",
        console_table(result["per_length"], columns=COLUMNS, floatfmt=".2f"),
    ]
    ratio = result.get("ratio_vs_reference")
    lines.append(
        f"at prompt {result['headline_prompt_len']}: cache speedup {result['cache_speedup']:.1f}x"
        + (f", {ratio:.2f}x transformers.generate" if ratio else "")
    )
    return "\n".join(lines)
