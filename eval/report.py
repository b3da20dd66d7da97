"""Small helpers benchmarks share to report figures: tables of rows and atomic file writes.

A *row* is a mapping of column name to value. Floats are formatted with ``floatfmt``; ``None``
and missing cells print empty; numbers are right-aligned, everything else left-aligned.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from common.atomic import atomic_write_text

__all__ = ["atomic_write_text", "console_table", "markdown_table", "write_json"]


def _columns(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None) -> list[str]:
    if columns is not None:
        return list(columns)
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    return list(seen)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Number) and not isinstance(value, bool)


def _cell(value: Any, floatfmt: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        value = float(value)
        return str(value) if math.isnan(value) or math.isinf(value) else format(value, floatfmt)
    return str(value)


def _grid(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None, floatfmt: str
) -> tuple[list[str], list[list[str]], list[bool]]:
    """Column names, formatted cells, and whether each column is numeric (right-aligned)."""
    cols = _columns(rows, columns)
    cells = [[_cell(row.get(c), floatfmt) for c in cols] for row in rows]
    numeric = [
        any(_is_number(row.get(c)) for row in rows)
        and all(row.get(c) is None or _is_number(row.get(c)) for row in rows)
        for c in cols
    ]
    return cols, cells, numeric


def markdown_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, floatfmt: str = ".3f"
) -> str:
    """A GitHub-flavoured markdown table of ``rows`` (columns: given, or keys in first-seen order).

    >>> print(markdown_table([{"model": "bm25", "ndcg@10": 0.6647}]))
    | model | ndcg@10 |
    | --- | ---: |
    | bm25 | 0.665 |
    """
    cols, cells, numeric = _grid(rows, columns, floatfmt)
    if not cols:
        return ""

    def line(values: Sequence[str]) -> str:
        escaped = [v.replace("|", "\\|").replace("\n", " ") for v in values]
        return "| " + " | ".join(escaped) + " |"

    rule = "| " + " | ".join("---:" if num else "---" for num in numeric) + " |"
    return "\n".join([line(cols), rule, *(line(r) for r in cells)])


def console_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, floatfmt: str = ".3f"
) -> str:
    """A plain-text table with padded columns, a dashed rule under the header, no trailing spaces.

    >>> print(console_table([{"model": "bm25", "ndcg@10": 0.6647}, {"model": "dense", "ndcg@10": 0.7}]))
    model  ndcg@10
    -----  -------
    bm25     0.665
    dense    0.700
    """
    cols, cells, numeric = _grid(rows, columns, floatfmt)
    if not cols:
        return ""
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(cols)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cols), rule, *(line(r) for r in cells)])


def _json_default(obj: Any) -> Any:
    """Serialise what benchmarks commonly hold: numpy scalars/arrays, paths, dataclasses, sets."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return obj.tolist()
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def write_json(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``obj`` as indented JSON (indent=2, UTF-8, trailing newline) atomically, creating
    parent folders. Numpy values, paths and dataclasses are converted. Returns the path."""
    text = json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default)
    return atomic_write_text(path, text + "\n")
