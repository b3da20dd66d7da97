"""Autoregressive generation: ``prefill``, ``decode_one_token``, ``stream_generate``, ``generate``.

Batches of prompts with different lengths are left-padded, so every row's next token is at the same
cache slot; position ids count real tokens only (taken from the padding mask), so a padded row
computes what it would alone. With ``prefix_lm=True`` each prompt is read bidirectionally (UniLM
prefix-LM) and the answer is decoded causally against the cache.

``use_cache=False`` recomputes the whole sequence every step: the slow twin of cached decoding,
kept for the equivalence test and the benchmark. ``output_attentions=True`` runs the reference
attention path and records, for every generated token, each layer's attention of the query that
produced it over the prompt.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from common.errors import ContextTooLong, InvalidInput
from generator.attention import AttnImpl
from generator.model import Decoder, DecoderOutput
from generator.sampling import make_generator, penalize_repeats, sample

Prompts = Sequence[Sequence[int]] | Sequence[int]


def pad_left(prompts: Sequence[Sequence[int]], pad_id: int = 0, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Left-pad token id lists into ``ids`` (B, T) and ``mask`` (B, T) (1 = real token)."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise InvalidInput("every prompt needs at least one token")
    t = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), t), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, t - len(p) :] = torch.as_tensor(list(p), dtype=torch.long)
        mask[row, t - len(p) :] = 1
    return ids.to(device), mask.to(device)


def check_context(model: Decoder, prompt_len: int, max_new_tokens: int) -> None:
    """Raise ``ContextTooLong`` when ``prompt_len + max_new_tokens`` exceeds the context window."""
    window = model.config.max_seq_len
    if prompt_len + max_new_tokens > window:
        raise ContextTooLong(
            f"prompt of {prompt_len} tokens + max_new_tokens {max_new_tokens} = "
            f"{prompt_len + max_new_tokens} exceeds the model's context window of {window} tokens"
        )


def prefill(
    model: Decoder,
    input_ids: Tensor,
    *,
    attention_mask: Tensor | None = None,
    prefix_len: int | Tensor | None = None,
    attn_impl: AttnImpl = "sdpa",
    output_attentions: bool = False,
) -> DecoderOutput:
    """Run the prompt ``input_ids`` (B, T) from cache slot 0; logits of the last position only."""
    return model(
        input_ids,
        start_pos=0,
        attention_mask=attention_mask,
        prefix_len=prefix_len,
        attn_impl=attn_impl,
        output_attentions=output_attentions,
        last_logits_only=True,
    )


def decode_one_token(
    model: Decoder,
    token: Tensor,
    start_pos: int,
    *,
    position_ids: Tensor | None = None,
    attn_impl: AttnImpl = "sdpa",
    output_attentions: bool = False,
) -> DecoderOutput:
    """Feed ``token`` (B, 1) at cache slot ``start_pos``; logits (B, 1, V)."""
    return model(
        token,
        start_pos=start_pos,
        position_ids=position_ids,
        attn_impl=attn_impl,
        output_attentions=output_attentions,
    )


@dataclass
class GenerationStep:
    """One step of ``stream_generate``: ``tokens`` (B,) sampled ids; ``emitted`` (B,) which rows
    produced a real token (not a stop token, not already finished); ``attentions`` (L, B, H, T_prompt)
    of the producing query over the padded prompt, when asked for."""

    tokens: Tensor
    emitted: Tensor
    attentions: Tensor | None = None


@dataclass
class GenerationResult:
    """New tokens per prompt (stop tokens left out) and why each row ended (``"stop"`` or
    ``"length"``). ``attentions`` (steps, L, B, H, T_prompt_padded) when asked for."""

    tokens: list[list[int]]
    finish_reasons: list[str]
    prompt_lengths: list[int]
    attentions: Tensor | None = None
    padded_len: int = 0
    steps: int = 0

    def prompt_attention(self, row: int) -> Tensor:
        """Attention of row ``row`` over its own prompt: (L, H, T_answer, T_prompt). Entry
        ``[l, h, k, j]`` is how much the query that produced answer token ``k`` attends to prompt
        token ``j`` in layer ``l``, head ``h``."""
        if self.attentions is None:
            raise InvalidInput("generate(..., output_attentions=True) was not asked for")
        n, plen = len(self.tokens[row]), self.prompt_lengths[row]
        a = self.attentions[:n, :, row, :, self.padded_len - plen :]  # (n, L, H, T_prompt)
        return a.permute(1, 2, 0, 3).contiguous()  # (L, H, n, T_prompt)


def _as_batch(prompts: Prompts) -> list[list[int]]:
    if len(prompts) and isinstance(prompts[0], int):
        return [list(prompts)]  # type: ignore[arg-type]
    return [list(p) for p in prompts]  # type: ignore[union-attr]


def _last_rows(attentions: tuple[Tensor, ...], t_prompt: int) -> Tensor:
    """Each layer's last query row over the prompt slots: (L, B, H, T_prompt)."""
    return torch.stack([a[:, :, -1, :t_prompt] for a in attentions])


@torch.inference_mode()
def stream_generate(
    model: Decoder,
    prompts: Prompts,
    *,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_token_ids: Sequence[int] | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    prefix_lm: bool = False,
    use_cache: bool = True,
    attn_impl: AttnImpl = "sdpa",
    output_attentions: bool = False,
    pad_id: int | None = None,
    repetition_penalty: float = 1.0,
) -> Iterator[GenerationStep]:
    """Yield one :class:`GenerationStep` per new token until every row has hit a stop token or
    ``max_new_tokens`` tokens. ``stop_token_ids`` defaults to the config's eos ids. Greedy when
    ``temperature == 0``; ``seed`` (or a ``generator``) makes sampling reproducible.
    ``repetition_penalty`` > 1 discourages tokens this call already generated (never the prompt's:
    a grounded answer should copy from its sources freely)."""
    batch = _as_batch(prompts)
    if max_new_tokens < 1:
        raise InvalidInput("max_new_tokens must be >= 1")
    device = model.device
    cfg = model.config
    pad = pad_id if pad_id is not None else (cfg.pad_token_id if cfg.pad_token_id is not None else 0)
    ids, mask = pad_left(batch, pad, device)  # (B, T) x2
    b, t = ids.shape
    check_context(model, t, max_new_tokens)
    stops = torch.tensor(sorted(set(cfg.eos_token_id if stop_token_ids is None else stop_token_ids)), dtype=torch.long, device=device)
    gen = generator if generator is not None else make_generator(seed, device)
    padded = bool((mask == 0).any())
    lengths = mask.sum(-1)  # (B,) real tokens per row
    prefix_len = lengths if prefix_lm else None
    impl: AttnImpl = "reference" if output_attentions else attn_impl
    finished = torch.zeros(b, dtype=torch.bool, device=device)
    seen = torch.zeros(b, cfg.vocab_size, dtype=torch.bool, device=device) if repetition_penalty != 1.0 else None

    if use_cache:
        model.setup_caches(b, t + max_new_tokens)
        out = prefill(model, ids, attention_mask=mask if padded else None, prefix_len=prefix_len,
                      attn_impl=impl, output_attentions=output_attentions)
    else:
        seq, seq_mask = ids, mask
        out = model(seq, attention_mask=seq_mask if padded else None, prefix_len=prefix_len,
                    attn_impl=impl, output_attentions=output_attentions, last_logits_only=True)
    positions = lengths.clone()  # (B,) position id of the next token
    for step in range(max_new_tokens):
        logits = out.logits[:, -1]  # (B, V)
        if seen is not None:
            logits = penalize_repeats(logits, seen[:, : logits.shape[-1]], repetition_penalty)
        token = sample(logits, temperature, top_k, top_p, gen)  # (B,)
        if seen is not None:
            seen[torch.arange(b, device=device), token] = True
        is_stop = torch.isin(token, stops) if stops.numel() else torch.zeros_like(finished)
        emitted = ~finished & ~is_stop
        finished = finished | is_stop
        attn = _last_rows(out.attentions, t) if output_attentions else None
        yield GenerationStep(tokens=token, emitted=emitted, attentions=attn)
        if step == max_new_tokens - 1 or bool(finished.all()):
            return
        if use_cache:
            out = decode_one_token(model, token[:, None], t + step, position_ids=positions[:, None] if padded else None,
                                   attn_impl=impl, output_attentions=output_attentions)
        else:
            seq = torch.cat([seq, token[:, None]], dim=1)  # (B, T + step + 1)
            seq_mask = torch.cat([seq_mask, torch.ones_like(seq_mask[:, :1])], dim=1)
            out = model(seq, attention_mask=seq_mask if padded else None, prefix_len=prefix_len,
                        attn_impl=impl, output_attentions=output_attentions, last_logits_only=True)
        positions += 1


def generate(model: Decoder, prompts: Prompts, **kwargs) -> GenerationResult:
    """Generate for one prompt (a list of ids) or a batch (a list of lists); keyword arguments as
    :func:`stream_generate`. Returns the new tokens per row without stop tokens."""
    batch = _as_batch(prompts)
    tokens: list[list[int]] = [[] for _ in batch]
    reasons = ["length"] * len(batch)
    attns: list[Tensor] = []
    steps = 0
    for step in stream_generate(model, batch, **kwargs):
        steps += 1
        ids, emitted = step.tokens.tolist(), step.emitted.tolist()
        for row, (tok, keep) in enumerate(zip(ids, emitted, strict=True)):
            if keep:
                tokens[row].append(tok)
            elif reasons[row] == "length":
                reasons[row] = "stop"
        if step.attentions is not None:
            attns.append(step.attentions)
    return GenerationResult(
        tokens=tokens,
        finish_reasons=reasons,
        prompt_lengths=[len(p) for p in batch],
        attentions=torch.stack(attns) if attns else None,
        padded_len=max(len(p) for p in batch),
        steps=steps,
    )


@torch.inference_mode()
def attention_over_prompt(
    model: Decoder, prompt_ids: Sequence[int], answer_ids: Sequence[int], *, prefix_lm: bool = False
) -> Tensor:
    """Attention over the prompt of the queries that produce each answer token, from one full
    forward pass with the reference path: (L, H, T_answer, T_prompt). Row ``k`` is the query at
    position ``T_prompt - 1 + k`` (the one whose logits predict answer token ``k``), matching
    :meth:`GenerationResult.prompt_attention`."""
    t_prompt, n = len(prompt_ids), len(answer_ids)
    if t_prompt == 0 or n == 0:
        raise InvalidInput("prompt and answer must be non-empty")
    check_context(model, t_prompt, n - 1)
    ids = torch.tensor([list(prompt_ids) + list(answer_ids[:-1])], dtype=torch.long, device=model.device)
    out = model(ids, prefix_len=t_prompt if prefix_lm else None, attn_impl="reference",
                output_attentions=True, compute_logits=False)
    rows = slice(t_prompt - 1, t_prompt - 1 + n)
    return torch.stack([a[0, :, rows, :t_prompt] for a in out.attentions])  # (L, H, T_answer, T_prompt)
