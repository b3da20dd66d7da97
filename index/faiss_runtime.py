"""FAISS at run time: importing it (a clear error when it is missing) and choosing the device a
dense index searches on."""

from __future__ import annotations

from typing import Any

from common.errors import MissingDependency

DEVICES = ("auto", "cpu", "cuda")


def load_faiss() -> Any:
    """The ``faiss`` module; ``MissingDependency`` if it is not installed."""
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - part of the default install
        raise MissingDependency("faiss-cpu", feature="dense vector search") from exc
    return faiss


def gpu_available() -> bool:
    """Whether the installed faiss has GPU support and sees at least one GPU."""
    faiss = load_faiss()
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def resolve_device(device: str) -> str:
    """``"cpu"`` or ``"cuda"`` for a requested ``device``: ``"auto"`` takes the GPU when there is
    one; ``"cuda"`` without one raises ``MissingDependency``."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; choose from {DEVICES}")
    if device == "cpu":
        return "cpu"
    if gpu_available():
        return "cuda"
    if device == "cuda":
        raise MissingDependency("faiss-gpu-cu12", extra="gpu", feature="GPU vector search")
    return "cpu"
