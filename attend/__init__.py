"""Attend: retrieval-augmented generation on our own transformer models. This package is the
command line (``attend ...``); the engine it drives lives in ``engine/``."""

from __future__ import annotations

from common import __version__

__all__ = ["__version__"]
