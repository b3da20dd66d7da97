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

import copy
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

from common.errors import CheckpointError, InvalidInput, MissingDependency
from eval.report import console_table

logger = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
HEADLINE_LEN = 1024
QUANTS = ("none", "int8")
AGREEMENT_TEXTS = (
    "What is the capital of France?",
    "Explain in one sentence what a hash table is.",
    "Write a short poem about the sea.",
    "List three uses of copper.",
    "Why is the sky blue?",
    "Translate 'good morning' into Spanish.",
    "What does a compiler do?",
    "Give me a tip for learning to cook.",
)


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


LLAMA_CPP_MISSING = (
    "llama-cpp-python is not installed: no prebuilt wheel for this platform on the package index, and "
    "building llama.cpp from source (pip install llama-cpp-python) was not attempted"
)


def build_llama_cpp(cfg: GenerateBenchConfig, n_ctx: int) -> tuple[Any, str | None]:
    """``llama_cpp.Llama`` on the generator's GGUF file, or ``(None, why not)``."""
    if not cfg.llama_cpp:
        return None, "skipped (--no-llama-cpp)"
    path = gguf_file(cfg)
    if path is None:
        return None, "llama.cpp needs a GGUF file: use --generator smollm2 or --generator FILE.gguf"
    if cfg.batch_size != 1 or cfg.device != "cpu":
        return None, "llama.cpp is timed for batch size 1 on CPU only"
    try:
        from llama_cpp import Llama
    except ImportError:
        return None, LLAMA_CPP_MISSING
    threads = torch.get_num_threads()
    llm = Llama(model_path=str(path), n_ctx=n_ctx, n_batch=512, n_threads=threads, n_threads_batch=threads,
                seed=cfg.seed, verbose=False)
    return llm, None


def _llama_cpp_version() -> str | None:
    try:
        import llama_cpp
    except ImportError:
        return None
    return getattr(llama_cpp, "__version__", "unknown")


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


def time_llama_cpp(llm, prompts: list[list[int]], new_tokens: int) -> Timing:
    """llama.cpp on one prompt: greedy, every token (EOS included) until ``new_tokens``; its KV
    cache is emptied first so every run reads the whole prompt."""
    stamps = _Stamps()
    llm.reset()
    with PeakMemory(torch.device("cpu")) as mem:
        start = time.perf_counter()
        for _ in llm.generate(prompts[0], top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
            stamps.stamp()
            if len(stamps.times) == new_tokens:
                break
    t = stamps.times
    return Timing(len(prompts[0]), t[0] - start, t[-1] - t[0], len(t) - 1, mem.peak_mb)


def weights_mb(model) -> float:
    """MiB of the model's weights (its state dict, a tied table counted once)."""
    tensors = {t.data_ptr(): t for t in model.state_dict().values()}
    return sum(t.numel() * t.element_size() for t in tensors.values()) / 2**20


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _measure_length(
    model, ref, prompt_len: int, cfg: GenerateBenchConfig, log: Callable[[str], None], llm=None
) -> dict[str, Any]:
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
        "llama_cpp_prefill_tokens_per_s": None,
        "llama_cpp_tokens_per_s": None,
        "ratio_vs_llama_cpp": None,
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
    if runs["llama_cpp"]:
        row.update(
            llama_cpp_prefill_tokens_per_s=_median([r.prefill_tps for r in runs["llama_cpp"]]),
            llama_cpp_tokens_per_s=_median([r.decode_tps for r in runs["llama_cpp"]]),
            ratio_vs_llama_cpp=_median(
                [c.decode_tps / r.decode_tps for c, r in zip(runs["cached"], runs["llama_cpp"], strict=True)]
            ),
        )
    return row


# Int8 quality -----------------------------------------------------------------------------------


def agreement_prompts(vocab_size: int, chat=None, *, n: int = len(AGREEMENT_TEXTS), seed: int = 0) -> list[list[int]]:
    """Fixed prompts: ``AGREEMENT_TEXTS`` as chat turns when there is a chat model, else seeded
    random token ids (24 each)."""
    if chat is not None:
        return [chat.prompt_ids([{"role": "user", "content": text}]) for text in AGREEMENT_TEXTS[:n]]
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (n, 24), generator=g).tolist()


@torch.inference_mode()
def teacher_forced_logits(model, prompt: list[int], continuation: list[int]) -> torch.Tensor:
    """Logits (len(continuation), V) predicting each continuation token, from a cached prefill and
    one decode step per token (the path, and so the kernels, that generation uses)."""
    from generator.generate import decode_one_token, prefill

    t = len(prompt)
    model.setup_caches(1, t + len(continuation))
    ids = torch.tensor([prompt], device=model.device)
    rows = [prefill(model, ids).logits[0, -1]]
    for i, tok in enumerate(continuation[:-1]):
        token = torch.tensor([[tok]], device=model.device)
        rows.append(decode_one_token(model, token, t + i).logits[0, -1])
    return torch.stack(rows).float()  # (n, V)


def int8_quality(reference_model, int8_model, prompts: list[list[int]], new_tokens: int) -> dict[str, float]:
    """How closely ``int8_model`` follows the float ``reference_model``: each prompt's greedy
    continuation by the float model is fed through both; argmax agreement over those positions and
    the logit errors (max abs, mean abs, relative L2)."""
    from generator.generate import generate

    agree = total = 0
    max_abs = sum_abs = sq_err = sq_ref = 0.0
    for prompt in prompts:
        cont = generate(reference_model, prompt, max_new_tokens=new_tokens, stop_token_ids=[]).tokens[0]
        a = teacher_forced_logits(reference_model, prompt, cont)  # (n, V)
        b = teacher_forced_logits(int8_model, prompt, cont)
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        total += a.shape[0]
        diff = b - a
        max_abs = max(max_abs, float(diff.abs().max()))
        sum_abs += float(diff.abs().sum())
        sq_err += float(diff.pow(2).sum())
        sq_ref += float(a.pow(2).sum())
    return {
        "int8_token_agreement": agree / total,
        "int8_logit_max_abs_err": max_abs,
        "int8_logit_mean_abs_err": sum_abs / (total * a.shape[-1]),
        "int8_logit_rel_err": (sq_err / sq_ref) ** 0.5,
    }


def prepare_int8(model, cfg: GenerateBenchConfig, chat, log: Callable[[str], None]) -> tuple[Any, Any, dict[str, Any]]:
    """Quantize a copy of ``model``; returns the int8 model, the float model transformers should
    hold (the dequantized twin) and the quality figures."""
    from generator.quant import dequantize_reference, int8_layers, quantize_int8

    qmodel = quantize_int8(copy.deepcopy(model))
    kernel = int8_layers(qmodel)[0].kernel
    log(f"quantized to int8 (kernel {kernel}); measuring agreement with the float model")
    prompts = agreement_prompts(model.config.vocab_size, chat, seed=cfg.seed)
    quality: dict[str, Any] = {**int8_quality(model, qmodel, prompts, cfg.agreement_tokens),
                               "int8_kernel": kernel, "int8_agreement_prompts": len(prompts)}
    model.clear_caches()
    qmodel.clear_caches()
    twin = dequantize_reference(qmodel) if cfg.reference else None
    return qmodel, twin, quality


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
        model, ref_source, quality = prepare_int8(model, cfg, chat, log)
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
            "llama_cpp": f"llama-cpp-python {_llama_cpp_version()} on {gguf.name}" if llm is not None and gguf else None,
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
