"""The engine: the one door from the front ends (CLI, API, benchmarks) into the core packages."""

from __future__ import annotations

from engine.engine import DocumentOutcome, Engine, IngestReport

__all__ = ["DocumentOutcome", "Engine", "IngestReport"]
