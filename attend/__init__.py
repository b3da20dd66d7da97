"""Attend: retrieval-augmented generation on our own transformer models."""

from __future__ import annotations

__version__ = "0.1.0"
