"""The ground floor: what every package shares (errors, paths, atomic writes, settings, the LR
schedule). It imports nothing of ours."""

from __future__ import annotations

__version__ = "0.1.0"
