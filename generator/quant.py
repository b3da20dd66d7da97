"""Weight-only int8 quantization of the decoder's linear layers, for CPU inference (as gpt-fast).

Every ``nn.Linear`` of the blocks (fused q/k/v, attention output, fused gate/up, down) and, by
default, the output head becomes a :class:`WeightOnlyInt8Linear`: an int8 weight ``(N, K)`` and one
float32 scale per output channel, ``w ~= q * s`` with ``s = max|w[n, :]| / 127`` (symmetric, zero
point 0). Activations stay in floating point; only the weights shrink (4x less memory to stream per
decode step than float32). A head tied to the embeddings (SmolLM2, Llama 3.2) gets its own int8 copy;
the float embedding table stays as it was for lookups, so embeddings are exact.

Error bound. Rounding moves each weight by at most ``s_n / 2 = max|w[n, :]| / 254``, so an output
channel moves by at most ``|x|_1 * s_n / 2``. Rounding errors are uniform and independent, so the
typical error is ``|x|_2 * s_n / sqrt(12)``: for a row whose largest weight is ``c`` standard
deviations out (``c ~ 4`` for ``K ~ 500`` Gaussian weights) the relative error of a matmul output is
about ``c / (127 * sqrt(12)) ~ 0.9%``. Through a whole model the errors of the layers add up: on
seeded unit-scale decoders the logits move by 1-2% (relative L2) and argmax agrees at 96-99% of
positions (tests/generator/test_quant.py); on SmolLM2-135M-Instruct, teacher-forced along the float
model's greedy answers to 8 chat prompts (``attend bench generate --quant int8``), by 4.4%
(largest logit change 2.0), with 95-96% argmax agreement. The down projections (``w_out``, whose
inputs have outlier channels) contribute most: left in float32 they would bring it to 2.9% / 98%.

Kernels compute ``x @ (q * s).T`` three ways (``KERNELS``):

* ``fallback``: ``F.linear(x, q.to(x.dtype)) * s``: any device and dtype; the formula of record.
* ``fused``: ``torch.ops.aten._weight_int8pack_mm(x, q, s)``: dequantizes inside the matmul
  (float32/bfloat16 ``x`` (M, K), contiguous int8 ``q`` (N, K), ``s`` (N,) in ``x``'s dtype). Same
  arithmetic as ``fallback`` up to summation order.
* ``fused_bf16``: the fused kernel on ``x`` rounded to bfloat16 (the output is rounded to bfloat16,
  then scaled in float32). On CPUs without AVX-512 the float32 fused kernel is a slow scalar loop
  while the bfloat16 one is vectorized. Adds a relative error of at most ``2**-8`` per input element
  and per output (measured ~0.3%), below the int8 rounding above.

The fused kernels run only on a few rows at a time (decode steps, ``M <= FUSED_MAX_ROWS``); longer
inputs (prefill) use ``fallback``, which converts the weight once and runs a float GEMM. ``"auto"``
times one decode step's worth of matmuls of the model itself with each kernel and keeps the fastest
(:func:`select_kernel`); which wins depends on the CPU and the thread count.

The slow twin is :func:`dequantize_reference`: a float decoder holding ``q * s`` as plain weights.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.errors import InvalidInput
from generator.model import Decoder

log = logging.getLogger(__name__)

Kernel = Literal["fallback", "fused", "fused_bf16"]
KERNELS: tuple[str, ...] = ("fallback", "fused", "fused_bf16")
FUSED_MAX_ROWS = 8  # above this many rows the fallback's float GEMM beats the fused GEMV kernels
QMAX = 127


# Weights ---------------------------------------------------------------------------------------


def quantize_weight(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Per-output-channel symmetric int8: ``weight`` (N, K) -> ``q`` int8 (N, K), ``scales`` float32
    (N,), with ``weight ~= q * scales[:, None]`` and ``|weight - q * s| <= s / 2`` elementwise."""
    w = weight.detach().float()
    scales = (w.abs().amax(dim=1) / QMAX).clamp_min(torch.finfo(torch.float32).tiny)  # (N,)
    q = torch.round(w / scales[:, None]).clamp_(-QMAX, QMAX).to(torch.int8).contiguous()  # (N, K)
    return q, scales


def dequantize_weight(q: Tensor, scales: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """``q`` (N, K) int8, ``scales`` (N,) -> the float weight ``q * scales`` (N, K)."""
    return (q.float() * scales.float()[:, None]).to(dtype)


def fused_available() -> bool:
    """Whether this torch build has the fused int8 weight-only matmul."""
    return hasattr(torch.ops.aten, "_weight_int8pack_mm")


# The module ------------------------------------------------------------------------------------


class WeightOnlyInt8Linear(nn.Module):
    """``nn.Linear`` with an int8 weight ``(out, in)`` and per-output-channel float32 ``scales``.

    Buffers, not parameters: the module is for inference. ``kernel`` picks the decode-step matmul
    (see the module docstring); inputs of more than ``FUSED_MAX_ROWS`` rows use ``fallback``.
    """

    weight: Tensor
    scales: Tensor
    bias: Tensor | None

    def __init__(self, in_features: int, out_features: int, *, bias: bool = False,
                 kernel: Kernel = "fallback", device: torch.device | str | None = None) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("scales", torch.ones(out_features, dtype=torch.float32, device=device))
        self.register_buffer("bias", torch.zeros(out_features, device=device) if bias else None)
        self.kernel: Kernel = kernel
        self._scales_bf16: Tensor | None = None
        self._ones_bf16: Tensor | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, kernel: Kernel = "fallback") -> WeightOnlyInt8Linear:
        """Quantize ``linear``'s weight into a new module; ``linear`` is left as it was."""
        w = linear.weight
        out = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, kernel=kernel, device=w.device)
        q, scales = quantize_weight(w)
        out.weight.copy_(q)
        out.scales.copy_(scales)
        if linear.bias is not None:
            out.bias = linear.bias.detach().clone()
        return out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, kernel={self.kernel}"

    def dequantized(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """The float weight ``q * scales`` (out, in)."""
        return dequantize_weight(self.weight, self.scales, dtype)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        x2d = x.reshape(-1, self.in_features)  # (M, K)
        if self.kernel == "fallback" or x2d.shape[0] > FUSED_MAX_ROWS:
            y = self._fallback(x2d)
        elif self.kernel == "fused":
            y = self._fused(x2d)
        elif self.kernel == "fused_bf16":
            y = self._fused_bf16(x2d)
        else:
            raise InvalidInput(f"int8 kernel {self.kernel!r}: expected one of {KERNELS}")
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.view(*shape[:-1], self.out_features)  # (..., N)

    def _fallback(self, x2d: Tensor) -> Tensor:
        return F.linear(x2d, self.weight.to(x2d.dtype)) * self.scales.to(x2d.dtype)  # (M, N)

    def _fused(self, x2d: Tensor) -> Tensor:
        if x2d.dtype == torch.float32:
            return torch.ops.aten._weight_int8pack_mm(x2d.contiguous(), self.weight, self.scales)  # (M, N)
        if x2d.dtype == torch.bfloat16:
            if self._scales_bf16 is None or self._scales_bf16.device != self.scales.device:
                self._scales_bf16 = self.scales.to(torch.bfloat16)
            return torch.ops.aten._weight_int8pack_mm(x2d.contiguous(), self.weight, self._scales_bf16)
        return self._fallback(x2d)  # the kernel takes float32 or bfloat16 only

    def _fused_bf16(self, x2d: Tensor) -> Tensor:
        if self._ones_bf16 is None or self._ones_bf16.device != self.weight.device:
            self._ones_bf16 = torch.ones(self.out_features, dtype=torch.bfloat16, device=self.weight.device)
        y = torch.ops.aten._weight_int8pack_mm(x2d.to(torch.bfloat16).contiguous(), self.weight, self._ones_bf16)
        return torch.mul(y, self.scales).to(x2d.dtype)  # (M, N): bfloat16 * float32 -> float32


# The model -------------------------------------------------------------------------------------


def _targets(decoder: Decoder, include_head: bool) -> list[tuple[nn.Module, str, nn.Linear]]:
    """(parent, attribute, linear) of every linear layer to quantize."""
    found = []
    for layer in decoder.layers:
        for parent, names in ((layer.attention, ("wqkv", "wo")), (layer.feed_forward, ("w_in", "w_out"))):
            for name in names:
                found.append((parent, name, getattr(parent, name)))
    if include_head:
        found.append((decoder, "output", decoder.output))
    return [(p, n, m) for p, n, m in found if isinstance(m, nn.Linear)]


@torch.no_grad()
def quantize_int8(decoder: Decoder, *, include_head: bool = True, kernel: Kernel | Literal["auto"] = "auto") -> Decoder:
    """Replace the decoder's linear layers by :class:`WeightOnlyInt8Linear`, in place; returns it.

    ``include_head``: quantize the output head too (a tied head gets its own int8 copy; the
    embedding table stays float). ``kernel``: one of ``KERNELS`` for every layer, or ``"auto"`` to
    time them on this model (:func:`select_kernel`). Quantizing twice is a no-op for layers already
    quantized.
    """
    if kernel != "auto" and kernel not in KERNELS:
        raise InvalidInput(f"int8 kernel {kernel!r}: expected 'auto' or one of {KERNELS}")
    if kernel in ("fused", "fused_bf16") and not fused_available():
        raise InvalidInput(f"int8 kernel {kernel!r} needs torch.ops.aten._weight_int8pack_mm, missing from torch {torch.__version__}")
    decoder.transpose_head(False)  # the float (dim, vocab) copy would outlive the float head
    for parent, name, linear in _targets(decoder, include_head):
        setattr(parent, name, WeightOnlyInt8Linear.from_linear(linear))
    if kernel == "auto":
        kernel = select_kernel(decoder)
    set_kernel(decoder, kernel)
    return decoder


def is_quantized(decoder: nn.Module) -> bool:
    """Whether any layer of ``decoder`` holds int8 weights."""
    return any(isinstance(m, WeightOnlyInt8Linear) for m in decoder.modules())


def int8_layers(decoder: nn.Module) -> list[WeightOnlyInt8Linear]:
    return [m for m in decoder.modules() if isinstance(m, WeightOnlyInt8Linear)]


def set_kernel(decoder: nn.Module, kernel: Kernel) -> None:
    """Use ``kernel`` in every int8 layer of ``decoder``."""
    if kernel not in KERNELS:
        raise InvalidInput(f"int8 kernel {kernel!r}: expected one of {KERNELS}")
    for m in int8_layers(decoder):
        m.kernel = kernel


def available_kernels(decoder: nn.Module) -> list[Kernel]:
    """Kernels that can run this model's decode steps (the fused ones need float32/bfloat16)."""
    layers = int8_layers(decoder)
    if not layers:
        return ["fallback"]
    dtype = decoder.dtype if isinstance(decoder, Decoder) else torch.float32
    out: list[Kernel] = ["fallback"]
    if fused_available() and dtype in (torch.float32, torch.bfloat16):
        out += ["fused", "fused_bf16"]
    return out


@torch.inference_mode()
def time_kernel(decoder: nn.Module, kernel: Kernel, *, reps: int = 3) -> float:
    """Seconds per pass of one-row matmuls through every int8 layer of ``decoder`` with ``kernel``
    (best of ``reps`` passes after a warm-up pass): one decode step's weight traffic."""
    layers = int8_layers(decoder)
    dtype = decoder.dtype if isinstance(decoder, Decoder) else torch.float32
    xs = {m.in_features: torch.randn(1, m.in_features, dtype=dtype, device=m.weight.device) for m in layers}
    before = [m.kernel for m in layers]
    best = float("inf")
    try:
        for m in layers:
            m.kernel = kernel
        for rep in range(reps + 1):
            start = time.perf_counter()
            for m in layers:
                m(xs[m.in_features])
            if layers and layers[0].weight.is_cuda:
                torch.cuda.synchronize()
            if rep:
                best = min(best, time.perf_counter() - start)
    finally:
        for m, k in zip(layers, before, strict=True):
            m.kernel = k
    return best


def select_kernel(decoder: nn.Module) -> Kernel:
    """The fastest of :func:`available_kernels` for this model's decode steps, by timing them."""
    candidates = available_kernels(decoder)
    if len(candidates) == 1:
        return candidates[0]
    timings = {k: time_kernel(decoder, k) for k in candidates}
    choice = min(timings, key=timings.__getitem__)
    log.info("int8 kernel %s (one decode step of matmuls: %s)", choice,
             ", ".join(f"{k} {t * 1e3:.2f} ms" for k, t in timings.items()))
    return choice  # type: ignore[return-value]


# The slow twin ---------------------------------------------------------------------------------


@torch.no_grad()
def dequantize_reference(decoder: Decoder, dtype: torch.dtype | None = None) -> Decoder:
    """A float copy of a quantized ``decoder`` whose linear layers are plain ``nn.Linear`` holding
    ``q * scales``: the slow twin of the int8 kernels, and what ``to_hf_llama`` exports for a
    reference implementation. A quantized tied head becomes an untied float head (the embedding
    table keeps its float values). ``decoder`` is left as it was."""
    dtype = dtype or decoder.dtype
    twin = copy.deepcopy(decoder)
    twin.clear_caches()
    for parent, name, module in _quantized_children(twin):
        linear = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None,
                           device=module.weight.device, dtype=dtype)
        linear.weight.copy_(module.dequantized(dtype))
        if module.bias is not None:
            linear.bias.copy_(module.bias)
        setattr(parent, name, linear)
    if isinstance(decoder.output, WeightOnlyInt8Linear) and twin.config.tie_word_embeddings:
        twin.config = twin.config.replace(tie_word_embeddings=False)
    return twin.to(dtype).eval()


def _quantized_children(model: nn.Module) -> list[tuple[nn.Module, str, WeightOnlyInt8Linear]]:
    return [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
            if isinstance(child, WeightOnlyInt8Linear)]
