"""Reading llama.cpp GGUF files (Llama architecture) into our :class:`Decoder` and :class:`Tokenizer`.

A GGUF file holds the model's hyperparameters and its tokenizer as ``key: value`` metadata and the
weights as named tensors, many of them block-quantized (Q4_1, Q8_0, ...). Reading one takes four
steps:

* **Config**: ``llama.*`` metadata (context length, widths, heads, RMSNorm epsilon, RoPE base) into
  a :class:`DecoderConfig`; the head is tied when the file has no ``output.weight``.
* **Weights**: every tensor is dequantized to float32 with ``gguf.quants.dequantize`` and renamed
  (``blk.N.attn_q`` -> ``layers.N.attention.wqkv``, fused with k and v; ``ffn_gate`` + ``ffn_up`` ->
  ``feed_forward.w_in``). GGUF lists a tensor's dimensions fastest-first (``ne[0]`` = input
  features); the numpy array the reader returns is already row-major ``(out, in)``.
* **Un-permutation**: llama.cpp's ``convert_hf_to_gguf.py`` reorders the rows of q and k inside
  every head, from Hugging Face's rotate-half RoPE layout (first half / second half of a head) to
  GGML's interleaved pairs: ``w.reshape(n_head, 2, head_dim // 2, in).swapaxes(1, 2)``.
  :func:`unpermute_qk` undoes it; without it the model still runs but RoPE rotates the wrong
  pairs of features and the text it predicts is poor.
* **Tokenizer**: the byte-level BPE (``tokenizer.ggml.model == "gpt2"``) rebuilt with ``tokenizers``
  from the vocabulary, the merges and the token types (control tokens become special tokens), with
  the pre-tokenizer split that ``tokenizer.ggml.pre`` names.

Nothing is downloaded; ``gguf`` (the reader of the llama.cpp project) is imported where used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from common.errors import CheckpointError, MissingDependency
from generator.checkpoint import _build
from generator.config import DecoderConfig
from generator.model import Decoder
from retriever.tokenizer import Tokenizer

if TYPE_CHECKING:
    from gguf import GGUFReader, ReaderTensor
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers.pre_tokenizers import PreTokenizer

log = logging.getLogger(__name__)

SUPPORTED_ARCHITECTURES = ("llama",)
TOKEN_CONTROL = 3  # llama.cpp's token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 6 byte
TOKEN_USER_DEFINED = 4

# How each ``tokenizer.ggml.pre`` splits text before BPE (llama.cpp's ``llama-vocab.cpp``): a regex
# whose matches are isolated first (``None``: none), and whether GPT-2's regex runs after it.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PRE_TOKENIZERS: dict[str, tuple[str | None, bool]] = {
    "default": (None, True),
    "gpt2": (None, True),
    "gpt-2": (None, True),
    # SmolLM, StarCoder and kin isolate every numeric character (\p{N}: 7, ½, ², Ⅻ), then apply
    # GPT-2's regex, as the model's own tokenizer does (Digits(individual_digits=True)).
    "smollm": (r"\p{N}", True),
    "starcoder": (r"\p{N}", True),
    "refact": (r"\p{N}", True),
    "command-r": (r"\p{N}", True),
    "codeshell": (r"\p{N}", True),
    "exaone": (r"\p{N}", True),
    "llama3": (LLAMA3_SPLIT, False),
    "llama-v3": (LLAMA3_SPLIT, False),
    "llama-bpe": (LLAMA3_SPLIT, False),
    "smaug-bpe": (LLAMA3_SPLIT, False),
}


@dataclass
class GGUFCheckpoint:
    """Everything read from a GGUF file. ``state`` holds our parameter names; ``metadata`` every
    key of the file as plain Python values; ``special_tokens`` the named special tokens as strings
    (``bos_token``, ``eos_token``, ``unk_token``, ``pad_token``), what a chat template expects."""

    config: DecoderConfig
    state: dict[str, Tensor]
    metadata: dict[str, Any]
    tokenizer: Tokenizer
    chat_template: str | None
    special_tokens: dict[str, str] = field(default_factory=dict)

    def to_decoder(self, device: torch.device | str | None = None) -> Decoder:
        """A :class:`Decoder` in eval mode holding these weights (shared, not copied)."""
        return _build(self.config, self.state, device)


# Opening the file ------------------------------------------------------------------------------


def open_gguf(path: str | Path) -> GGUFReader:
    """A ``gguf.GGUFReader`` over ``path`` (memory-mapped; tensors are read when used)."""
    try:
        from gguf import GGUFReader
    except ImportError as exc:
        raise MissingDependency("gguf", feature="reading GGUF files") from exc
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"GGUF file {str(path)!r} does not exist")
    try:
        return GGUFReader(path)
    except (ValueError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable GGUF file: {exc}") from exc


def read_metadata(reader: GGUFReader) -> dict[str, Any]:
    """The file's key/value metadata as plain Python values (str, int, float, bool, lists).

    GGUF stores most floats as float32; they are given back as the shortest decimal that rounds to
    the same float32 (``1e-05``, not ``9.999999747378752e-06``), the value the converter wrote."""
    from gguf import GGUFValueType

    out: dict[str, Any] = {}
    for name, f in reader.fields.items():
        if name.startswith("GGUF."):  # the header (version, counts), not metadata
            continue
        value = f.contents()
        if f.types == [GGUFValueType.FLOAT32]:
            value = float(str(np.float32(value)))
        out[name] = value
    return out


# Config ----------------------------------------------------------------------------------------


def config_from_metadata(meta: dict[str, Any], tensors: dict[str, ReaderTensor]) -> DecoderConfig:
    """A :class:`DecoderConfig` from ``llama.*`` metadata and the tensor names/shapes."""
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise CheckpointError(
            f"GGUF architecture {arch!r} is not supported (supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
        )

    def req(key: str) -> Any:
        if f"{arch}.{key}" not in meta:
            raise CheckpointError(f"GGUF metadata lacks {arch}.{key}")
        return meta[f"{arch}.{key}"]

    if meta.get(f"{arch}.expert_count"):
        raise CheckpointError("mixture-of-experts GGUF files are not supported")
    if "rope_freqs.weight" in tensors:
        raise CheckpointError(
            "GGUF files with a rope_freqs tensor (Llama 3.1 RoPE scaling) are not supported"
        )
    dim, n_heads = int(req("embedding_length")), int(req("attention.head_count"))
    head_dim = int(meta.get(f"{arch}.attention.key_length", dim // n_heads))
    rope_dims = int(meta.get(f"{arch}.rope.dimension_count", head_dim))
    if rope_dims != head_dim:
        raise CheckpointError(
            f"partial rotary embeddings ({rope_dims} of {head_dim} dims) are not supported"
        )
    scaling = None
    kind = meta.get(f"{arch}.rope.scaling.type", "none")
    if kind == "linear":
        scaling = {"rope_type": "linear", "factor": float(req("rope.scaling.factor"))}
    elif kind != "none":
        raise CheckpointError(f"GGUF RoPE scaling {kind!r} is not supported")
    if "token_embd.weight" not in tensors:
        raise CheckpointError("GGUF file has no token_embd.weight")
    vocab_size = int(tensors["token_embd.weight"].shape[-1])  # ggml order: (dim, vocab)
    n_tokens = len(meta.get("tokenizer.ggml.tokens") or ())
    if n_tokens > vocab_size:
        raise CheckpointError(
            f"the tokenizer has {n_tokens} tokens but the embedding only {vocab_size} rows"
        )
    eos = meta.get("tokenizer.ggml.eos_token_id")
    return DecoderConfig(
        vocab_size=vocab_size,
        dim=dim,
        n_layers=int(req("block_count")),
        n_heads=n_heads,
        n_kv_heads=int(meta.get(f"{arch}.attention.head_count_kv", n_heads)),
        head_dim=head_dim,
        intermediate_size=int(req("feed_forward_length")),
        max_seq_len=int(req("context_length")),
        norm="rms",
        norm_eps=float(meta.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(meta.get(f"{arch}.rope.freq_base", 10000.0)),
        rope_scaling=scaling,
        tie_word_embeddings="output.weight" not in tensors,
        bos_token_id=meta.get("tokenizer.ggml.bos_token_id"),
        eos_token_id=[] if eos is None else [int(eos)],
        pad_token_id=meta.get("tokenizer.ggml.padding_token_id"),
    )


# Weights ---------------------------------------------------------------------------------------


def unpermute_qk(w: Tensor, n_heads: int) -> Tensor:
    """Undo llama.cpp's q/k row permutation (``n_heads``: query heads for q, key/value heads for k).

    The converter maps row ``h*D + j*D/2 + i`` (head ``h``, half ``j``, index ``i``) to row
    ``h*D + 2*i + j``; this maps it back. Works on weights ``(n_heads*D, in)`` and biases."""
    rest = w.shape[1:]
    half = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, half, 2, *rest).transpose(1, 2).reshape(w.shape)  # (n_heads*D, ...)


def dequantize_tensor(t: ReaderTensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """One tensor of the file as a float tensor in numpy/torch order (``(out, in)`` for matrices)."""
    from gguf import quants

    arr = quants.dequantize(t.data, t.tensor_type)
    shape = tuple(int(n) for n in reversed(t.shape))  # ggml lists dimensions fastest-first
    if arr.size != int(np.prod(shape)):
        raise CheckpointError(f"tensor {t.name}: {arr.size} values for shape {shape}")
    arr = arr.reshape(shape)
    if np.may_share_memory(arr, t.data):  # F32 tensors are views of the memory-mapped file
        arr = arr.copy()
    return torch.from_numpy(arr).to(dtype)


def map_gguf_tensors(
    tensors: dict[str, ReaderTensor],
    config: DecoderConfig,
    *,
    dtype: torch.dtype,
    unpermute: bool = True,
) -> dict[str, Tensor]:
    """Dequantize and rename the tensors of a Llama GGUF to our parameter names."""
    left = dict(tensors)

    def take(name: str) -> Tensor:
        t = left.pop(name, None)
        if t is None:
            raise CheckpointError(f"GGUF file lacks tensor {name!r}")
        return dequantize_tensor(t, dtype)

    out = {
        "tok_embeddings.weight": take("token_embd.weight"),
        "norm.weight": take("output_norm.weight"),
    }
    if not config.tie_word_embeddings:
        out["output.weight"] = take("output.weight")
    for i in range(config.n_layers):
        b, p = f"blk.{i}.", f"layers.{i}."
        q, k, v = take(b + "attn_q.weight"), take(b + "attn_k.weight"), take(b + "attn_v.weight")
        if unpermute:
            q, k = unpermute_qk(q, config.n_heads), unpermute_qk(k, config.n_kv_heads)  # type: ignore[arg-type]
        out[p + "attention.wqkv.weight"] = torch.cat([q, k, v], dim=0)  # (H*D + 2*KV*D, dim)
        out[p + "attention.wo.weight"] = take(b + "attn_output.weight")
        out[p + "feed_forward.w_in.weight"] = torch.cat(
            [take(b + "ffn_gate.weight"), take(b + "ffn_up.weight")]
        )
        out[p + "feed_forward.w_out.weight"] = take(b + "ffn_down.weight")
        out[p + "attention_norm.weight"] = take(b + "attn_norm.weight")
        out[p + "ffn_norm.weight"] = take(b + "ffn_norm.weight")
    if left:
        raise CheckpointError(f"GGUF tensors we cannot map: {sorted(left)[:8]}")
    return out


# Tokenizer -------------------------------------------------------------------------------------


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table, the alphabet byte-level BPE vocabularies use."""
    keep = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table, extra = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _pre_tokenizer(name: str | None) -> PreTokenizer:
    from tokenizers import Regex, pre_tokenizers

    if name is not None and name not in PRE_TOKENIZERS:
        log.warning("unknown GGUF pre-tokenizer %r: splitting text with GPT-2's regex", name)
    split, gpt2_regex = PRE_TOKENIZERS.get(name or "default", (None, True))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=gpt2_regex)
    if split is None:
        return byte_level
    return pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(split), behavior="isolated"), byte_level]
    )


def _byte_level_bpe(meta: dict[str, Any]) -> HFTokenizer:
    from tokenizers import AddedToken, decoders, processors
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers.models import BPE

    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    merges = meta.get("tokenizer.ggml.merges")
    if not merges:
        raise CheckpointError("GGUF byte-level BPE tokenizer has no tokenizer.ggml.merges")
    types: list[int] = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    spelling = bytes_to_unicode()
    alphabet = set(spelling.values())
    # Tokens are stored in the byte alphabet; one that is not (a mislabelled added token) is
    # respelled so that its id stays reachable, as transformers does.
    vocab = {
        t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8")): i
        for i, t in enumerate(tokens)
    }
    tok = HFTokenizer(BPE(vocab, [tuple(m.split(" ", 1)) for m in merges], fuse_unk=False))
    tok.pre_tokenizer = _pre_tokenizer(meta.get("tokenizer.ggml.pre"))
    tok.decoder = decoders.ByteLevel()
    control = [
        t for t, k in zip(tokens, types, strict=False) if k == TOKEN_CONTROL and set(t) <= alphabet
    ]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    user = [
        t for t, k in zip(tokens, types, strict=False) if k == TOKEN_USER_DEFINED and t in vocab
    ]
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in user])
    bos, eos = meta.get("tokenizer.ggml.bos_token_id"), meta.get("tokenizer.ggml.eos_token_id")
    before = [bos] if meta.get("tokenizer.ggml.add_bos_token") and bos is not None else []
    after = [eos] if meta.get("tokenizer.ggml.add_eos_token") and eos is not None else []
    if before or after:  # llama.cpp adds these around every text it tokenizes
        single = " ".join([*(tokens[i] for i in before), "$A", *(tokens[i] for i in after)])
        tok.post_processor = processors.TemplateProcessing(
            single=single, special_tokens=[(tokens[i], i) for i in sorted(set(before + after))]
        )
    return tok


TOKENIZER_BUILDERS: dict[str, Callable[[dict[str, Any]], HFTokenizer]] = {"gpt2": _byte_level_bpe}


def tokenizer_from_metadata(meta: dict[str, Any]) -> Tokenizer:
    """Our :class:`Tokenizer` rebuilt from ``tokenizer.ggml.*`` metadata (byte-level BPE only)."""
    kind = meta.get("tokenizer.ggml.model")
    if kind not in TOKENIZER_BUILDERS:
        raise CheckpointError(
            f"GGUF tokenizer model {kind!r} is not supported (supported: {', '.join(TOKENIZER_BUILDERS)})"
        )
    if not meta.get("tokenizer.ggml.tokens"):
        raise CheckpointError("GGUF file has no tokenizer.ggml.tokens")
    return Tokenizer(TOKENIZER_BUILDERS[kind](meta))


def special_tokens_from_metadata(meta: dict[str, Any]) -> dict[str, str]:
    """``{"bos_token": "<|im_start|>", ...}`` for the special token ids the file names."""
    tokens = meta.get("tokenizer.ggml.tokens") or []
    out = {}
    for name, key in (
        ("bos_token", "bos"),
        ("eos_token", "eos"),
        ("unk_token", "unknown"),
        ("pad_token", "padding"),
    ):
        idx = meta.get(f"tokenizer.ggml.{key}_token_id")
        if idx is not None and 0 <= idx < len(tokens):
            out[name] = tokens[idx]
    return out


# Public entry points ---------------------------------------------------------------------------


def read_gguf(
    source: str | Path | GGUFReader, *, dtype: torch.dtype = torch.float32, unpermute: bool = True
) -> GGUFCheckpoint:
    """Read a Llama-architecture GGUF file (a path, or a ``gguf.GGUFReader`` already open):
    config, dequantized weights in our names (q/k un-permuted unless ``unpermute=False``), the
    metadata, the tokenizer and the chat template."""
    reader = open_gguf(source) if isinstance(source, (str, Path)) else source
    meta = read_metadata(reader)
    tensors = {t.name: t for t in reader.tensors}
    config = config_from_metadata(meta, tensors)
    tokenizer = tokenizer_from_metadata(meta)
    state = map_gguf_tensors(tensors, config, dtype=dtype, unpermute=unpermute)
    return GGUFCheckpoint(
        config=config,
        state=state,
        metadata=meta,
        tokenizer=tokenizer,
        chat_template=meta.get("tokenizer.chat_template"),
        special_tokens=special_tokens_from_metadata(meta),
    )


def load_gguf(
    path: str | Path,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    unpermute: bool = True,
) -> tuple[Decoder, Tokenizer]:
    """A decoder (eval mode, float32 unless ``dtype``) and its tokenizer from a Llama GGUF file."""
    ckpt = read_gguf(path, dtype=dtype or torch.float32, unpermute=unpermute)
    model = ckpt.to_decoder(device)
    log.info(
        "loaded %s (%.1fM params, %s) from %s",
        ckpt.metadata.get("general.name", "GGUF model"),
        model.num_params() / 1e6,
        model.dtype,
        path,
    )
    return model, ckpt.tokenizer
