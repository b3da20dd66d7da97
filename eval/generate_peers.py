"""The peers our decoder's generation is timed against: ``transformers.LlamaForCausalLM.generate``
holding a copy of our weights (greedy, its default dynamic cache, timed through a streamer) and
llama.cpp through ``llama-cpp-python`` on a GGUF file (greedy, timed as the tokens stream out)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from common.errors import CheckpointError, MissingDependency
from eval.generate_timing import PeakMemory, Stamps, Timing, sync

logger = logging.getLogger(__name__)


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


def time_reference(ref, prompts: list[list[int]], new_tokens: int) -> Timing:
    """``ref.generate`` (greedy) of ``new_tokens`` after ``prompts``, stamped through a streamer
    for one row; for a batch, a one-token run times the prefill and a whole run the rest."""
    from transformers.generation.streamers import BaseStreamer

    stamps = Stamps()

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
            sync(ref.device)
        else:  # a streamer takes one row: time a one-token run (prefill), then the whole run
            ref.generate(ids, max_new_tokens=1, **kw)
            sync(ref.device)
            one = time.perf_counter() - start
            start = time.perf_counter()
            ref.generate(ids, max_new_tokens=new_tokens, **kw)
            sync(ref.device)
            whole = time.perf_counter() - start
            return Timing(n_prompt, one, max(whole - one, 1e-9), new_tokens - 1, None)
    t = stamps.times
    return Timing(n_prompt, t[0] - start, t[-1] - t[0], len(t) - 1, mem.peak_mb)


LLAMA_CPP_MISSING = (
    "llama-cpp-python is not installed: no prebuilt wheel for this platform on the package index, and "
    "building llama.cpp from source (pip install llama-cpp-python) was not attempted"
)


def open_llama_cpp(path: Path, n_ctx: int, seed: int) -> tuple[Any, str | None]:
    """``llama_cpp.Llama`` on the GGUF file ``path`` with torch's thread count, or ``(None, why
    not)`` when llama-cpp-python is not installed."""
    try:
        from llama_cpp import Llama
    except ImportError:
        return None, LLAMA_CPP_MISSING
    threads = torch.get_num_threads()
    llm = Llama(model_path=str(path), n_ctx=n_ctx, n_batch=512, n_threads=threads, n_threads_batch=threads,
                seed=seed, verbose=False)
    return llm, None


def llama_cpp_version() -> str | None:
    """The installed llama-cpp-python version, or None."""
    try:
        import llama_cpp
    except ImportError:
        return None
    return getattr(llama_cpp, "__version__", "unknown")


def time_llama_cpp(llm, prompts: list[list[int]], new_tokens: int) -> Timing:
    """llama.cpp on one prompt: greedy, every token (EOS included) until ``new_tokens``; its KV
    cache is emptied first so every run reads the whole prompt."""
    stamps = Stamps()
    llm.reset()
    with PeakMemory(torch.device("cpu")) as mem:
        start = time.perf_counter()
        for _ in llm.generate(prompts[0], top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
            stamps.stamp()
            if len(stamps.times) == new_tokens:
                break
    t = stamps.times
    return Timing(len(prompts[0]), t[0] - start, t[-1] - t[0], len(t) - 1, mem.peak_mb)
