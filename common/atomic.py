"""Crash-safe file writes shared by the indexes and the benchmarks: write a temporary sibling,
fsync it, rename it over the target, fsync the folder. Readers see the old file or the new one,
never a torn one."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_replace(path: str | os.PathLike[str], produce: Callable[[Path], object]) -> Path:
    """Create ``path`` atomically: ``produce(tmp)`` writes a temporary sibling file (by name, for
    writers such as ``faiss.write_index`` that take a path), which is fsynced and renamed over
    ``path``. Parent folders are created; the temporary file never outlives a failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        produce(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return path


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> Path:
    """Create ``path`` atomically through ``write(binary file object)``."""

    def produce(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            write(f)

    return atomic_replace(path, produce)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Create ``path`` atomically with ``text`` (UTF-8, ``\\n`` line ends)."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))
