from __future__ import annotations

import pytest
import torch

from attend.errors import InvalidInput
from retriever import embedder
from retriever.embedder import SentenceEncoder, resolve_precision


def test_auto_follows_native_bf16(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(embedder, "fast_bf16", lambda device: True)
    assert resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(embedder, "fast_bf16", lambda device: False)
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("int8", cpu) == "int8"


def test_unknown_precision_is_a_clear_error(minilm_dir):
    with pytest.raises(InvalidInput, match="precision"):
        SentenceEncoder.from_pretrained(minilm_dir, device="cpu", precision="fp8")
