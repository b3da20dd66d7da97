from __future__ import annotations

import pytest
import torch

from common.errors import InvalidInput
from retriever import embedder
from retriever.embedder import SentenceEncoder, resolve_precision


def test_auto_follows_native_bf16(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(embedder, "fast_bf16", lambda device: True)
    assert resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(embedder, "fast_bf16", lambda device: False)
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("int8", cpu) == "int8"


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path):
    """bf16 autocast pays only on CPUs with AVX-512 BF16 or AMX (the QA trainer warns elsewhere)."""
    cpu, info = torch.device("cpu"), tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma f16c\n")
    assert embedder.fast_bf16(cpu, str(info)) is False
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert embedder.fast_bf16(cpu, str(info)) is True
    info.write_text("processor\t: 0\nflags\t\t: fpu amx_bf16 amx_tile\n")
    assert embedder.fast_bf16(cpu, str(info)) is True
    assert embedder.fast_bf16(cpu, str(tmp_path / "missing")) is False
    assert embedder.fast_bf16(torch.device("meta")) is False


def test_unknown_precision_is_a_clear_error(minilm_dir):
    with pytest.raises(InvalidInput, match="precision"):
        SentenceEncoder.from_pretrained(minilm_dir, device="cpu", precision="fp8")
