"""``DecoderConfig``: the shape and the block recipe of our decoder-only transformer.

One dataclass describes both families the model hosts:

* Llama-style (Llama, Mistral, Qwen2): pre-norm RMSNorm, SwiGLU MLP, RoPE, grouped-query attention,
  optional q/k/v biases and sliding window, tied or untied output head.
* BERT-style warm start (all-MiniLM-L6-v2 in a decoder): post-norm LayerNorm with bias, GELU MLP with
  biases, learned absolute positions, attention biases, a constant token-type vector and an
  embedding LayerNorm, no final norm.

Presets are named shapes (``DecoderConfig.preset("tiny")``); ``from_hf_config`` reads a Hugging Face
``config.json`` dict of the Llama family.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from common.errors import CheckpointError, InvalidInput

NormKind = Literal["rms", "layer"]
Placement = Literal["pre", "post"]
MlpKind = Literal["swiglu", "gelu"]
PositionKind = Literal["rope", "learned"]
Activation = Literal["silu", "gelu", "gelu_tanh"]

ROPE_TYPES = ("default", "linear", "llama3")
HF_DECODER_TYPES = ("llama", "mistral", "qwen2")


@dataclass
class DecoderConfig:
    """Everything needed to build a :class:`generator.model.Decoder`.

    ``max_seq_len`` is the context window: the RoPE table length or the learned position table size.
    ``rope_scaling`` follows Hugging Face's ``rope_parameters``: ``{"rope_type": "linear", "factor":
    4.0}`` or ``{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor":
    4.0, "original_max_position_embeddings": 8192}``.
    """

    vocab_size: int = 32000
    dim: int = 384
    n_layers: int = 6
    n_heads: int = 6
    n_kv_heads: int | None = None  # None: same as n_heads (plain multi-head attention)
    head_dim: int | None = None  # None: dim // n_heads
    intermediate_size: int = 1024
    max_seq_len: int = 4096
    # Block recipe.
    norm: NormKind = "rms"
    norm_eps: float = 1e-5
    norm_placement: Placement = "pre"
    final_norm: bool = True
    mlp: MlpKind = "swiglu"
    activation: Activation = "silu"
    positions: PositionKind = "rope"
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    qkv_bias: bool = False
    out_bias: bool = False  # bias of the attention output projection
    mlp_bias: bool = False
    sliding_window: int | None = None
    sliding_window_layers: list[int] | None = None  # None: every layer uses the window
    tie_word_embeddings: bool = False
    embedding_norm: bool = False  # LayerNorm/RMSNorm right after the embeddings (BERT)
    type_embedding: bool = False  # a constant learned vector added to every embedding (BERT type 0)
    dropout: float = 0.0
    # Token ids a tokenizer agrees on; generation uses eos as the default stop token.
    bos_token_id: int | None = None
    eos_token_id: list[int] = field(default_factory=list)
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.head_dim is None:
            if self.dim % self.n_heads:
                raise InvalidInput(f"dim {self.dim} is not a multiple of n_heads {self.n_heads}")
            self.head_dim = self.dim // self.n_heads
        if self.n_heads % self.n_kv_heads:
            raise InvalidInput(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        if isinstance(self.eos_token_id, int):
            self.eos_token_id = [self.eos_token_id]
        self.eos_token_id = list(self.eos_token_id or [])
        for name, value, allowed in (
            ("norm", self.norm, ("rms", "layer")),
            ("norm_placement", self.norm_placement, ("pre", "post")),
            ("mlp", self.mlp, ("swiglu", "gelu")),
            ("positions", self.positions, ("rope", "learned")),
            ("activation", self.activation, ("silu", "gelu", "gelu_tanh")),
        ):
            if value not in allowed:
                raise InvalidInput(f"{name}={value!r}: expected one of {allowed}")
        if self.rope_scaling is not None:
            kind = self.rope_scaling.get("rope_type", self.rope_scaling.get("type", "default"))
            if kind not in ROPE_TYPES:
                raise CheckpointError(f"RoPE scaling {kind!r} is not supported (supported: {ROPE_TYPES})")

    # Derived sizes -----------------------------------------------------------------------------

    @property
    def n_rep(self) -> int:
        """Query heads per key/value head (grouped-query attention)."""
        return self.n_heads // self.n_kv_heads  # type: ignore[operator]

    def window_for_layer(self, layer: int) -> int | None:
        if self.sliding_window is None:
            return None
        if self.sliding_window_layers is None or layer in self.sliding_window_layers:
            return self.sliding_window
        return None

    def num_params(self) -> int:
        """Parameter count (tied head counted once), without building the model."""
        d, hd, h, kv = self.dim, self.head_dim, self.n_heads, self.n_kv_heads
        q_out = h * hd + 2 * kv * hd  # type: ignore[operator]
        attn = d * q_out + (q_out if self.qkv_bias else 0) + h * hd * d + (d if self.out_bias else 0)  # type: ignore[operator]
        width = 2 * self.intermediate_size if self.mlp == "swiglu" else self.intermediate_size
        mlp = d * width + self.intermediate_size * d + ((width + d) if self.mlp_bias else 0)
        norm = d if self.norm == "rms" else 2 * d
        layer = attn + mlp + 2 * norm
        total = self.n_layers * layer + self.vocab_size * d
        total += norm if self.final_norm else 0
        total += norm if self.embedding_norm else 0
        total += d if self.type_embedding else 0
        total += self.max_seq_len * d if self.positions == "learned" else 0
        total += 0 if self.tie_word_embeddings else self.vocab_size * d
        return total

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecoderConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise CheckpointError(f"unknown DecoderConfig fields: {sorted(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> DecoderConfig:
        return dataclasses.replace(self, **changes)

    # Presets -----------------------------------------------------------------------------------

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> DecoderConfig:
        """A named shape: ``tiny`` (tests), ``attend-qa-small`` (~25M, the shipped QA model's size),
        ``llama-1b`` (Llama 3.2 1B shape, for reference)."""
        if name not in PRESETS:
            raise InvalidInput(f"unknown decoder preset {name!r}; known: {sorted(PRESETS)}")
        return dataclasses.replace(PRESETS[name], **overrides)

    # Hugging Face ------------------------------------------------------------------------------

    @classmethod
    def from_hf_config(cls, hf: dict[str, Any]) -> DecoderConfig:
        """Map a Hugging Face ``config.json`` of the Llama family (llama, mistral, qwen2)."""
        model_type = hf.get("model_type")
        if model_type not in HF_DECODER_TYPES:
            raise CheckpointError(
                f"model_type {model_type!r} is not a supported decoder (supported: {HF_DECODER_TYPES})"
            )
        n_heads = hf["num_attention_heads"]
        act = hf.get("hidden_act", "silu")
        if act not in ("silu", "swish"):
            raise CheckpointError(f"hidden_act {act!r} is not supported for {model_type}")
        if hf.get("pretraining_tp", 1) not in (1, None):
            raise CheckpointError("pretraining_tp > 1 checkpoints are not supported")
        rope = hf.get("rope_parameters") or {}
        legacy = hf.get("rope_scaling") or {}
        theta = float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))
        scaling = {k: v for k, v in {**legacy, **rope}.items() if k != "rope_theta"}
        if scaling.get("type") and not scaling.get("rope_type"):
            scaling["rope_type"] = scaling.pop("type")
        scaling.pop("type", None)
        if scaling.get("rope_type", "default") == "default":
            scaling = {}
        window, window_layers = None, None
        if model_type == "mistral":
            window = hf.get("sliding_window")
        elif model_type == "qwen2" and hf.get("use_sliding_window"):
            window = hf.get("sliding_window")
        layer_types = hf.get("layer_types")
        if window is not None:
            if layer_types:
                window_layers = [i for i, t in enumerate(layer_types) if t == "sliding_attention"]
            elif model_type == "qwen2":
                window_layers = list(range(hf.get("max_window_layers", 0), hf["num_hidden_layers"]))
        attention_bias = bool(hf.get("attention_bias", False))
        return cls(
            vocab_size=hf["vocab_size"],
            dim=hf["hidden_size"],
            n_layers=hf["num_hidden_layers"],
            n_heads=n_heads,
            n_kv_heads=hf.get("num_key_value_heads") or n_heads,
            head_dim=hf.get("head_dim") or hf["hidden_size"] // n_heads,
            intermediate_size=hf["intermediate_size"],
            max_seq_len=hf.get("max_position_embeddings", 2048),
            norm="rms",
            norm_eps=hf.get("rms_norm_eps", 1e-6),
            rope_theta=theta,
            rope_scaling=scaling or None,
            qkv_bias=True if model_type == "qwen2" else attention_bias,
            out_bias=False if model_type == "qwen2" else attention_bias,
            mlp_bias=bool(hf.get("mlp_bias", False)),
            sliding_window=window,
            sliding_window_layers=window_layers,
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=hf.get("eos_token_id") or [],
            pad_token_id=hf.get("pad_token_id"),
        )

    @classmethod
    def from_bert_config(cls, hf: dict[str, Any], *, max_seq_len: int | None = None) -> DecoderConfig:
        """The post-norm / GELU / learned-position recipe that hosts BERT weights (see
        :func:`generator.checkpoint.from_bert_checkpoint`)."""
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise CheckpointError("only absolute position embeddings can be warm-started")
        act = hf.get("hidden_act", "gelu")
        acts = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
        if act not in acts:
            raise CheckpointError(f"BERT hidden_act {act!r} is not supported")
        return cls(
            vocab_size=hf["vocab_size"],
            dim=hf["hidden_size"],
            n_layers=hf["num_hidden_layers"],
            n_heads=hf["num_attention_heads"],
            intermediate_size=hf["intermediate_size"],
            max_seq_len=max(max_seq_len or 0, hf.get("max_position_embeddings", 512)),
            norm="layer",
            norm_eps=hf.get("layer_norm_eps", 1e-12),
            norm_placement="post",
            final_norm=False,
            mlp="gelu",
            activation=acts[act],  # type: ignore[arg-type]
            positions="learned",
            qkv_bias=True,
            out_bias=True,
            mlp_bias=True,
            tie_word_embeddings=True,
            embedding_norm=True,
            type_embedding=True,
            pad_token_id=hf.get("pad_token_id", 0),
        )


def rope_inv_freq(config: DecoderConfig, device: Any = None) -> Any:
    """Inverse frequencies of RoPE, a float32 tensor (head_dim // 2,), with the configured scaling,
    computed as Hugging Face does (``modeling_rope_utils``) so cos/sin tables match bit for bit."""
    import torch

    dim = config.head_dim
    exponent = torch.arange(0, dim, 2, dtype=torch.int64, device=device).float() / dim  # type: ignore[arg-type]
    inv = 1.0 / (config.rope_theta**exponent)
    sc = config.rope_scaling or {}
    kind = sc.get("rope_type", sc.get("type", "default"))
    if kind == "linear":
        inv = inv / sc["factor"]
    elif kind == "llama3":
        factor, low, high = sc["factor"], sc["low_freq_factor"], sc["high_freq_factor"]
        old_len = sc["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old_len / low, old_len / high
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
        inv = torch.where(medium, smoothed, scaled)
    return inv


PRESETS: dict[str, DecoderConfig] = {
    # Seconds-fast unit tests.
    "tiny": DecoderConfig(
        vocab_size=128, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, intermediate_size=128, max_seq_len=256
    ),
    # About the shipped QA model's size: ~25M parameters with a 32k vocabulary and a tied head.
    "attend-qa-small": DecoderConfig(
        vocab_size=32000, dim=384, n_layers=6, n_heads=6, n_kv_heads=2, intermediate_size=1536,
        max_seq_len=4096, rope_theta=10000.0, tie_word_embeddings=True,
    ),
    # Llama 3.2 1B shape (reference for sizing and memory; weights are never shipped).
    "llama-1b": DecoderConfig(
        vocab_size=128256, dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, intermediate_size=8192,
        max_seq_len=131072, norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=True,
        rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    ),
}
