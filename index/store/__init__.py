"""The document store (see :class:`~index.store.store.Store`)."""

from __future__ import annotations

from index.store.store import Store

__all__ = ["Store"]
