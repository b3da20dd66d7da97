"""How closely an int8-quantized decoder follows the float model it came from: greedy
continuations of fixed prompts by the float model, fed token by token through both models' cached
decoding (teacher forcing), give the argmax agreement and the logit errors
(``int8_token_agreement``, ``int8_logit_max_abs_err``, ``int8_logit_mean_abs_err``,
``int8_logit_rel_err`` = ||int8 - float|| / ||float|| over all those positions)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch

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


def prepare_int8(
    model, chat, log: Callable[[str], None], *, seed: int, agreement_tokens: int, reference: bool
) -> tuple[Any, Any, dict[str, Any]]:
    """Quantize a copy of ``model``; returns the int8 model, the float model transformers should
    hold (the dequantized twin; None without ``reference``) and the quality figures (greedy
    continuations of ``agreement_tokens`` tokens)."""
    from generator.quant import dequantize_reference, int8_layers, quantize_int8

    qmodel = quantize_int8(copy.deepcopy(model))
    kernel = int8_layers(qmodel)[0].kernel
    log(f"quantized to int8 (kernel {kernel}); measuring agreement with the float model")
    prompts = agreement_prompts(model.config.vocab_size, chat, seed=seed)
    quality: dict[str, Any] = {**int8_quality(model, qmodel, prompts, agreement_tokens),
                               "int8_kernel": kernel, "int8_agreement_prompts": len(prompts)}
    model.clear_caches()
    qmodel.clear_caches()
    twin = dequantize_reference(qmodel) if reference else None
    return qmodel, twin, quality
