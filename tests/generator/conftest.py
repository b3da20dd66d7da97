"""Fixtures of the generator tests: tiny seeded decoders with weights large enough that greedy
decoding does not hinge on near-ties."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from generator.config import DecoderConfig
from generator.model import Decoder

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def randomize(module: nn.Module, seed: int = 0, scale: float = 0.3) -> nn.Module:
    """Overwrite every parameter with seeded noise (norm weights around 1), in place."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(scale * noise)
    return module


def tiny_decoder(seed: int = 0, **overrides) -> Decoder:
    """A seeded ``tiny`` preset decoder in eval mode (hidden 64, 2 layers, 4 heads, 2 kv heads)."""
    torch.manual_seed(seed)
    model = Decoder(DecoderConfig.preset("tiny", **overrides))
    return randomize(model, seed).eval()  # type: ignore[return-value]


@pytest.fixture
def make_tiny():
    """The ``tiny_decoder(seed=0, **config_overrides)`` factory."""
    return tiny_decoder


@pytest.fixture
def randomize_params():
    """The ``randomize(module, seed=0, scale=0.3)`` helper."""
    return randomize


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core machine OpenMP spin-waiting
    under contention makes them 10-100x slower; the setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
