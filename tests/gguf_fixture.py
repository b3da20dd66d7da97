"""GGUF files written by the tests, and the reference side of the GGUF tests.

``write_tiny_gguf`` writes a seeded random Llama (dim 64, 2 layers, 4 heads, 2 kv heads) the way
llama.cpp's ``convert_hf_to_gguf.py`` does: Hugging Face weights with q/k rows permuted, a byte-level
BPE vocabulary trained here on a few sentences, ChatML special tokens and a chat template; F32 or
Q8_0 tensors. ``hf_llama_from_gguf`` is the independent reference: it reads a GGUF's tensors with
``gguf`` alone, undoes the permutation with plain row indexing, and builds transformers'
``LlamaForCausalLM`` from them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France, and Berlin is the capital of Germany.",
    "def add(a, b):\n    return a + b  # 42 is the answer\n",
    "Retrieval-augmented generation cites the passages it reads.",
    "Numbers like 2024, 3.14 and 1,000 appear in text; so do e-mails and URLs.",
    "Caf\u00e9 na\u00efve fa\u00e7ade \u6771\u4eac \U0001f680 -- what's new? I'm fine, they're here.",
]
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
BOS_ID, EOS_ID, PAD_ID = 1, 0, 0  # <|im_start|>, <|endoftext|>, <|endoftext|>


@dataclass(frozen=True)
class TinyShape:
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    intermediate: int = 128
    context: int = 256
    eps: float = 1e-5
    theta: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


@dataclass
class TinyGGUF:
    path: Path
    weights: dict[str, np.ndarray]  # the original (un-permuted) weights, Hugging Face names
    tokens: list[str]
    shape: TinyShape


def train_vocab(vocab_size: int = 320) -> tuple[list[str], list[str]]:
    """A byte-level BPE vocabulary (tokens in id order, special tokens first) and its merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(SENTENCES * 4, trainer)
    vocab = tok.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    assert [vocab[t] for t in tokens] == list(range(len(tokens)))
    merges = json.loads(tok.to_str())["model"]["merges"]
    return tokens, [m if isinstance(m, str) else " ".join(m) for m in merges]


def llamacpp_permute(w: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """``LlamaModel.permute`` of llama.cpp's ``convert_hf_to_gguf.py``, verbatim in numpy."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def plain_unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of the permutation by explicit row indices: GGUF row ``h*D + 2*i + j`` holds
    Hugging Face row ``h*D + j*D/2 + i``; listing the GGUF rows in (h, j, i) order restores it."""
    d = w.shape[0] // n_head
    rows = [h * d + 2 * i + j for h in range(n_head) for j in (0, 1) for i in range(d // 2)]
    return w[rows]


def random_weights(shape: TinyShape, vocab: int, seed: int, tied: bool) -> dict[str, np.ndarray]:
    """Seeded Llama weights under Hugging Face names (norm weights around 1)."""
    rng = np.random.default_rng(seed)
    s, kv = shape, shape.n_kv_heads * shape.head_dim
    sizes = {
        "model.embed_tokens.weight": (vocab, s.dim),
        "model.norm.weight": (s.dim,),
    }
    if not tied:
        sizes["lm_head.weight"] = (vocab, s.dim)
    for i in range(s.n_layers):
        p = f"model.layers.{i}."
        sizes.update(
            {
                p + "self_attn.q_proj.weight": (s.dim, s.dim),
                p + "self_attn.k_proj.weight": (kv, s.dim),
                p + "self_attn.v_proj.weight": (kv, s.dim),
                p + "self_attn.o_proj.weight": (s.dim, s.dim),
                p + "mlp.gate_proj.weight": (s.intermediate, s.dim),
                p + "mlp.up_proj.weight": (s.intermediate, s.dim),
                p + "mlp.down_proj.weight": (s.dim, s.intermediate),
                p + "input_layernorm.weight": (s.dim,),
                p + "post_attention_layernorm.weight": (s.dim,),
            }
        )
    out = {}
    for name, size in sizes.items():
        noise = rng.standard_normal(size).astype(np.float32)
        out[name] = 1.0 + 0.1 * noise if "norm" in name else 0.2 * noise
    return out


GGUF_NAMES = {  # Hugging Face suffix -> GGUF suffix inside a block
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def gguf_name(hf_name: str) -> str:
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    if hf_name == "lm_head.weight":
        return "output.weight"
    _, _, layer, rest = hf_name.split(".", 3)
    module = rest.removesuffix(".weight")
    return f"blk.{layer}.{GGUF_NAMES[module]}.weight"


def write_tiny_gguf(
    path: Path,
    *,
    seed: int = 0,
    qtype: str = "F32",
    tied: bool = False,
    pre: str = "gpt2",
    arch: str = "llama",
    tokenizer_model: str = "gpt2",
    template: str | None = CHATML,
    shape: TinyShape = TinyShape(),
) -> TinyGGUF:
    """Write a tiny random Llama GGUF the way llama.cpp's converter does (q/k rows permuted)."""
    import gguf

    tokens, merges = train_vocab()
    weights = random_weights(shape, len(tokens), seed, tied)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(f"tiny-{qtype.lower()}")
    w.add_context_length(shape.context)
    w.add_embedding_length(shape.dim)
    w.add_block_count(shape.n_layers)
    w.add_feed_forward_length(shape.intermediate)
    w.add_head_count(shape.n_heads)
    w.add_head_count_kv(shape.n_kv_heads)
    w.add_layer_norm_rms_eps(shape.eps)
    w.add_rope_freq_base(shape.theta)
    w.add_rope_dimension_count(shape.head_dim)
    w.add_tokenizer_model(tokenizer_model)
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types([3 if t in SPECIALS else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(BOS_ID)
    w.add_eos_token_id(EOS_ID)
    w.add_pad_token_id(PAD_ID)
    w.add_add_bos_token(False)
    if template is not None:
        w.add_chat_template(template)
    quant = getattr(gguf.GGMLQuantizationType, qtype)
    for name, value in weights.items():
        if ".q_proj." in name:
            value = llamacpp_permute(value, shape.n_heads, shape.n_heads)
        elif ".k_proj." in name:
            value = llamacpp_permute(value, shape.n_heads, shape.n_kv_heads)
        if value.ndim == 2 and quant != gguf.GGMLQuantizationType.F32:
            w.add_tensor(gguf_name(name), gguf.quants.quantize(value, quant), raw_dtype=quant)
        else:
            w.add_tensor(gguf_name(name), np.ascontiguousarray(value, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return TinyGGUF(path=path, weights=weights, tokens=tokens, shape=shape)


def write_metadata_only(path: Path, arch: str) -> Path:
    """A GGUF with an architecture and no tensors (for the error cases)."""
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# The reference side -----------------------------------------------------------------------------


def _field(reader, key: str, default=None):
    return reader.fields[key].contents() if key in reader.fields else default


def hf_state_from_gguf(reader) -> tuple[dict, dict[str, torch.Tensor]]:
    """A ``LlamaConfig`` dict and a Hugging Face state dict read from a GGUF with ``gguf`` alone:
    tensors dequantized, q/k rows restored by :func:`plain_unpermute`."""
    from gguf import quants

    n_heads = _field(reader, "llama.attention.head_count")
    n_kv = _field(reader, "llama.attention.head_count_kv")
    names = {t.name for t in reader.tensors}
    hf_names = {v + ".weight": k for k, v in GGUF_NAMES.items()}
    state = {}
    for t in reader.tensors:
        arr = quants.dequantize(t.data, t.tensor_type).reshape([int(n) for n in reversed(t.shape)])
        if t.name == "token_embd.weight":
            name = "model.embed_tokens.weight"
        elif t.name == "output_norm.weight":
            name = "model.norm.weight"
        elif t.name == "output.weight":
            name = "lm_head.weight"
        else:
            _, layer, rest = t.name.split(".", 2)
            name = f"model.layers.{layer}.{hf_names[rest]}.weight"
            if rest == "attn_q.weight":
                arr = plain_unpermute(arr, n_heads)
            elif rest == "attn_k.weight":
                arr = plain_unpermute(arr, n_kv)
        state[name] = torch.tensor(np.array(arr, dtype=np.float32))
    config = dict(
        vocab_size=state["model.embed_tokens.weight"].shape[0],
        hidden_size=_field(reader, "llama.embedding_length"),
        intermediate_size=_field(reader, "llama.feed_forward_length"),
        num_hidden_layers=_field(reader, "llama.block_count"),
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv,
        max_position_embeddings=_field(reader, "llama.context_length"),
        rms_norm_eps=_field(reader, "llama.attention.layer_norm_rms_epsilon"),
        rope_theta=_field(reader, "llama.rope.freq_base"),
        tie_word_embeddings="output.weight" not in names,
        bos_token_id=_field(reader, "tokenizer.ggml.bos_token_id"),
        eos_token_id=_field(reader, "tokenizer.ggml.eos_token_id"),
        pad_token_id=_field(reader, "tokenizer.ggml.padding_token_id"),
    )
    return config, state


def hf_llama_from_gguf(reader):
    """transformers' ``LlamaForCausalLM`` (fp32, eval) on the weights of a GGUF."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config, state = hf_state_from_gguf(reader)
    theta = config.pop("rope_theta")
    model = LlamaForCausalLM(
        LlamaConfig(**config, rope_parameters={"rope_type": "default", "rope_theta": theta})
    )
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    if config["tie_word_embeddings"]:
        model.tie_weights()
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return model.eval()
