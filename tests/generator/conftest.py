"""Fixtures of the generator tests: tiny seeded decoders with weights large enough that greedy
decoding does not hinge on near-ties."""

from __future__ import annotations

import os

import pytest
import torch
from toydata import randomize, tiny_decoder

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


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
