"""Argument types shared by the command modules."""

from __future__ import annotations

import argparse


def positive_int_list(text: str) -> list[int]:
    """``"128,256,512"`` -> ``[128, 256, 512]``; an argparse error for anything else."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values
