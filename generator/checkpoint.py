"""Loading and saving decoder weights.

Three directory layouts load into :class:`generator.model.Decoder`:

* **Ours** (``save_pretrained``): ``config.json`` with ``"attend_decoder": true`` and our
  ``DecoderConfig`` under ``"decoder_config"``, plus ``model.safetensors`` with our parameter names.
* **Llama family** (Hugging Face): ``config.json`` (``model_type`` llama, mistral or qwen2) and
  ``model.safetensors`` or shards listed in ``model.safetensors.index.json``. Separate q/k/v and
  gate/up projections are concatenated into our fused ``wqkv`` and ``w_in``.
* **BERT / sentence-transformers** (``from_bert_checkpoint``): the encoder's weights in the
  post-norm / GELU / learned-position recipe, as the starting point of a decoder.

Tokenizers load through :class:`retriever.tokenizer.Tokenizer` (the one way to tokenize).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor

from common.errors import CheckpointError
from generator.config import HF_DECODER_TYPES, DecoderConfig
from generator.model import Decoder

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
IGNORED_SUFFIXES = ("rotary_emb.inv_freq", "position_ids")


# Reading safetensors ---------------------------------------------------------------------------


def _safetensor_files(path: Path) -> list[Path]:
    single = path / "model.safetensors"
    if single.is_file():
        return [single]
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [path / name for name in sorted(set(weight_map.values()))]
    raise CheckpointError(f"{path} has neither model.safetensors nor model.safetensors.index.json")


def read_state_dict(path: Path, dtype: torch.dtype | None = None) -> dict[str, Tensor]:
    """All tensors of a checkpoint directory (single file or shards), cast to ``dtype`` (floating
    tensors only)."""
    from safetensors import safe_open

    out: dict[str, Tensor] = {}
    for file in _safetensor_files(path):
        if not file.is_file():
            raise CheckpointError(f"shard {file.name} listed in the index is missing from {path}")
        with safe_open(str(file), framework="pt", device="cpu") as f:
            for key in f.keys():
                t = f.get_tensor(key)
                out[key] = t.to(dtype) if dtype is not None and t.is_floating_point() else t
    return out


def _read_config(path: Path) -> dict:
    cfg = path / "config.json"
    if not cfg.is_file():
        raise CheckpointError(f"{path} has no config.json")
    return json.loads(cfg.read_text())


# Building the model from a state dict -----------------------------------------------------------


def _build(config: DecoderConfig, state: dict[str, Tensor], device: torch.device | str | None) -> Decoder:
    """A ``Decoder`` holding exactly ``state`` (our names), built on ``meta`` to skip random init."""
    with torch.device("meta"):
        model = Decoder(config)
    expected = set(model.state_dict())
    if config.tie_word_embeddings:
        state = {k: v for k, v in state.items() if k != "output.weight"}
        expected.discard("output.weight")
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise CheckpointError(
            f"weights do not match the config: missing {sorted(missing)[:8]}, unexpected {sorted(unexpected)[:8]}"
        )
    if config.tie_word_embeddings:
        state = {**state, "output.weight": state["tok_embeddings.weight"]}
    model.load_state_dict(state, strict=True, assign=True)
    if config.tie_word_embeddings:
        model.output.weight = model.tok_embeddings.weight
    model.reset_buffers()  # the RoPE tables, still on meta, next to the loaded weights
    if device is not None:
        model.to(device)
    return model.eval()


def _cat(state: dict[str, Tensor], keys: Iterable[str]) -> Tensor:
    return torch.cat([state.pop(k) for k in keys], dim=0)


def map_hf_decoder(state: dict[str, Tensor], config: DecoderConfig) -> dict[str, Tensor]:
    """Rename a Llama/Mistral/Qwen2 state dict to ours, fusing q/k/v and gate/up."""
    state = {k.removeprefix("model."): v for k, v in state.items() if not k.endswith(IGNORED_SUFFIXES)}
    out: dict[str, Tensor] = {"tok_embeddings.weight": state.pop("embed_tokens.weight")}
    for i in range(config.n_layers):
        p = f"layers.{i}."
        attn, mlp = p + "self_attn.", p + "mlp."
        try:
            out[p + "attention.wqkv.weight"] = _cat(state, (attn + f"{n}_proj.weight" for n in "qkv"))
            if config.qkv_bias:
                out[p + "attention.wqkv.bias"] = _cat(state, (attn + f"{n}_proj.bias" for n in "qkv"))
            out[p + "attention.wo.weight"] = state.pop(attn + "o_proj.weight")
            if config.out_bias:
                out[p + "attention.wo.bias"] = state.pop(attn + "o_proj.bias")
            out[p + "feed_forward.w_in.weight"] = _cat(state, (mlp + "gate_proj.weight", mlp + "up_proj.weight"))
            out[p + "feed_forward.w_out.weight"] = state.pop(mlp + "down_proj.weight")
            if config.mlp_bias:
                out[p + "feed_forward.w_in.bias"] = _cat(state, (mlp + "gate_proj.bias", mlp + "up_proj.bias"))
                out[p + "feed_forward.w_out.bias"] = state.pop(mlp + "down_proj.bias")
            out[p + "attention_norm.weight"] = state.pop(p + "input_layernorm.weight")
            out[p + "ffn_norm.weight"] = state.pop(p + "post_attention_layernorm.weight")
        except KeyError as exc:
            raise CheckpointError(f"checkpoint lacks {exc.args[0]!r}") from exc
    out["norm.weight"] = state.pop("norm.weight")
    head = state.pop("lm_head.weight", None)
    if not config.tie_word_embeddings:
        if head is None:
            raise CheckpointError("checkpoint has no lm_head.weight and does not tie word embeddings")
        out["output.weight"] = head
    if state:
        raise CheckpointError(f"unmapped weights in checkpoint: {sorted(state)[:8]}")
    return out


# BERT warm start --------------------------------------------------------------------------------

BERT_PREFIXES = ("", "bert.", "model.", "0.auto_model.")


def extend_positions(table: Tensor, length: int) -> Tensor:
    """Extend a learned position table ``(n, dim)`` to ``(length, dim)`` by tiling: row ``i`` is
    row ``i % n`` of the original. This is Longformer's initialisation (Beltagy et al., 2020, sec. 5:
    "we initialize them by copying the 512 position embeddings from RoBERTa multiple times"): the
    first ``n`` positions are unchanged (so the model reproduces BERT there) and every later position
    starts from a trained embedding whose local relations to its neighbours are those BERT learned;
    fine-tuning then separates the copies. Shorter lengths truncate."""
    n = table.shape[0]
    if length <= n:
        return table[:length].clone()
    reps = -(-length // n)
    return table.repeat(reps, 1)[:length].clone()  # (length, dim)


def map_bert(state: dict[str, Tensor], config: DecoderConfig) -> dict[str, Tensor]:
    """Rename a BERT encoder's weights into the post-norm decoder recipe."""
    prefix = next((p for p in BERT_PREFIXES if p + "embeddings.word_embeddings.weight" in state), None)
    if prefix is None:
        raise CheckpointError("not a BERT checkpoint: no embeddings.word_embeddings.weight")
    s = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    e, out = "embeddings.", {}
    try:
        out["tok_embeddings.weight"] = s[e + "word_embeddings.weight"]
        out["pos_embeddings.weight"] = extend_positions(s[e + "position_embeddings.weight"], config.max_seq_len)
        # Every token is segment A: the token-type embedding is one constant vector.
        out["type_embedding"] = s[e + "token_type_embeddings.weight"][0].clone()
        out["embed_norm.weight"] = s[e + "LayerNorm.weight"]
        out["embed_norm.bias"] = s[e + "LayerNorm.bias"]
        for i in range(config.n_layers):
            b, p = f"encoder.layer.{i}.", f"layers.{i}."
            sa = b + "attention.self."
            for kind in ("weight", "bias"):
                out[p + f"attention.wqkv.{kind}"] = torch.cat(
                    [s[sa + f"{n}.{kind}"] for n in ("query", "key", "value")], dim=0
                )
                out[p + f"attention.wo.{kind}"] = s[b + f"attention.output.dense.{kind}"]
                out[p + f"attention_norm.{kind}"] = s[b + f"attention.output.LayerNorm.{kind}"]
                out[p + f"feed_forward.w_in.{kind}"] = s[b + f"intermediate.dense.{kind}"]
                out[p + f"feed_forward.w_out.{kind}"] = s[b + f"output.dense.{kind}"]
                out[p + f"ffn_norm.{kind}"] = s[b + f"output.LayerNorm.{kind}"]
    except KeyError as exc:
        raise CheckpointError(f"BERT checkpoint lacks {exc.args[0]!r}") from exc
    return out


def from_bert_checkpoint(
    path: str | Path,
    *,
    max_seq_len: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Decoder:
    """A decoder warm-started from a BERT / sentence-transformers directory (``config.json`` +
    ``model.safetensors``; keys with or without a ``bert.`` prefix).

    The recipe is post-norm LayerNorm, GELU MLP with biases, attention biases, learned absolute
    positions, the segment-A token-type vector added as a constant, an embedding LayerNorm, no final
    norm, and an output head tied to the word embeddings. With a fully bidirectional mask
    (``prefix_len`` = sequence length) it computes BERT's hidden states; ``max_seq_len`` > 512
    extends the position table by tiling (:func:`extend_positions`). The pooler is dropped.
    """
    path = Path(path)
    hf = _read_config(path)
    if hf.get("model_type", "bert") not in ("bert", "roberta") and "BertModel" not in hf.get("architectures", []):
        raise CheckpointError(f"{path} is not a BERT checkpoint (model_type {hf.get('model_type')!r})")
    config = DecoderConfig.from_bert_config(hf, max_seq_len=max_seq_len)
    state = map_bert(read_state_dict(path, dtype or torch.float32), config)
    return _build(config, state, device)


# Public entry points ----------------------------------------------------------------------------


def _default_dtype(hf: dict, device: torch.device | str | None) -> torch.dtype:
    """float32 on CPU; on CUDA the checkpoint's half precision when it declares one."""
    if device is not None and torch.device(device).type == "cuda":
        name = hf.get("dtype") or hf.get("torch_dtype")
        if name in ("bfloat16", "float16"):
            return getattr(torch, name)
    return torch.float32


def load_decoder(
    path: str | Path,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
):
    """Load a decoder and its tokenizer (``None`` when the directory has none) from our format, a
    Llama/Mistral/Qwen2 directory, or a BERT directory. ``path`` may name a folder under
    ``models/``. Returns ``(Decoder, Tokenizer | None)`` in eval mode."""
    from common.paths import resolve_model_dir
    from retriever.tokenizer import Tokenizer

    path = resolve_model_dir(path)
    hf = _read_config(path)
    if hf.get("attend_decoder"):
        config = DecoderConfig.from_dict(hf["decoder_config"])
        dtype = dtype or _default_dtype(hf, device)
        model = _build(config, read_state_dict(path, dtype), device)
    elif hf.get("model_type") in HF_DECODER_TYPES:
        config = DecoderConfig.from_hf_config(hf)
        gen = path / "generation_config.json"
        if gen.is_file():
            eos = json.loads(gen.read_text()).get("eos_token_id")
            if eos is not None:
                config.eos_token_id = sorted(set(config.eos_token_id) | set([eos] if isinstance(eos, int) else eos))
        dtype = dtype or _default_dtype(hf, device)
        model = _build(config, map_hf_decoder(read_state_dict(path, dtype), config), device)
    elif hf.get("model_type") == "bert":
        model = from_bert_checkpoint(path, device=device, dtype=dtype)
    else:
        raise CheckpointError(
            f"{path}: model_type {hf.get('model_type')!r} is not a decoder we load "
            f"(ours, {', '.join(HF_DECODER_TYPES)}, or bert)"
        )
    tokenizer = None
    if (path / "tokenizer.json").is_file() or (path / "vocab.txt").is_file():
        tokenizer = Tokenizer.from_dir(path)
    log.info("loaded %s (%.1fM params, %s) from %s", type(model).__name__, model.num_params() / 1e6, model.dtype, path)
    return model, tokenizer


def save_pretrained(model: Decoder, path: str | Path, tokenizer=None) -> Path:
    """Write ``config.json`` (``"attend_decoder": true`` + our config) and ``model.safetensors``
    (and ``tokenizer.json`` when a tokenizer is given) for :func:`load_decoder`."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = {"attend_decoder": True, "format_version": FORMAT_VERSION, "decoder_config": model.config.to_dict()}
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("output.weight", None)
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save(path)
    return path


# Export to the Llama layout ---------------------------------------------------------------------


def to_hf_llama(model: Decoder) -> tuple[dict, dict[str, Tensor]]:
    """Our Llama-recipe decoder as a Hugging Face ``LlamaForCausalLM`` ``(config dict, state
    dict)``, the inverse of :func:`map_hf_decoder` (used to compare against ``transformers``)."""
    c = model.config
    if (c.norm, c.norm_placement, c.mlp, c.positions) != ("rms", "pre", "swiglu", "rope") or c.qkv_bias != c.out_bias:
        raise CheckpointError("only the Llama recipe (pre-norm RMSNorm, SwiGLU, RoPE) exports to LlamaForCausalLM")
    hf = {
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": c.vocab_size,
        "hidden_size": c.dim, "intermediate_size": c.intermediate_size, "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads, "num_key_value_heads": c.n_kv_heads, "head_dim": c.head_dim,
        "max_position_embeddings": c.max_seq_len, "rms_norm_eps": c.norm_eps, "hidden_act": c.activation,
        "rope_parameters": {"rope_theta": c.rope_theta, "rope_type": "default", **(c.rope_scaling or {})},
        "attention_bias": c.qkv_bias, "mlp_bias": c.mlp_bias, "tie_word_embeddings": c.tie_word_embeddings,
        "bos_token_id": c.bos_token_id, "eos_token_id": c.eos_token_id or None, "pad_token_id": c.pad_token_id,
    }
    src = {k: v.detach() for k, v in model.state_dict().items()}
    q, kv = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim  # type: ignore[operator]
    out = {"model.embed_tokens.weight": src["tok_embeddings.weight"], "model.norm.weight": src["norm.weight"]}
    if not c.tie_word_embeddings:
        out["lm_head.weight"] = src["output.weight"]
    for i in range(c.n_layers):
        p, h = f"layers.{i}.", f"model.layers.{i}."
        for kind in ("weight", "bias") if c.qkv_bias else ("weight",):
            wq, wk, wv = src[p + f"attention.wqkv.{kind}"].split((q, kv, kv), dim=0)
            out.update({h + f"self_attn.q_proj.{kind}": wq, h + f"self_attn.k_proj.{kind}": wk,
                        h + f"self_attn.v_proj.{kind}": wv, h + f"self_attn.o_proj.{kind}": src[p + f"attention.wo.{kind}"]})
        for kind in ("weight", "bias") if c.mlp_bias else ("weight",):
            gate, up = src[p + f"feed_forward.w_in.{kind}"].chunk(2, dim=0)
            out.update({h + f"mlp.gate_proj.{kind}": gate, h + f"mlp.up_proj.{kind}": up,
                        h + f"mlp.down_proj.{kind}": src[p + f"feed_forward.w_out.{kind}"]})
        out[h + "input_layernorm.weight"] = src[p + "attention_norm.weight"]
        out[h + "post_attention_layernorm.weight"] = src[p + "ffn_norm.weight"]
    return hf, out
