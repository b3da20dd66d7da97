"""Argument types shared by the command modules."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """``"4"`` -> ``4``; an argparse error for anything that is not an integer of at least 1."""
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _int_list(text: str, minimum: int) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
    if not values or min(values) < minimum:
        raise argparse.ArgumentTypeError(f"expected integers of at least {minimum}, got {text!r}")
    return values


def positive_int_list(text: str) -> list[int]:
    """``"128,256,512"`` -> ``[128, 256, 512]``; an argparse error for anything else."""
    return _int_list(text, 1)


def count_list(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``: counts that may be 0; an argparse error for anything else."""
    return _int_list(text, 0)


def add_generator_args(p: argparse.ArgumentParser) -> None:
    """``--generator`` and ``--abstain-unsupported`` of the commands that answer."""
    p.add_argument(
        "--generator", default=None, metavar="NAME",
        help="extractive (attend-qa), generative (smollm2), or a model: attend-qa, smollm2, a .gguf file, "
        "a Llama-family or attend-qa directory (default: the collection's setting, else ATTEND_GENERATOR)",
    )
    p.add_argument("--abstain-unsupported", action="store_true",
                   help="generative answers: abstain when the verifier supports no sentence")


def generator_settings(settings, name: str | None):
    """``settings`` with ``name`` as the engine's generator when it names a model rather than a kind
    (``extractive``/``generative``), so a local user may point at any file or directory."""
    if name is None or name in ("extractive", "generative"):
        return settings
    return settings.model_copy(update={"generator": name})
