"""Benchmark our decoder's generation against ``transformers`` on identical weights.

For each prompt length, in one process and alternating between implementations run by run (so a
noisy shared machine slows both alike), it measures:

* ours, cached: prefill tokens/s (prompt tokens over the time to the first new token) and decode
  tokens/s (new tokens after the first over the time they took), from ``stream_generate``;
* ours, uncached: decode tokens/s when every step recomputes the whole sequence (the slow twin);
* the peer: ``LlamaForCausalLM.generate`` (greedy, its default dynamic cache) holding a copy of our
  weights, timed the same way through a streamer;
* llama.cpp (``llama-cpp-python``), when importable and the weights came from a GGUF file: the same
  prompt tokens and number of new tokens, greedy, on the file's own (possibly 4-bit) weights, timed
  the same way as the tokens stream out;
* peak memory of each: RSS high-water mark above the starting RSS on CPU (``/proc/self/status``
  VmHWM, reset through ``/proc/self/clear_refs``), ``torch.cuda.max_memory_allocated`` on CUDA.

Weights: a seeded random ``preset``, our ``checkpoint`` directory, or a chat ``generator``
(``smollm2``, a ``.gguf`` file or a Llama-family directory, loaded by
:func:`generator.chat_model.load_chat_model`). ``quant="int8"`` times our decoder after
:func:`generator.quant.quantize_int8`; transformers then holds the dequantized weights (``q * s``,
float), so both compute the same function, and the int8 model's quality is measured against the
float model it came from: greedy continuations of fixed prompts by the float model, fed token by
token through both models' cached decoding (teacher forcing), give the argmax agreement and the
logit errors (``int8_token_agreement``, ``int8_logit_max_abs_err``, ``int8_logit_mean_abs_err``,
``int8_logit_rel_err`` = ||int8 - float|| / ||float|| over all those positions).

Figures are medians over ``runs``; ratios (``cache_speedup``, ``ratio_vs_reference``,
``ratio_vs_llama_cpp``) are medians of the ratios of runs made back to back. ``held_for_generation_mb`` is what our model allocates
before the timed runs (KV caches for the longest run, the transposed head copy), which the peak
figures do not include. Top-level keys hold the figures at prompt length 1024 (or the
closest length measured); ``per_length`` lists all of them.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from common.errors import InvalidInput
from eval.generate_peers import (
    build_reference,
    llama_cpp_version,
    open_llama_cpp,
    time_llama_cpp,
    time_reference,
)
from eval.generate_timing import Timing, median, time_ours, weights_mb
from eval.int8_quality import prepare_int8
from eval.report import console_table

logger = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
HEADLINE_LEN = 1024
QUANTS = ("none", "int8")


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
    generator: str | None = None
    quant: str = "none"
    llama_cpp: bool = True
    agreement_tokens: int = 16


# Models -----------------------------------------------------------------------------------------


def load_generator(cfg: GenerateBenchConfig):
    """The :class:`generator.chat_model.ChatModel` named by ``cfg.generator``."""
    from generator.chat_model import load_chat_model

    return load_chat_model(cfg.generator, device=cfg.device, dtype=DTYPES[cfg.dtype])  # type: ignore[arg-type]


def gguf_file(cfg: GenerateBenchConfig) -> Path | None:
    """The GGUF file ``cfg.generator`` loads from, or None (a Hugging Face directory, no generator)."""
    if not cfg.generator:
        return None
    from common.paths import PACKAGED_GENERATORS, resolve_generator_file
    from generator.chat_model import gguf_path

    if cfg.generator.lower() in PACKAGED_GENERATORS:
        return resolve_generator_file(cfg.generator)
    return gguf_path(cfg.generator)


def build_model(cfg: GenerateBenchConfig):
    """Our decoder: a chat ``cfg.generator``, loaded from ``cfg.checkpoint``, or a seeded random
    ``cfg.preset``."""
    from generator.checkpoint import load_decoder
    from generator.config import DecoderConfig
    from generator.model import Decoder

    dtype = DTYPES[cfg.dtype]
    if cfg.generator:
        return load_generator(cfg).decoder.eval()
    if cfg.checkpoint:
        model, _ = load_decoder(cfg.checkpoint, device=cfg.device, dtype=dtype)
        return model
    torch.manual_seed(cfg.seed)
    model = Decoder(DecoderConfig.preset(cfg.preset))
    return model.to(device=cfg.device, dtype=dtype).eval()


def build_llama_cpp(cfg: GenerateBenchConfig, n_ctx: int) -> tuple[Any, str | None]:
    """``llama_cpp.Llama`` on the generator's GGUF file, or ``(None, why not)``."""
    if not cfg.llama_cpp:
        return None, "skipped (--no-llama-cpp)"
    path = gguf_file(cfg)
    if path is None:
        return None, "llama.cpp needs a GGUF file: use --generator smollm2 or --generator FILE.gguf"
    if cfg.batch_size != 1 or cfg.device != "cpu":
        return None, "llama.cpp is timed for batch size 1 on CPU only"
    return open_llama_cpp(path, n_ctx, cfg.seed)


# Timed runs -------------------------------------------------------------------------------------


def _measure_length(
    model, ref, prompt_len: int, cfg: GenerateBenchConfig, log: Callable[[str], None], llm=None
) -> dict[str, Any]:
    """The figures at one prompt length: ``cfg.runs`` rounds of ours cached, the peers, ours
    uncached, back to back on the same seeded random prompts; medians and paired ratios."""
    g = torch.Generator().manual_seed(cfg.seed + prompt_len)
    prompts = torch.randint(0, model.config.vocab_size, (cfg.batch_size, prompt_len), generator=g).tolist()
    runs: dict[str, list[Timing]] = {"cached": [], "uncached": [], "reference": [], "llama_cpp": []}
    for run in range(cfg.runs):
        runs["cached"].append(time_ours(model, prompts, cfg.new_tokens, use_cache=True))
        if ref is not None:
            runs["reference"].append(time_reference(ref, prompts, cfg.new_tokens))
        if llm is not None:
            runs["llama_cpp"].append(time_llama_cpp(llm, prompts, cfg.new_tokens))
        runs["uncached"].append(time_ours(model, prompts, cfg.uncached_tokens, use_cache=False))
        log(f"  prompt {prompt_len}: run {run + 1}/{cfg.runs}: cached {runs['cached'][-1].decode_tps:.1f} tok/s"
            + (f", reference {runs['reference'][-1].decode_tps:.1f} tok/s" if ref is not None else "")
            + (f", llama.cpp {runs['llama_cpp'][-1].decode_tps:.1f} tok/s" if llm is not None else ""))
    b = cfg.batch_size
    cached = median([r.decode_tps * b for r in runs["cached"]])
    uncached = median([r.decode_tps * b for r in runs["uncached"]])
    # Ratios pair the runs made back to back, so load changes between runs cancel out.
    speedups = [c.decode_tps / u.decode_tps for c, u in zip(runs["cached"], runs["uncached"], strict=True)]
    row: dict[str, Any] = {
        "prompt_len": prompt_len,
        "prefill_tokens_per_s": median([r.prefill_tps for r in runs["cached"]]),
        "tokens_per_s_cached": cached,
        "tokens_per_s_uncached": uncached,
        "cache_speedup": median(speedups),
        "peak_mem_mb": median([r.peak_mem_mb for r in runs["cached"]]),
        "peak_mem_mb_uncached": median([r.peak_mem_mb for r in runs["uncached"]]),
        "reference_prefill_tokens_per_s": None,
        "reference_tokens_per_s": None,
        "ratio_vs_reference": None,
        "reference_peak_mem_mb": None,
        "llama_cpp_prefill_tokens_per_s": None,
        "llama_cpp_tokens_per_s": None,
        "ratio_vs_llama_cpp": None,
    }
    if runs["reference"]:
        ratios = [c.decode_tps / r.decode_tps for c, r in zip(runs["cached"], runs["reference"], strict=True)]
        row.update(
            reference_prefill_tokens_per_s=median([r.prefill_tps for r in runs["reference"]]),
            reference_tokens_per_s=median([r.decode_tps * b for r in runs["reference"]]),
            ratio_vs_reference=median(ratios),
            prefill_ratio_vs_reference=median(
                [c.prefill_tps / r.prefill_tps for c, r in zip(runs["cached"], runs["reference"], strict=True)]
            ),
            reference_peak_mem_mb=median([r.peak_mem_mb for r in runs["reference"]]),
        )
    if runs["llama_cpp"]:
        row.update(
            llama_cpp_prefill_tokens_per_s=median([r.prefill_tps for r in runs["llama_cpp"]]),
            llama_cpp_tokens_per_s=median([r.decode_tps for r in runs["llama_cpp"]]),
            ratio_vs_llama_cpp=median(
                [c.decode_tps / r.decode_tps for c, r in zip(runs["cached"], runs["llama_cpp"], strict=True)]
            ),
        )
    return row


def run_generate_bench(cfg: GenerateBenchConfig, log: Callable[[str], None] = logger.info) -> dict[str, Any]:
    """Measure every prompt length; returns the JSON-ready result."""
    if not cfg.prompt_lens or cfg.runs < 1 or cfg.new_tokens < 2 or cfg.uncached_tokens < 2:
        raise InvalidInput("need prompt lengths, runs >= 1, new_tokens >= 2 and uncached_tokens >= 2")
    if cfg.dtype not in DTYPES:
        raise InvalidInput(f"dtype {cfg.dtype!r}: expected one of {sorted(DTYPES)}")
    if cfg.quant not in QUANTS:
        raise InvalidInput(f"quant {cfg.quant!r}: expected one of {QUANTS}")
    if cfg.generator and cfg.checkpoint:
        raise InvalidInput("give either a generator or a checkpoint, not both")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    chat = load_generator(cfg) if cfg.generator else None
    model = chat.decoder.eval() if chat is not None else build_model(cfg)
    longest = max(cfg.prompt_lens) + max(cfg.new_tokens, cfg.uncached_tokens)
    if longest > model.config.max_seq_len:
        raise InvalidInput(f"prompt {max(cfg.prompt_lens)} + new tokens exceeds the model's {model.config.max_seq_len}")
    params = model.num_params()
    quality: dict[str, Any] = {}
    ref_source = model
    if cfg.quant == "int8":
        model, ref_source, quality = prepare_int8(
            model, chat, log, seed=cfg.seed, agreement_tokens=cfg.agreement_tokens, reference=cfg.reference
        )
    ref = build_reference(ref_source) if cfg.reference else None
    del ref_source
    llm, llama_note = build_llama_cpp(cfg, longest)
    # Warm-up: allocate our cache for the longest run once, and let every implementation settle.
    model.setup_caches(cfg.batch_size, longest)
    warm = [[1] * min(cfg.prompt_lens)] * cfg.batch_size
    time_ours(model, warm, 4, use_cache=True)
    time_ours(model, warm, 2, use_cache=False)
    if ref is not None:
        time_reference(ref, warm, 4)
    if llm is not None:
        time_llama_cpp(llm, warm, 4)
    per_length = [_measure_length(model, ref, n, cfg, log, llm) for n in cfg.prompt_lens]
    head = min(per_length, key=lambda r: abs(r["prompt_len"] - HEADLINE_LEN))
    gguf = gguf_file(cfg)
    result: dict[str, Any] = {
        "headline_prompt_len": head["prompt_len"],
        **{k: v for k, v in head.items() if k != "prompt_len"},
        "llama_cpp_note": llama_note,
        "int8_token_agreement": None,
        "int8_logit_max_abs_err": None,
        "int8_logit_mean_abs_err": None,
        "int8_logit_rel_err": None,
        **quality,
        "per_length": per_length,
        "held_for_generation_mb": model.held_bytes() / 2**20,
        "weights_mb": weights_mb(model),
        "model": {
            "checkpoint": cfg.checkpoint,
            "generator": cfg.generator,
            "gguf": str(gguf) if gguf is not None else None,
            "preset": None if cfg.checkpoint or cfg.generator else cfg.preset,
            "quant": cfg.quant,
            "params": params,
            "config": model.config.to_dict(),
        },
        "settings": {**asdict(cfg), "prompt_lens": list(cfg.prompt_lens)},
        "environment": {
            "device": str(model.device),
            "dtype": str(model.dtype),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
            "reference": ("transformers.LlamaForCausalLM.generate (greedy, default cache)"
                          + (", dequantized int8 weights" if cfg.quant == "int8" else "")) if ref is not None else None,
            "llama_cpp": f"llama-cpp-python {llama_cpp_version()} on {gguf.name}" if llm is not None and gguf else None,
        },
    }
    return result


COLUMNS = (
    "prompt_len", "prefill_tokens_per_s", "tokens_per_s_cached", "tokens_per_s_uncached", "cache_speedup",
    "reference_prefill_tokens_per_s", "reference_tokens_per_s", "ratio_vs_reference", "peak_mem_mb",
    "reference_peak_mem_mb",
)
LLAMA_COLUMNS = ("prompt_len", "llama_cpp_prefill_tokens_per_s", "llama_cpp_tokens_per_s", "ratio_vs_llama_cpp")


def format_report(result: dict[str, Any]) -> str:
    """A console table of the per-length figures and the headline line."""
    m, env = result["model"], result["environment"]
    what = m["checkpoint"] or m.get("generator") or f"preset {m['preset']} (random weights)"
    quant = m.get("quant", "none")
    lines = [
        f"decoder: {what}, {m['params'] / 1e6:.1f}M params, {env['dtype']} on {env['device']}"
        + (f", int8 weights ({result.get('int8_kernel')} kernel)" if quant == "int8" else "")
        + f", {env['threads']} threads",
        console_table(result["per_length"], columns=COLUMNS, floatfmt=".2f"),
    ]
    if result.get("ratio_vs_llama_cpp") is not None:
        lines.append(console_table(result["per_length"], columns=LLAMA_COLUMNS, floatfmt=".2f"))
    ratio, llama = result.get("ratio_vs_reference"), result.get("ratio_vs_llama_cpp")
    lines.append(
        f"at prompt {result['headline_prompt_len']}: cache speedup {result['cache_speedup']:.1f}x"
        + (f", {ratio:.2f}x transformers.generate" if ratio else "")
        + (f", {llama:.2f}x llama.cpp" if llama else "")
    )
    if result.get("int8_token_agreement") is not None:
        lines.append(
            f"int8 vs float: token agreement {result['int8_token_agreement']:.1%}, logit error max "
            f"{result['int8_logit_max_abs_err']:.3f}, mean {result['int8_logit_mean_abs_err']:.4f}, "
            f"relative {result['int8_logit_rel_err']:.2%}"
        )
    if result.get("llama_cpp_note"):
        lines.append(f"llama.cpp: {result['llama_cpp_note']}")
    return "\n".join(lines)
